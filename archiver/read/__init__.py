"""The read side: listing, filtering and streaming records, verify, restore, manifest rebuild."""
