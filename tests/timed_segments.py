"""Sealed segments opened at chosen times: what a sink that ran hours ago, or a late one, left
in its spool and manifest (the segment writer names segments by the current time)."""

from __future__ import annotations

import gzip
import hashlib
from contextlib import closing
from pathlib import Path

from archiver.format.layout import DataDir, segment_id
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.record import Context, encode_record
from archiver.format.segment import SegmentTally
from archiver.ingest.decode.jsonbody import json_record


def sealed_segment(data_dir: Path, stream: str, start: float, seq: int, sink_id: str = "sinkA") -> SegmentRow:
    """A sealed gzip segment of one record, opened at ``start`` (epoch seconds), in the spool
    of ``data_dir`` and its manifest."""
    segment = segment_id(start, sink_id, seq)
    line = encode_record(json_record({"message": f"{stream} {segment}", "created": start}, Context(stream, None, 0)))
    tally = SegmentTally()
    assert tally.add(line)
    path = DataDir(data_dir).sealed_path(stream, segment, "gzip")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(line, mtime=0)
    path.write_bytes(data)
    row = tally.row(segment, stream, str(path.relative_to(data_dir)), "gzip", len(data), hashlib.sha256(data).hexdigest())
    with closing(Manifest(data_dir)) as manifest:
        manifest.add_sealed(row)
    return row
