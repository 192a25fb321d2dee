"""What the overview pages show, computed from manifest rows alone (no segment is read): each
stream's span and volume per hour, a stream's days and segments. Pure: no I/O."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from archiver.format.manifest import SegmentRow


@dataclass
class StreamSummary:
    """One stream: its time span, totals, and records per hour (``YYYY-MM-DDTHH`` -> count)."""

    name: str
    first_ts: str | None = None
    last_ts: str | None = None
    segments: int = 0
    records: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    hourly: dict[str, int] = field(default_factory=dict)


@dataclass
class Day:
    """One UTC day of a stream's segments, oldest first."""

    date: str
    records: int
    stored_bytes: int
    segments: list[SegmentRow]


def summarize(rows: list[SegmentRow]) -> list[StreamSummary]:
    """A summary per stream, by name. A segment's records all count in the hour of its first
    record (the manifest has no finer tally): a sink rotates segments at least hourly, so for
    records logged as they happen a bar is off by at most a segment's worth at its edges."""
    streams: dict[str, StreamSummary] = {}
    hourly: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        summary = streams.setdefault(row.stream, StreamSummary(row.stream))
        summary.segments += 1
        summary.records += row.records
        summary.raw_bytes += row.raw_bytes
        summary.stored_bytes += row.stored_bytes
        if row.first_ts:
            summary.first_ts = min(summary.first_ts or row.first_ts, row.first_ts)
            hourly[row.stream][row.first_ts[:13]] += row.records
        if row.last_ts:
            summary.last_ts = max(summary.last_ts or row.last_ts, row.last_ts)
    for name, hours in hourly.items():
        streams[name].hourly = dict(sorted(hours.items()))
    return [streams[name] for name in sorted(streams)]


def days(rows: list[SegmentRow]) -> list[Day]:
    """``rows`` grouped by the UTC day of their first record, oldest first."""
    grouped: dict[str, list[SegmentRow]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.first_ts or "", r.id)):
        grouped[(row.first_ts or "unknown")[:10]].append(row)
    return [Day(date, sum(r.records for r in group), sum(r.stored_bytes for r in group), group)
            for date, group in grouped.items()]


def age_text(seconds: float) -> str:
    """An age for a table cell, in its largest whole unit: ``3 d``, ``5 h``, ``12 min``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
