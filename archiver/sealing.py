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
from typing import Any, BinaryIO, Iterable, Mapping, cast

import orjson

from .layout import DataDir
from .manifest import SegmentRow
from .records import Lines
from .units import format_ts

COMPRESSIONS = ("gzip", "zstd")
_BLOCK_BYTES = 1 << 20


class SealError(Exception):
    """A segment's file is not what was written to it; it stays open for a checked seal."""


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


class SegmentTally:
    """Counts a segment's records as its lines go by: the earliest and latest ``ts`` and the
    level counts come from the records themselves. Lines that are not whole JSON records are
    set aside."""

    def __init__(self) -> None:
        self.levels: Counter[str] = Counter()
        self.bad_lines: list[bytes] = []
        self.records = 0
        self.raw_bytes = 0
        self.first_ts: str | None = None
        self.last_ts: str | None = None

    def add(self, line: bytes) -> bool:
        """Count ``line``; False (and kept in bad_lines) when it is not a whole record."""
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            record = orjson.loads(line)
            ts, level = record["ts"], record["level"] or "NOTSET"
            if type(ts) is not str or type(level) is not str:
                raise TypeError("ts or level is not a string")
        except (ValueError, KeyError, TypeError):
            self.bad_lines.append(line)
            return False
        self._count(1, len(line), (level,), ts, ts)
        return True

    def add_block(self, block: bytes) -> bytes:
        """Count the whole lines of ``block`` (which ends with a newline); return the bytes of
        those that are records. A block of good records is counted without a Python-level
        parse per line, which is what keeps sealing from starving ingest of the GIL."""
        if not block:
            return block
        try:
            records = list(map(orjson.loads, block.split(b"\n")[:-1]))
            stamps = [record["ts"] for record in records]
            levels = Counter([record["level"] or "NOTSET" for record in records])
            first, last = min(stamps), max(stamps)
            if type(first) is not str or type(last) is not str or not all(type(key) is str for key in levels):
                raise TypeError("ts or level is not a string")
        except (ValueError, KeyError, TypeError):
            return b"".join(line for line in block.splitlines(keepends=True) if self.add(line))
        self._count(len(records), len(block), levels, first, last)
        return block

    def add_lines(self, lines: Lines) -> None:
        """Count records as they are written, so sealing the segment need not parse it again."""
        if lines.count:
            assert lines.first_ts is not None and lines.last_ts is not None
            self._count(lines.count, len(lines.data), lines.levels, lines.first_ts, lines.last_ts)

    def _count(self, records: int, raw_bytes: int, levels: Iterable[str] | Mapping[str, int], first: str, last: str) -> None:
        self.records += records
        self.raw_bytes += raw_bytes
        self.levels.update(levels)
        if self.first_ts is None or first < self.first_ts:
            self.first_ts = first
        if self.last_ts is None or last > self.last_ts:
            self.last_ts = last

    def row(self, segment: str, stream: str, local_path: str, compression: str, stored_bytes: int, sha256: str) -> SegmentRow:
        return SegmentRow(
            id=segment, stream=stream, state="sealed", local_path=local_path, compression=compression,
            raw_bytes=self.raw_bytes, stored_bytes=stored_bytes, sha256=sha256, records=self.records,
            first_ts=self.first_ts, last_ts=self.last_ts, levels=dict(self.levels), sealed_at=format_ts(time.time()),
        )


def seal_segment(
    data_dir: DataDir, stream: str, segment: str, source: Path, compression: str, level: int,
    known: SegmentTally | None = None,
) -> SealOutcome:
    """Compress ``source`` into the sealed spool and return its manifest row and bad lines.

    ``known`` is the tally of a segment this process wrote whole: its lines are not parsed
    again (that parse costs as much as the compression). Without it every line is checked.
    """
    target = data_dir.sealed_path(stream, segment, compression)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    tally = known or SegmentTally()
    size = 0
    with open(source, "rb") as src, open(temporary, "wb") as out:
        hashing = _HashingWriter(out)
        with _compressor(compression, level, hashing) as packed:
            rest = b""
            while block := src.read(_BLOCK_BYTES):
                size += len(block)
                block = rest + block
                cut = block.rfind(b"\n") + 1
                rest = block[cut:]
                packed.write(block[:cut] if known else tally.add_block(block[:cut]))
            if known and (rest or size != known.raw_bytes):
                raise SealError(f"{source.name} holds {size} bytes, {known.raw_bytes} were written to it")
            if rest:
                tally.add(rest)  # a last line with no newline: torn by a crash
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)
    fsync_dir(target.parent)
    fsync_dir(target.parent.parent)  # the stream's sealed directory may be new
    local_path = str(target.relative_to(data_dir.root))
    row = tally.row(segment, stream, local_path, compression, hashing.size, hashing.sha256.hexdigest())
    return SealOutcome(row, tally.bad_lines)


class _GzipReader(gzip.GzipFile):
    """A GzipFile that also closes the stream it reads from."""

    def close(self) -> None:
        source: Any = self.fileobj
        try:
            super().close()
        finally:
            if source is not None:
                source.close()


def open_compressed(raw: BinaryIO, compression: str) -> BinaryIO:
    """A binary stream of the JSON lines inside a compressed stream (closed with it),
    decompressed on the fly."""
    if compression == "gzip":
        return cast(BinaryIO, _GzipReader(fileobj=raw, mode="rb"))
    import zstandard

    return cast(BinaryIO, io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)))
