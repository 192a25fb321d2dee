"""Moving sealed segments to the store: upload, publish, verify, prune, and their schedule."""
