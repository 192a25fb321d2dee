"""Log files to import: walking paths, opening plain or compressed files by their magic bytes,
the head that fingerprints them, and reading whole lines from an offset."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from archiver.format.manifest import HEAD_BYTES

CHUNK_BYTES = 1024 * 1024
try:
    from zstandard import ZstdError
except ImportError:  # zstd files then fail to open, with an OSError that says why
    ZstdError = OSError  # type: ignore[misc,assignment]
# What reading an unreadable or corrupt file raises: a truncated or corrupt gzip, bzip2 or zstd stream.
READ_ERRORS = (OSError, EOFError, zlib.error, ZstdError)
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2"}


@dataclass(frozen=True)
class LogFile:
    path: Path
    mtime: float  # places year-less syslog dates, and dates text lines that have no time


def walk(paths: Iterable[Path]) -> list[LogFile]:
    """Every regular file under ``paths`` (directories recursively, hidden entries skipped),
    oldest first by mtime, so rotated files (``syslog.2.gz``, ``syslog.1``, ``syslog``) are
    read in the order they were written."""
    found: dict[Path, LogFile] = {}
    for path in (file for top in paths for file in _files(top)):
        stat = path.stat()
        found[path.resolve()] = LogFile(path, stat.st_mtime)
    return sorted(found.values(), key=lambda file: (file.mtime, str(file.path)))


def _files(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        yield top
        return
    for root, dirs, names in os.walk(top):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        yield from (Path(root) / name for name in names if not name.startswith(".") and (Path(root) / name).is_file())


def compression_of(path: Path) -> str | None:
    with open(path, "rb") as raw:
        magic = raw.read(4)
    return next((name for prefix, name in _MAGIC.items() if magic.startswith(prefix)), None)


def open_decompressed(path: Path) -> IO[bytes]:
    """The file's content, decompressed when it is gzip, zstd or bzip2."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is binary IO
    if kind == "bzip2":
        return bz2.open(path, "rb")
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise OSError(f"{path} is zstd-compressed: install archiver[zstd] to read it") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def head(path: Path) -> bytes:
    """The first HEAD_BYTES of the decompressed content: what names the file."""
    with open_decompressed(path) as content:
        return content.read(HEAD_BYTES)


def whole_lines(content: IO[bytes], offset: int) -> Iterator[tuple[bytes, bool]]:
    """``(whole lines, last)`` chunks of the content from ``offset`` on (decompressed bytes).
    The last chunk says so, empty when the content ends with a newline; its line counts as
    whole even without one."""
    _skip(content, offset)
    carry = b""
    while True:
        data = content.read(CHUNK_BYTES)
        if not data:
            yield carry, True
            return
        data = carry + data
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut], False
        carry = data[cut:]


def _skip(content: IO[bytes], offset: int) -> None:
    """Plain files seek; compressed ones are read up to ``offset``."""
    if isinstance(content, io.BufferedReader) and isinstance(content.raw, io.FileIO):
        content.seek(offset)
        return
    left = offset
    while left:
        data = content.read(min(left, CHUNK_BYTES))
        if not data:
            return
        left -= len(data)
