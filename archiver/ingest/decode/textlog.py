"""Plain text logs: a record per line, the time taken from the line's start where it has one,
and continuation lines (a traceback's, an indented line) joined to the record they belong to.
Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from archiver.ingest.decode.times import parse_iso, syslog_date

# 2026-12-02 05:26:18,123 (Python logging's default), ISO-8601 with T, zone or not; or a
# syslog date. An optional level word follows, bare or in brackets.
_LEADING_TIME = re.compile(
    r"(?:\[)?(?:(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d))\]?"
    r"(?:[ \t]+\[?(DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|ERR|CRITICAL|FATAL|TRACE)\]?(?=[\s:]|$))?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class TextRecord:
    """One record of a text log: its lines joined with newlines, and what its first line said."""

    ts: str | None
    level: str | None
    message: str
    lines: int


def leading_time(line: str, reference: float) -> tuple[str, str | None] | None:
    """The canonical time and level word a line starts with, or None."""
    match = _LEADING_TIME.match(line)
    if match is None:
        return None
    iso, bsd, level = match.groups()
    ts = parse_iso(iso.replace(",", ".")) if iso is not None else syslog_date(bsd, reference)
    return None if ts is None else (ts, level)


def join_text(lines: list[str], reference: float, final: bool) -> tuple[list[TextRecord], int]:
    """Records from whole lines, and how many lines they used. A line that starts with no time
    continues the record before it when that one started with a time, or when it is indented;
    otherwise it is a record of its own. Unless ``final``, the last record is held back (its
    continuation may be in the lines not read yet): the count says where to start next."""
    records: list[TextRecord] = []
    start = 0
    head: tuple[str, str | None] | None = None
    for n, line in enumerate(lines):
        found = leading_time(line, reference) if line[:1].isalnum() or line[:1] == "[" else None
        if n > start and found is None and (head is not None or line[:1] in (" ", "\t")):
            continue
        if n > start:
            records.append(_record(lines, start, n, head))
        start, head = n, found
    if lines and final:
        records.append(_record(lines, start, len(lines), head))
        start = len(lines)
    return records, start


def _record(lines: list[str], start: int, end: int, head: tuple[str, str | None] | None) -> TextRecord:
    message = lines[start] if end == start + 1 else "\n".join(lines[start:end])
    if head is None:
        return TextRecord(None, None, message, end - start)
    return TextRecord(head[0], head[1].upper() if head[1] else None, message, end - start)
