"""SegmentWriter: per-stream open segments, rotation, and the spool's accounting and status;
it hands durability to the group commit (archiver.spool.group_commit) and sealing to the
sealer (archiver.spool.sealer).

Threading model: ``write`` runs on the event loop (an ``os.write`` to the page cache, short);
fsync runs on one "fsync" thread and sealing on one "seal" thread, so neither ever holds up a
request. With ``fsync = "always"``, ``commit()`` waits for the next fsync round; every request
that wrote before the round starts shares it.

Ordering, relied on by recovery: a record is acked only after its bytes are fsynced; a segment
is sealed (compressed file fsynced and renamed, manifest row committed) before its open file
is unlinked; lines that are not whole records are written to ``_rejected`` and made durable
before that unlink too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Awaitable, Callable, Iterator

from archiver.format.layout import SEQ_MODULO, DataDir, segment_id, segment_seq
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.record import (
    REJECTED_STREAM,
    Context,
    Lines,
    Rejected,
    encode_lines,
    rejected_record,
    valid_stream_name,
)
from archiver.spool.group_commit import GroupCommit
from archiver.spool.imports import undo_unfinished
from archiver.spool.rotation import RotationPolicy
from archiver.spool.sealer import FailedSeal, Sealer
from archiver.spool.sealing import SealOutcome
from archiver.spool.segment import OpenSegment, SpoolStats

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
IMPORT_LANE = "import:"  # keys imported segments apart from a stream's live one ("import:app")


def _next_seq(last: int, worker: int, step: int) -> int:
    """The first sequence number after ``last`` that is ``worker`` modulo ``step``."""
    return (last + 1 + (worker - last - 1) % step) % SEQ_MODULO


class SegmentWriter:
    """Appends encoded records to per-stream segments and seals them off the request path."""

    def __init__(
        self,
        data_dir: DataDir,
        sink_id: str,
        policy: RotationPolicy,
        *,
        fsync: str = "always",
        fsync_interval: float = 0.2,
        compression: str = "gzip",
        compression_level: int = 6,
        spool_limit: int = 2**62,
        on_sealed: Callable[[], None] = lambda: None,
        seq_step: int = 1,
        add_row: Callable[[SegmentRow], None] | None = None,
    ) -> None:
        """``data_dir.worker`` and ``seq_step`` keep the segment ids of a sink's workers apart
        (worker N numbers its segments N modulo ``seq_step``); a worker's ``add_row`` sends
        its manifest rows to the process that writes the manifest (Sealer)."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.data_dir = data_dir
        self.sink_id = sink_id
        self.policy = policy
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.spool_limit = spool_limit
        self.on_sealed = on_sealed
        self.stats = SpoolStats()
        self._open: dict[str, OpenSegment] = {}
        self._held: list[OpenSegment] | None = None  # import segments retired during a batch, sealed after it
        self._commits = GroupCommit(self.stats, on_retired=self._retired, on_failed=self._fsync_failed)
        self._sealer = Sealer(data_dir, self.stats, compression=compression, compression_level=compression_level,
                              keep_torn=self._keep_torn, on_sealed=self._sealed, add_row=add_row)
        self._ticker: asyncio.Task[None] | None = None
        self._seq = 0
        self._seq_step = seq_step
        self._recovers = add_row is None
        self._spool_bytes = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Account the spool, pick the next sequence number, and seal what a crash left open
        (every worker's: a worker that sends its rows elsewhere leaves that to the primary,
        which starts before it and accounts the whole spool)."""
        manifest = Manifest(self.data_dir.root, read_only=not self._recovers)
        try:
            if self._recovers:
                undo_unfinished(self.data_dir, manifest)
            # Listed before the ids are read: one the primary seals meanwhile is in one or the other.
            leftovers = self.data_dir.open_segments()
            known = manifest.segment_ids()
        finally:
            manifest.close()
        seqs = [segment_seq(s) for s in known + [seg for _, seg, _ in leftovers]]
        self._seq = _next_seq(max([s for s in seqs if s is not None], default=-1), self.data_dir.worker, self._seq_step)
        if not self._recovers:
            self._ticker = asyncio.create_task(self._tick())
            return
        self._spool_bytes = await asyncio.to_thread(self._scan_spool)
        for stream, segment, path in leftovers:
            recovered = OpenSegment(stream, segment, path, size=path.stat().st_size, tally=None)
            log.info("recovering open segment %s/%s left by an earlier run", stream, segment)
            self._sealer.start(recovered)
        self._ticker = asyncio.create_task(self._tick())

    def _scan_spool(self) -> int:
        """Every worker's open spool and the sealed spool: this writer seals all that is open."""
        total = sum(path.stat().st_size for _, _, path in self.data_dir.open_segments())
        for path in self.data_dir.sealed_dir.glob("*/*"):
            if path.name.endswith(".tmp"):
                path.unlink()  # a seal interrupted by a crash; the open file is still there
            else:
                total += path.stat().st_size
        return total

    async def flush(self) -> list[FailedSeal]:
        """Seal every segment written so far and wait until each is sealed: the open ones, the
        ones already retired whose fsync round is still running, ones whose seal failed (tried
        again now rather than after their backoff) and any a seal opened itself (torn lines
        kept in _rejected). Returns the segments whose seal failed; they stay in the open spool.

        Segments opened by requests that arrive meanwhile are left to rotate on their own, so a
        flush under steady traffic ends."""
        self._sealer.retry_failed_now()
        while True:
            torn_lines = self.stats.torn_lines
            for stream in list(self._open):
                self._retire(stream)
            await self._commits.sync()  # queued behind a running round: every retired segment is sealing after it
            sealing = self._sealer.in_progress()
            if not sealing:
                return self._sealer.failed
            # asyncio.wait, not gather: cancelling this flush (an /_admin/flush cut off at stop)
            # must never cancel the seals themselves.
            await asyncio.wait(sealing)
            if self.stats.torn_lines == torn_lines:
                return self._sealer.failed

    async def close(self) -> list[FailedSeal]:
        """Seal everything, then stop the worker threads; the writer cannot be used after.
        Returns the segments that could not be sealed (their records are durable in the open
        spool and are sealed at the next start)."""
        if self._closed:
            return self._sealer.failed
        self._sealer.stop_retrying()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        try:
            failures = await self.flush()
        finally:
            await self._commits.drain()
            self._closed = True
            self._commits.shutdown()
            self._sealer.shutdown()
        return failures

    # -- the request path ------------------------------------------------------------------

    def over_limit(self) -> bool:
        """True while the spool holds at least its size limit: refuse new input (503)."""
        return self._spool_bytes >= self.spool_limit

    @property
    def spool_bytes(self) -> int:
        return self._spool_bytes

    def write(self, stream: str, data: bytes, count: int) -> None:
        """Append ``count`` encoded records (``data``, whole lines) to the stream's segment.

        Nothing is durable until :meth:`commit` returns. A failed write is cut back off the
        file, so a segment never holds half a batch followed by more records.
        """
        self._append(stream, data, count, None)

    def write_lines(self, stream: str, lines: Lines) -> None:
        """Like :meth:`write`, for lines whose statistics are known: sealing skips re-reading them."""
        self._append(stream, lines.data, lines.count, lines)

    def write_records(self, stream: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.write_lines(stream, encode_lines(records))

    @contextlib.contextmanager
    def holding_imports(self) -> Iterator[None]:
        """Import segments retired while an imported batch is written (by rotation, age, a
        flush) stop taking records but are sealed only once it is all written: a sealed one
        then proves the whole batch reached an fsync (archiver.spool.imports relies on it
        after a crash)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for segment in held:
                self._commits.retire(segment)

    async def write_imported(
        self, stream: str, lines: Lines, start: float, before_write: Callable[[str, int], Awaitable[None]],
    ) -> None:
        """Append imported records to segments of their own, apart from live ones and named by
        ``start``, the records' earliest time: each holds one UTC hour of record time (the
        store's hour directory its id names), so records older than its start, or of a later
        hour, open a new one. ``before_write(segment id, size)`` is awaited just before the
        bytes go to the file, so an import can note where they went and cut them off again
        after a crash (archiver.spool.imports); call it under :meth:`holding_imports`, so the
        segment is not sealed meanwhile."""
        if self._held is None:
            raise RuntimeError("write_imported outside holding_imports")
        key = IMPORT_LANE + stream
        segment = self._open.get(key)
        if segment is not None and not segment.start <= start < segment.start - segment.start % 3600 + 3600:
            self._retire(key)
        segment = self._place(stream, key, len(lines.data), lines.count, start)
        await before_write(segment.id, segment.size)
        self._write(segment, key, lines.data, lines.count, lines)

    def _append(self, stream: str, data: bytes, count: int, lines: Lines | None) -> None:
        self._write(self._place(stream, stream, len(data), count, None), stream, data, count, lines)

    def _place(self, stream: str, key: str, size: int, count: int, start: float | None) -> OpenSegment:
        """The open segment of ``key`` that takes ``size`` bytes more, rotated or opened as needed."""
        if self._closed:
            raise RuntimeError("the segment writer is closed")
        if stream != REJECTED_STREAM and not valid_stream_name(stream):
            raise ValueError(f"invalid stream name {stream!r}")
        segment = self._open.get(key)
        if segment is not None and self.policy.full_after(segment.size, segment.records, size, count):
            self._retire(key)
            segment = None
        if segment is None:
            segment = self._open_segment(stream, key, time.time() if start is None else start)
        return segment

    def _write(self, segment: OpenSegment, key: str, data: bytes, count: int, lines: Lines | None) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(segment.fd, view) :]
        except OSError:
            os.ftruncate(segment.fd, segment.size)
            raise
        segment.size += len(data)
        segment.records += count
        if segment.tally is not None:
            if lines is None:
                segment.tally = None
            else:
                segment.tally.add_lines(lines)
        self._spool_bytes += len(data)
        self._commits.written(segment)
        if not key.startswith(IMPORT_LANE) and self.policy.full(segment.size, segment.records):
            # An imported batch's segments stay open until its offset is committed; the next
            # batch rotates them (archiver.spool.imports relies on it after a crash).
            self._retire(key)

    async def commit(self, *, durable: bool = False) -> None:
        """Return once everything written so far is durable per the fsync policy.

        ``durable=True`` waits for an fsync whatever the policy (used for internal writes).
        """
        if self.fsync == "always" or durable:
            self.stats.commits_waited += 1
            await self._commits.sync()

    def _open_segment(self, stream: str, key: str, start: float) -> OpenSegment:
        name = segment_id(start, self.sink_id, self._seq)
        self._seq += self._seq_step
        path = self.data_dir.open_path(stream, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        segment = OpenSegment(stream, name, path, fd, start=int(start))
        self._open[key] = segment
        self._commits.written(segment)  # its directory entry must reach the disk too
        return segment

    def _retire(self, key: str) -> None:
        segment = self._open.pop(key, None)
        if segment is None:
            return
        if self._held is not None and key.startswith(IMPORT_LANE):
            self._held.append(segment)
        else:
            self._commits.retire(segment)

    async def _tick(self) -> None:
        """Age-based rotation, and the fsync of the ``interval`` policy."""
        period = min(1.0, self.policy.max_age / 4)
        if self.fsync == "interval":
            period = min(period, self.fsync_interval)
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for stream, segment in list(self._open.items()):
                if self.policy.expired(now - segment.opened):
                    self._retire(stream)
            if self.fsync == "interval" and self._commits.has_dirty and now - last_sync >= self.fsync_interval:
                last_sync = now
                self._commits.request()

    # -- what the group commit and the sealer report back -----------------------------------

    def _retired(self, segment: OpenSegment) -> None:
        self._sealer.start(segment)

    def _fsync_failed(self, dirty: list[OpenSegment]) -> None:
        """After a failed fsync the page cache cannot be trusted: start new files."""
        for key, segment in list(self._open.items()):
            if segment in dirty:
                self._retire(key)

    async def _keep_torn(self, segment: OpenSegment, lines: list[bytes]) -> None:
        ctx = Context(segment.stream, None, time.time())
        meta = {"segment": segment.id, "stream": segment.stream}
        rejected = [rejected_record(Rejected("torn or corrupt line in an open segment", line), ctx, "recovery", meta)
                    for line in lines]
        self.write_records(REJECTED_STREAM, rejected)
        await self.commit(durable=True)

    def _sealed(self, segment: OpenSegment, outcome: SealOutcome) -> None:
        self._spool_bytes += outcome.row.stored_bytes + outcome.index_bytes - segment.size
        self.on_sealed()

    def release(self, size: int) -> None:
        """A sealed copy of ``size`` bytes left the spool (pruned after upload). Loop thread only."""
        self._spool_bytes -= size

    def durable_watermark(self) -> list[dict[str, Any]]:
        """Each open segment and how many of its bytes are fsynced (GET /_durable). Loop thread only."""
        return [{"stream": s.stream, "segment": s.id, "durable": s.durable} for s in self._open.values()]

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "spool_bytes": self._spool_bytes,
            "spool_limit": self.spool_limit,
            "fsync": self.fsync,
            "open": {
                stream: {"segment": s.id, "bytes": s.size, "records": s.records, "age_s": round(now - s.opened, 3)}
                for stream, s in sorted(self._open.items())
            },
            "sealing": len(self._sealer.in_progress()),
            "fsync_rounds": self.stats.fsync_rounds,
            "commits_waited": self.stats.commits_waited,
            "segments_sealed": self.stats.segments_sealed,
            "seal_errors": self.stats.seal_errors,
            "seal_failed": [failed.describe() for failed in self._sealer.failed],
            "spool_error": self.stats.last_error,
        }
