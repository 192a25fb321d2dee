"""What a sealed segment holds and how to read it back: the compressions, a decompressing
reader, and the tally of records (count, time range, levels) that the manifest keeps."""

from __future__ import annotations

import gzip
import io
import time
from collections import Counter
from typing import Any, BinaryIO, Iterable, Mapping, cast

import orjson

from archiver.common.units import format_ts
from archiver.format.manifest import SegmentRow
from archiver.format.record import Lines
from archiver.format.search_index import IndexBuilder

COMPRESSIONS = ("gzip", "zstd")


class SegmentTally:
    """Counts a segment's records as its lines go by: the earliest and latest ``ts`` and the
    level counts come from the records themselves. Lines that are not whole JSON records are
    set aside. ``index`` is the segment's search index, built from the same records (or from
    the index parts of the lines as they are written); None once a batch came without one."""

    def __init__(self) -> None:
        self.index: IndexBuilder | None = IndexBuilder()
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
            kept = b"".join(line for line in block.splitlines(keepends=True) if self.add(line))
            if self.index is not None:
                self.index.add_block(kept)
            return kept
        self._count(len(records), len(block), levels, first, last)
        if self.index is not None:
            self.index.add_records(records)
        return block

    def add_lines(self, lines: Lines) -> None:
        """Count and index records as they are written, so sealing the segment need not parse
        it again."""
        if lines.count:
            assert lines.first_ts is not None and lines.last_ts is not None
            self._count(lines.count, len(lines.data), lines.levels, lines.first_ts, lines.last_ts)
            if lines.index is None:
                self.index = None
            elif self.index is not None and not self.index.add_part(lines.index, lines.levels):
                self.index = None  # too many distinct trigrams to hold: indexed as it is sealed

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
