"""Turning a closed open-segment file into a compressed, hashed, sealed file.

Runs in a worker thread, never on the request path. The sealed file is written to a temporary
name, fsynced and renamed, so a crash leaves either no sealed file or a whole one; sealing the
same open file again after a crash rewrites the same name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import orjson

from .layout import DataDir
from .manifest import SegmentRow
from .units import format_ts

COMPRESSIONS = ("gzip", "zstd")


@dataclass(frozen=True)
class SealOutcome:
    """The manifest row of the sealed file, and lines that were not whole JSON records
    (a torn last line after a crash) for the caller to keep in ``_rejected``."""

    row: SegmentRow
    bad_lines: list[bytes]


class _HashingWriter:
    """A file sink that hashes and counts exactly the bytes that reach the disk."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _compressor(kind: str, level: int, sink: _HashingWriter) -> BinaryIO:
    target = cast(BinaryIO, sink)
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(filename="", mode="wb", fileobj=target, compresslevel=level, mtime=0))
    import zstandard  # optional dependency, checked when the config is loaded

    return cast(BinaryIO, zstandard.ZstdCompressor(level=level).stream_writer(target, closefd=False))


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a create, rename or unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_segment(
    data_dir: DataDir, stream: str, segment: str, source: Path, compression: str, level: int
) -> SealOutcome:
    """Compress ``source`` into the sealed spool and return its manifest row.

    Every line is checked to be a JSON object; the earliest and latest ``ts`` and the level
    counts come from the records themselves.
    """
    target = data_dir.sealed_path(stream, segment, compression)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    levels: Counter[str] = Counter()
    bad_lines: list[bytes] = []
    records = raw_bytes = 0
    first_ts = last_ts = None
    with open(source, "rb") as src, open(temporary, "wb") as out:
        hashing = _HashingWriter(out)
        with _compressor(compression, level, hashing) as packed:
            for line in src:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line")
                    record = orjson.loads(line)
                    ts, level_name = record["ts"], record["level"]
                except (ValueError, KeyError, TypeError):
                    bad_lines.append(line)
                    continue
                packed.write(line)
                records += 1
                raw_bytes += len(line)
                levels[level_name or "NOTSET"] += 1
                if first_ts is None or ts < first_ts:
                    first_ts = ts
                if last_ts is None or ts > last_ts:
                    last_ts = ts
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)
    fsync_dir(target.parent)
    row = SegmentRow(
        id=segment,
        stream=stream,
        state="sealed",
        local_path=str(target.relative_to(data_dir.root)),
        compression=compression,
        raw_bytes=raw_bytes,
        stored_bytes=hashing.size,
        sha256=hashing.sha256.hexdigest(),
        records=records,
        first_ts=first_ts,
        last_ts=last_ts,
        levels=dict(levels),
        sealed_at=format_ts(time.time()),
    )
    return SealOutcome(row, bad_lines)


def open_sealed(path: Path, compression: str) -> BinaryIO:
    """A binary stream of the JSON lines inside a sealed file, decompressed on the fly."""
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return io.BufferedReader(reader)
