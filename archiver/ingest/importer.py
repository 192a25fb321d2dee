"""``archiver import``'s work: each file read from where its last import stopped, its lines
decoded into canonical records, and every batch handed to a target (the local spool, or a
running sink) that makes it durable together with the file's new offset."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from archiver.common.units import ts_epoch
from archiver.format.manifest import ImportPosition
from archiver.format.record import SOURCE_IMPORT, Context, Lines, encode_lines, rejected_record
from archiver.ingest.decode.imported import FILE_FIELD, LineDecoder, sniff_format
from archiver.ingest.decoder import Decoder
from archiver.ingest.files import LogFile, head, open_decompressed, whole_lines
from archiver.spool.imports import ImportBatch, PositionMoved


AHEAD = 4  # chunks decoding on the workers while one is written


class ImportTarget(Protocol):
    """Where batches go: the local spool or a running sink."""

    async def position(self, head: bytes) -> ImportPosition: ...

    async def append(self, batch: ImportBatch) -> None: ...


@dataclass
class FileResult:
    path: str
    format: str
    records: int = 0
    rejected: int = 0
    skipped: str | None = None  # why nothing was read: already imported, empty
    stopped: str | None = None  # why reading stopped short: another import of the file moved its offset
    offset: int = 0


@dataclass
class Summary:
    files: list[FileResult] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(file.records for file in self.files)

    @property
    def rejected(self) -> int:
        return sum(file.rejected for file in self.files)


@dataclass(frozen=True)
class Chunk:
    """One chunk of a file decoded: record parts by hour, rejected lines as ``_rejected``
    records, the bytes it used (from the first held line on) and the lines held back."""

    parts: list[tuple[float, Lines]]
    rejected: Lines
    used_bytes: int
    held: list[bytes]


def decode_chunk(decoder: LineDecoder, data: bytes, held: list[bytes], last: bool) -> Chunk:
    """Whole lines (after the ``held`` ones) as encoded records; pure, so it runs in a worker
    process too (``decoder`` carries no state JSON and syslog lines need)."""
    parts = data.split(b"\n")
    terminated = data.endswith(b"\n") or not data
    if terminated:
        parts.pop()
    lines = held + parts if held else parts
    decoded, used = decoder.decode(lines, final=last)
    used_bytes = sum(map(len, lines[:used])) + used
    if last and not terminated and used == len(lines):
        used_bytes -= 1  # the last line had no newline
    ctx = Context(decoder.ctx.stream, None, time.time())
    rejected = encode_lines([rejected_record(item, ctx, SOURCE_IMPORT, {FILE_FIELD: decoder.file_name})
                             for item in decoded.rejected])
    return Chunk(hour_parts(decoded.records), rejected, used_bytes, lines[used:])


async def import_file(
    file: LogFile, target: ImportTarget, stream: str, kind: str = "auto", workers: Decoder | None = None,
    progress: Callable[[int], None] = lambda records: None,
) -> FileResult:
    """Import what is new in ``file``; ``progress`` hears of the records of each durable batch.
    Stops at the first batch the target refuses as read from a stale offset (``stopped``
    says why): the import that moved it goes on with the file, and no record is written twice.
    JSON and syslog chunks are decoded on ``workers``, a few ahead of the one being written;
    text chunks in order here (a record may span two)."""
    name = str(file.path)
    start = head(file.path)
    if not start:
        return FileResult(name, kind, skipped="empty")
    position = await target.position(start)
    if kind == "auto":
        kind = sniff_format(next((line for line in start.split(b"\n") if line.strip()), b""))
    result = FileResult(name, kind, offset=position.offset)
    decoder = LineDecoder(kind, name, Context(stream, None, time.time()), file.mtime)
    ahead: collections.deque[asyncio.Future[Chunk]] = collections.deque()

    async def settle(chunk: Chunk) -> None:
        nonlocal position
        if chunk.used_bytes:
            batch = ImportBatch(stream, name, position, position.offset + chunk.used_bytes, chunk.parts, chunk.rejected)
            await target.append(batch)
            position = batch.after()
            result.records += batch.records
            result.rejected += batch.rejected.count
            progress(batch.records)

    held: list[bytes] = []
    try:
        with open_decompressed(file.path) as content:
            for data, last in whole_lines(content, position.offset):
                if workers is None or kind == "text":
                    chunk = decode_chunk(decoder, data, held, last)
                    held = chunk.held
                    await settle(chunk)
                    continue
                ahead.append(asyncio.ensure_future(workers.run(True, decode_chunk, decoder, data, [], last)))
                if len(ahead) > AHEAD:
                    await settle(await ahead.popleft())
            while ahead:
                await settle(await ahead.popleft())
    except PositionMoved as moved:
        result.stopped = str(moved)
    finally:
        for future in ahead:
            future.cancel()
    result.offset = position.offset
    if not result.records and not result.rejected and result.stopped is None:
        result.skipped = "nothing new"
    return result


def hour_parts(records: list[dict[str, Any]]) -> list[tuple[float, Lines]]:
    """Records in runs of one UTC hour, in file order, each with its earliest time: imported
    segments hold an hour of record time each."""
    parts = []
    begin = 0
    for n in range(1, len(records) + 1):
        if n == len(records) or records[n]["ts"][:13] != records[begin]["ts"][:13]:
            lines = encode_lines(records[begin:n])
            parts.append((max(0.0, ts_epoch(lines.first_ts)) if lines.first_ts else time.time(), lines))
            begin = n
    return parts

