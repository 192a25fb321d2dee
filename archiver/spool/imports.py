"""Imported batches made durable together with how far their file was read.

A batch is written under a note in the manifest (``imports.pending``: the segments it goes
to and each one's size before it), then fsynced, then the file's offset is moved past it and
the note cleared. After a crash (a SIGKILL, a power loss) :func:`undo_unfinished` runs before
the writer recovers open segments: a batch whose segment was already sealed is durable and
counts; any other is cut off its open segments again, to be read anew. So an import resumes
with neither a gap nor a duplicate."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import orjson

from archiver.common.failpoints import failpoint
from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import ImportPosition, Manifest
from archiver.format.record import REJECTED_STREAM, Lines

if TYPE_CHECKING:
    from archiver.spool.writer import SegmentWriter

T = TypeVar("T")


@dataclass(frozen=True)
class ImportBatch:
    """Whole records of one file read from ``position.offset`` up to ``offset``: ``parts``
    of records, each with its earliest time (epoch seconds, which names its segment), and the
    lines that could not be records, as ``_rejected`` records."""

    stream: str
    path: str
    position: ImportPosition
    offset: int
    parts: list[tuple[float, Lines]]
    rejected: Lines

    @property
    def records(self) -> int:
        return sum(lines.count for _, lines in self.parts)

    def after(self) -> ImportPosition:
        return replace(self.position, offset=self.offset, records=self.position.records + self.records,
                       rejected=self.position.rejected + self.rejected.count, known=self.position.fingerprint)


def batch_to_wire(batch: ImportBatch) -> bytes:
    """A batch as a sink's ``/_admin/import`` takes it: a JSON header line, then the lines of
    each part and the rejected ones."""
    def stats(lines: Lines) -> dict[str, Any]:
        return {"bytes": len(lines.data), "count": lines.count, "levels": lines.levels, "first_ts": lines.first_ts,
                "last_ts": lines.last_ts}

    header = {"stream": batch.stream, "path": batch.path, "position": asdict(batch.position), "offset": batch.offset,
              "parts": [{"start": start, **stats(lines)} for start, lines in batch.parts],
              "rejected": stats(batch.rejected)}
    return b"".join([orjson.dumps(header), b"\n", *(lines.data for _, lines in batch.parts), batch.rejected.data])


def batch_from_wire(body: bytes) -> ImportBatch:
    """The inverse of :func:`batch_to_wire`; ValueError for a body that is not one."""
    end = body.find(b"\n")
    try:
        header = orjson.loads(body[:end])
        position = end + 1

        def lines(stats: dict[str, Any]) -> Lines:
            nonlocal position
            data = body[position:position + stats["bytes"]]
            position += stats["bytes"]
            return Lines(data, stats["count"], stats["levels"], stats["first_ts"], stats["last_ts"])

        parts = [(float(part["start"]), lines(part)) for part in header["parts"]]
        batch = ImportBatch(header["stream"], header["path"], ImportPosition(**header["position"]), header["offset"],
                            parts, lines(header["rejected"]))
    except (KeyError, TypeError, orjson.JSONDecodeError) as err:
        raise ValueError(f"not an import batch: {err}") from None
    if position != len(body):
        raise ValueError("not an import batch: its length does not match its header")
    return batch


class SpoolFull(RuntimeError):
    """The spool holds spool.max_bytes: no batch is taken until uploads prune it."""


class PositionMoved(RuntimeError):
    """The file's import no longer stands where the batch continues from: another import is
    reading the same file, and this batch would duplicate its records."""


class ImportSpool:
    """Appends imported batches through a running :class:`SegmentWriter`; one batch at a time.

    The manifest is read and written on a thread of its own, so a write lock held by the
    sealer never stalls the event loop."""

    def __init__(self, writer: SegmentWriter, root: Path) -> None:
        self.writer = writer
        self.lock = asyncio.Lock()  # a sink takes one batch at a time, whoever sends it
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="imports")
        self.manifest = self._thread.submit(Manifest, root).result()

    def close(self) -> None:
        self._thread.submit(self.manifest.close).result()
        self._thread.shutdown()

    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def position(self, head: bytes) -> ImportPosition:
        async with self.lock:  # after a batch still being appended for the same file
            return await self._off_loop(self.manifest.import_position, head)

    async def append(self, batch: ImportBatch) -> None:
        """Returns once the batch is durable and its file's offset committed; PositionMoved
        when the file's offset is not the one the batch was read from."""
        async with self.lock:
            await self._check_position(batch)
            await self._append(batch)

    async def _check_position(self, batch: ImportBatch) -> None:
        claimed = batch.position.offset if batch.position.known else None
        stored = await self._off_loop(self.manifest.import_offset, batch.position.known or batch.position.fingerprint)
        if stored != claimed:
            where = "was never imported" if stored is None else f"stands at byte {stored:,}"
            since = f"byte {claimed:,}" if claimed is not None else "its start"
            raise PositionMoved(f"{batch.path} {where}, not at {since} where this batch continues from: "
                                "another import is reading it (it goes on from where that one stops)")

    async def _append(self, batch: ImportBatch) -> None:
        if self.writer.over_limit():
            raise SpoolFull(f"the spool holds spool.max_bytes ({self.writer.spool_limit:,} bytes); "
                            "once the sink has uploaded it, run the import again: it continues where it stopped")
        writes: list[list[Any]] = []
        note = {"offset": batch.offset, "records": batch.records, "rejected": batch.rejected.count, "writes": writes}

        def before_write(stream: str) -> Any:
            async def noted(segment: str, size: int) -> None:
                writes.append([stream, segment, size])
                await self._off_loop(self.manifest.save_import, batch.position, batch.path, format_ts(time.time()), note)
            return noted

        with self.writer.holding_imports():
            if batch.rejected.count:
                await self.writer.write_imported(REJECTED_STREAM, batch.rejected, time.time(),
                                                 before_write(REJECTED_STREAM))
            for start, lines in batch.parts:
                await self.writer.write_imported(batch.stream, lines, start, before_write(batch.stream))
        if writes:
            await self.writer.commit(durable=True)
        failpoint("import.before_offset")  # durable, and the offset not yet moved past it
        await self._off_loop(self.manifest.save_import, batch.after(), batch.path, format_ts(time.time()))


def undo_unfinished(data_dir: DataDir, manifest: Manifest) -> None:
    """Settle each batch a crash cut short; run before open segments are recovered."""
    unfinished = manifest.unfinished_imports()
    if not unfinished:
        return
    sealed = set(manifest.segment_ids())
    for fingerprint, note in unfinished:
        if any(segment in sealed for _, segment, _ in note["writes"]):
            manifest.finish_import(fingerprint, completed=True)  # sealed after the fsync that covered it all
            continue
        for stream, segment, size in note["writes"]:
            _cut(data_dir.open_path(stream, segment), size)
        manifest.finish_import(fingerprint, completed=False)


def _cut(path: os.PathLike[str], size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # never made durable
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
            os.fsync(fd)
    finally:
        os.close(fd)
