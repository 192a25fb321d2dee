"""The middle of the write path: segments appended with group-commit fsync, rotated, sealed."""
