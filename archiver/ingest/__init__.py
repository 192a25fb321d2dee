"""Sources: how records reach the sink (HTTP now; TCP JSON lines in #6)."""
