"""Decoding what clients send into canonical records. Pure functions: no I/O, no clock."""
