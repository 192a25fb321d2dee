"""Where things live in the store: segment paths by stream, day and hour, the periods their
directories stand for, and the published manifests' directory. Both the uploader and the
readers go by these.

Segments go in hour directories, ``/<stream>/<YYYY>/<MM>/<DD>/<HH>/``: Tahoe rewrites a
mutable directory whole on every change, so none may grow large, and an hour closes soon
enough to be frozen. Archives written before hour directories keep their segments in the day
directory; readers go by each segment's recorded store path, so they read both."""

from __future__ import annotations

import calendar
import re

from archiver.format.layout import COMPRESSION_SUFFIX, INDEX_SUFFIX, SEGMENT_ID
from archiver.format.manifest import SegmentRow

MANIFEST_DIR = "/_manifest"
DIR_ENTRIES_MAX = 1000  # what a mutable directory is kept under (Tahoe SDMF: ~1 MB, ~3,000 entries)
# /<stream>/YYYY/MM/DD[/HH]: a period's directory (streams, _rejected included: docs/format.md).
_PERIOD_DIR = re.compile(r"/(?!_manifest/)[A-Za-z0-9._-]{1,64}/(\d{4})/(\d{2})/(\d{2})(?:/(\d{2}))?")


def published_path(sink_id: str) -> str:
    """``/_manifest/<sink-id>.json``: one sink's published manifest in format 1."""
    return f"{MANIFEST_DIR}/{sink_id}.json"


def published_dir(sink_id: str) -> str:
    """``/_manifest/<sink-id>``: one sink's published manifest in format 2, a directory."""
    return f"{MANIFEST_DIR}/{sink_id}"


def segment_dir(stream: str, segment_id: str) -> str:
    """``/<stream>/<YYYY>/<MM>/<DD>/<HH>``: the hour the segment was opened, from its id."""
    start = segment_id[:11]  # YYYYmmddTHH
    return f"/{stream}/{start[:4]}/{start[4:6]}/{start[6:8]}/{start[9:11]}"


def store_path(segment: SegmentRow) -> str:
    """``/<stream>/<YYYY>/<MM>/<DD>/<HH>/<segment-id>.jsonl.gz``, the hour taken from the segment id."""
    return f"{segment_dir(segment.stream, segment.id)}/{segment.id}{COMPRESSION_SUFFIX[segment.compression]}"


def index_path(segment: SegmentRow) -> str | None:
    """``/_manifest/<sink-id>/index/<stream>/<YYYY>/<MM>/<DD>/<HH>/<segment-id>.idx``: a
    segment's search index, beside its sink's published manifest and found from the segment
    id alone (None for an id that names no sink)."""
    match = SEGMENT_ID.fullmatch(segment.id)
    if match is None:
        return None
    return f"{published_dir(match.group(2))}/index{segment_dir(segment.stream, segment.id)}/{segment.id}{INDEX_SUFFIX}"


def period_of(path: str) -> tuple[float, float] | None:
    """The UTC epoch seconds [start, end) that a segment directory holds: an hour directory
    its hour, a day directory (the layout before hour directories) its day; None for any
    other path."""
    match = _PERIOD_DIR.fullmatch(path)
    if match is None:
        return None
    year, month, day, hour = (int(part) if part else None for part in match.groups())
    assert year is not None and month is not None and day is not None
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]) or (hour or 0) > 23:
        return None
    start = float(calendar.timegm((year, month, day, hour or 0, 0, 0)))
    return start, start + (86400.0 if hour is None else 3600.0)


def levels_of(path: str) -> list[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b``, ``/a/b/c``: each directory on the way, from the root."""
    parts = [part for part in path.split("/") if part]
    return ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]
