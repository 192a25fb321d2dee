"""Where things live in the store: segment paths by stream and day, and the published
manifests' directory. Both the uploader and the readers go by these."""

from __future__ import annotations

from archiver.format.layout import COMPRESSION_SUFFIX
from archiver.format.manifest import SegmentRow

MANIFEST_DIR = "/_manifest"


def published_path(sink_id: str) -> str:
    """``/_manifest/<sink-id>.json``: one sink's published manifest in format 1."""
    return f"{MANIFEST_DIR}/{sink_id}.json"


def published_dir(sink_id: str) -> str:
    """``/_manifest/<sink-id>``: one sink's published manifest in format 2, a directory."""
    return f"{MANIFEST_DIR}/{sink_id}"


def store_path(segment: SegmentRow) -> str:
    """``/<stream>/<YYYY>/<MM>/<DD>/<segment-id>.jsonl.gz``, the day taken from the segment id."""
    day = segment.id[:8]
    return f"/{segment.stream}/{day[:4]}/{day[4:6]}/{day[6:8]}/{segment.id}{COMPRESSION_SUFFIX[segment.compression]}"


def levels_of(path: str) -> list[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b``, ``/a/b/c``: each directory on the way, from the root."""
    parts = [part for part in path.split("/") if part]
    return ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]
