"""The classic one-line view of a canonical record, shared by `archiver cat` and any page that shows records."""

from __future__ import annotations

from typing import Any


def classic_line(record: dict[str, Any]) -> str:
    """``2014-10-19 16:16:00 <logger right-aligned to 40> <LEVEL> <message>``, then exc_text."""
    ts = record["ts"]
    logger = record.get("logger") or "-"
    level = record.get("level") or "-"
    line = f"{ts[:10]} {ts[11:19]} {logger:>40} {level} {record.get('message') or ''}\n"
    exc_text = (record.get("fields") or {}).get("exc_text")
    if isinstance(exc_text, str) and exc_text:
        line += exc_text.rstrip("\n") + "\n"
    return line
