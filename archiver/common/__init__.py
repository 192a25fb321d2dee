"""Small helpers every layer may use: units and times, backoff, failpoints, redaction of secrets."""
