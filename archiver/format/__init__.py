"""What both sides agree on: the data dir and store layouts, the canonical record, the segment
format, the manifest schema and its published form. Imports nothing else of archiver's but common."""
