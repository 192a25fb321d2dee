"""Turning a closed open-segment file into a compressed, hashed, sealed file.

Runs in a worker thread, never on the request path. The sealed file is written to a temporary
name, fsynced and renamed, so a crash leaves either no sealed file or a whole one; sealing the
same open file again after a crash rewrites the same name."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from zlib_ng import gzip_ng

from archiver.format.layout import DataDir
from archiver.format.manifest import SegmentRow
from archiver.format.search_index import IndexBuilder
from archiver.format.segment import SegmentTally

_BLOCK_BYTES = 1 << 20


class SealError(Exception):
    """A segment's file is not what was written to it; it stays open for a checked seal."""


@dataclass(frozen=True)
class SealOutcome:
    """The manifest row of the sealed file, lines that were not whole JSON records (a torn
    last line after a crash) for the caller to keep in ``_rejected``, and the size of the
    search index written beside it (spool space)."""

    row: SegmentRow
    bad_lines: list[bytes]
    index_bytes: int = 0


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
    if kind == "gzip":  # zlib-ng: the same gzip format, faster and smaller than zlib's at a level (docs/format.md)
        return cast(BinaryIO, gzip_ng.GzipNGFile(filename="", mode="wb", fileobj=target, compresslevel=level, mtime=0))
    import zstandard  # optional dependency, checked when the config is loaded

    return cast(BinaryIO, zstandard.ZstdCompressor(level=level).stream_writer(target, closefd=False))


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a create, rename or unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Written before the sealed file it indexes is renamed into place: a sealed file always
    has its index (a crash between the two leaves an index that the next seal rewrites)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def seal_segment(
    data_dir: DataDir, stream: str, segment: str, source: Path, compression: str, level: int,
    known: SegmentTally | None = None,
) -> SealOutcome:
    """Compress ``source`` into the sealed spool, with its search index beside it, and return
    its manifest row and bad lines.

    ``known`` is the tally of a segment this process wrote whole: its lines are not parsed
    again (that parse costs as much as the compression), nor indexed when it holds the index.
    Without it every line is checked.
    """
    target = data_dir.sealed_path(stream, segment, compression)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    tally = known or SegmentTally()
    # A segment written partly from lines without an index part is indexed here.
    index = tally.index or IndexBuilder()
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
                records = block[:cut] if known else tally.add_block(block[:cut])
                if tally.index is None:
                    index.add_block(records)
                packed.write(records)
            if known and (rest or size != known.raw_bytes):
                raise SealError(f"{source.name} holds {size} bytes, {known.raw_bytes} were written to it")
            if rest:
                tally.add(rest)  # a last line with no newline: torn by a crash
        out.flush()
        os.fsync(out.fileno())
    index_bytes = index.to_bytes()
    if index_bytes is None:
        data_dir.index_path(stream, segment).unlink(missing_ok=True)  # readers read the segment
    else:
        _write_durably(data_dir.index_path(stream, segment), index_bytes)
    os.replace(temporary, target)
    fsync_dir(target.parent)
    fsync_dir(target.parent.parent)  # the stream's sealed directory may be new
    local_path = str(target.relative_to(data_dir.root))
    row = tally.row(segment, stream, local_path, compression, hashing.size, hashing.sha256.hexdigest())
    return SealOutcome(row, tally.bad_lines, len(index_bytes or b""))
