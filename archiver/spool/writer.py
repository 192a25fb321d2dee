"""SegmentWriter: per-stream open segments, rotation, group-commit fsync, sealing, recovery.

Threading model: ``write`` runs on the event loop (an ``os.write`` to the page cache, short);
fsync runs on one "fsync" thread and sealing on one "seal" thread, so neither ever holds up a
request. With ``fsync = "always"``, ``commit()`` waits for the next fsync round; every request
that wrote before the round starts shares it (group commit).

A seal that fails (a full disk, a manifest locked too long) is retried with backoff while the
sink runs; its open file stays where it is, durable, and counts against the spool limit until
then. ``close()`` makes one last attempt and returns what still failed, so the caller can say
which segment is left where and exit non-zero.

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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from archiver.common.backoff import retry_delay
from archiver.common.failpoints import failpoint
from archiver.format.layout import DataDir, segment_id, segment_seq
from archiver.format.manifest import Manifest
from archiver.format.record import (
    REJECTED_STREAM,
    Context,
    Lines,
    Rejected,
    encode_lines,
    rejected_record,
    valid_stream_name,
)
from archiver.format.segment import SegmentTally
from archiver.spool.rotation import RotationPolicy
from archiver.spool.sealing import SealError, fsync_dir, seal_segment

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
SEAL_RETRY_BASE = 1.0
SEAL_RETRY_MAX = 60.0


@dataclass(eq=False)
class OpenSegment:
    """An append-only file being written; ``fd`` is -1 once closed (or for a recovered file)."""

    stream: str
    id: str
    path: Path
    fd: int = -1
    size: int = 0
    records: int = 0
    opened: float = field(default_factory=time.monotonic)
    dir_synced: bool = False
    # What was written, counted as it was written; None when some bytes came without their
    # records, or for a file recovered after a crash: then sealing parses every line.
    tally: SegmentTally | None = field(default_factory=SegmentTally)


@dataclass
class WriterStats:
    """Counters for /_status and /_metrics."""

    fsync_rounds: int = 0
    commits_waited: int = 0
    segments_sealed: int = 0
    torn_lines: int = 0
    seal_errors: int = 0
    last_error: str | None = None


@dataclass(eq=False)
class FailedSeal:
    """A segment whose seal failed: its records are durable in ``segment.path`` (the open
    spool) and it is sealed again after a backoff, at the latest at the next start."""

    segment: OpenSegment
    error: str
    attempts: int
    retry: asyncio.TimerHandle | None = None

    def describe(self) -> dict[str, Any]:
        return {"segment": self.segment.id, "stream": self.segment.stream, "path": str(self.segment.path),
                "attempts": self.attempts, "error": self.error}


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
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.data_dir = data_dir
        self.sink_id = sink_id
        self.policy = policy
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.compression = compression
        self.compression_level = compression_level
        self.spool_limit = spool_limit
        self.on_sealed = on_sealed
        self.stats = WriterStats()
        self._open: dict[str, OpenSegment] = {}
        self._dirty: set[OpenSegment] = set()
        self._retiring: list[OpenSegment] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._sync_requested = False
        self._round: asyncio.Task[None] | None = None
        self._sealing: set[asyncio.Task[None]] = set()
        self._failed: dict[str, FailedSeal] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._fsync_pool = ThreadPoolExecutor(1, thread_name_prefix="archiver-fsync")
        self._seal_pool = ThreadPoolExecutor(1, thread_name_prefix="archiver-seal")
        self._seal_local = threading.local()
        self._seq = 0
        self._spool_bytes = 0
        self._closing = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Account the spool, pick the next sequence number, and seal what a crash left open."""
        leftovers = self.data_dir.open_segments()
        manifest = Manifest(self.data_dir.root)
        try:
            known = manifest.segment_ids()
        finally:
            manifest.close()
        seqs = [segment_seq(s) for s in known + [seg for _, seg, _ in leftovers]]
        self._seq = max([s for s in seqs if s is not None], default=-1) + 1
        self._spool_bytes = await asyncio.get_running_loop().run_in_executor(
            self._seal_pool, self._scan_spool
        )
        for stream, segment, path in leftovers:
            recovered = OpenSegment(stream, segment, path, size=path.stat().st_size, tally=None)
            log.info("recovering open segment %s/%s left by an earlier run", stream, segment)
            self._start_seal(recovered)
        self._ticker = asyncio.create_task(self._tick())

    def _scan_spool(self) -> int:
        total = 0
        for top in (self.data_dir.open_dir, self.data_dir.sealed_dir):
            for path in top.glob("*/*"):
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
        for failed in list(self._failed.values()):
            self._retry_seal(failed.segment.id)
        while True:
            torn_lines = self.stats.torn_lines
            for stream in list(self._open):
                self._retire(stream)
            await self._sync_now()  # queued behind a running round: every retired segment is sealing after it
            sealing = list(self._sealing)
            if not sealing:
                return list(self._failed.values())
            # asyncio.wait, not gather: cancelling this flush (an /_admin/flush cut off at stop)
            # must never cancel the seals themselves.
            await asyncio.wait(sealing)
            if self.stats.torn_lines == torn_lines:
                return list(self._failed.values())

    async def close(self) -> list[FailedSeal]:
        """Seal everything, then stop the worker threads; the writer cannot be used after.
        Returns the segments that could not be sealed (their records are durable in the open
        spool and are sealed at the next start)."""
        if self._closed:
            return list(self._failed.values())
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        failures = await self.flush()
        if self._round is not None:
            await self._round  # no fsync round may outlive the pools it runs on
        self._closed = True
        self._fsync_pool.shutdown()
        self._seal_pool.shutdown()
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

    def _append(self, stream: str, data: bytes, count: int, lines: Lines | None) -> None:
        if self._closed:
            raise RuntimeError("the segment writer is closed")
        if stream != REJECTED_STREAM and not valid_stream_name(stream):
            raise ValueError(f"invalid stream name {stream!r}")
        segment = self._open.get(stream)
        if segment is not None and self.policy.full_after(segment.size, segment.records, len(data), count):
            self._retire(stream)
            segment = None
        if segment is None:
            segment = self._open_segment(stream)
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
        self._dirty.add(segment)
        if self.policy.full(segment.size, segment.records):
            self._retire(stream)

    async def commit(self, *, durable: bool = False) -> None:
        """Return once everything written so far is durable per the fsync policy.

        ``durable=True`` waits for an fsync whatever the policy (used for internal writes).
        """
        if self.fsync == "always" or durable:
            self.stats.commits_waited += 1
            await self._sync_now()

    def _open_segment(self, stream: str) -> OpenSegment:
        name = segment_id(time.time(), self.sink_id, self._seq)
        self._seq += 1
        path = self.data_dir.open_path(stream, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        segment = OpenSegment(stream, name, path, fd)
        self._open[stream] = segment
        self._dirty.add(segment)  # its directory entry must reach the disk too
        return segment

    def _retire(self, stream: str) -> None:
        segment = self._open.pop(stream, None)
        if segment is not None:
            self._retiring.append(segment)
            self._kick()

    # -- group commit ----------------------------------------------------------------------

    async def _sync_now(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick()
        await waiter

    def _kick(self) -> None:
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._run_rounds())

    async def _run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters or self._retiring or self._sync_requested:
            self._sync_requested = False
            waiters, self._waiters = self._waiters, []
            dirty, self._dirty = list(self._dirty), set()
            retiring, self._retiring = self._retiring, []
            try:
                await loop.run_in_executor(self._fsync_pool, _sync_round, dirty, retiring)
            except Exception as err:  # noqa: BLE001 - waiters must never hang
                log.error("fsync failed, records of this round are not acknowledged: %s", err)
                self.stats.last_error = f"fsync failed: {err}"
                # After a failed fsync the page cache cannot be trusted: start new files.
                for segment in dirty:
                    if self._open.get(segment.stream) is segment:
                        self._retire(segment.stream)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(err)
                for segment in retiring:  # their unacknowledged bytes are kept, never acked
                    if segment.fd >= 0:
                        os.close(segment.fd)
                        segment.fd = -1
                    self._start_seal(segment)
                continue
            finally:
                self.stats.fsync_rounds += 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            for segment in retiring:
                self._start_seal(segment)

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
            if self.fsync == "interval" and self._dirty and now - last_sync >= self.fsync_interval:
                last_sync = now
                self._sync_requested = True
                self._kick()

    # -- sealing ---------------------------------------------------------------------------

    def _start_seal(self, segment: OpenSegment) -> None:
        task = asyncio.create_task(self._seal(segment))
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)

    def _retry_seal(self, segment_id: str) -> None:
        failed = self._failed.get(segment_id)
        if failed is None:
            return
        if failed.retry is not None:
            failed.retry.cancel()
            failed.retry = None
        self._start_seal(failed.segment)

    async def _seal(self, segment: OpenSegment) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._seal_pool, self._seal_in_thread, segment)
            if outcome.bad_lines:
                log.warning("%d torn line(s) in %s kept in _rejected", len(outcome.bad_lines), segment.id)
                self.stats.torn_lines += len(outcome.bad_lines)
                ctx = Context(segment.stream, None, time.time())
                meta = {"segment": segment.id, "stream": segment.stream}
                rejected = [
                    rejected_record(Rejected("torn or corrupt line in an open segment", line), ctx, "recovery", meta)
                    for line in outcome.bad_lines
                ]
                self.write_records(REJECTED_STREAM, rejected)
                await self.commit(durable=True)
            await loop.run_in_executor(self._seal_pool, _unlink_durably, segment.path)
        except Exception as err:  # noqa: BLE001 - the open file is kept and sealed again later
            self._seal_failed(segment, err)
            return
        self._failed.pop(segment.id, None)
        self.stats.segments_sealed += 1
        self._spool_bytes += outcome.row.stored_bytes - segment.size
        self.on_sealed()

    def _seal_failed(self, segment: OpenSegment, err: Exception) -> None:
        failed = self._failed.get(segment.id)
        attempts = failed.attempts + 1 if failed else 1
        message = f"{type(err).__name__}: {err}"
        self._failed[segment.id] = failed = FailedSeal(segment, message, attempts)
        self.stats.seal_errors += 1
        self.stats.last_error = f"sealing {segment.id} failed: {message}"
        if self._closing:
            log.error("sealing %s failed at stop: %s; its records stay in %s", segment.id, message, segment.path)
            return
        delay = retry_delay(attempts, SEAL_RETRY_BASE, SEAL_RETRY_MAX)
        log.error("sealing %s failed (attempt %d, next in %.1f s); its records stay in %s",
                  segment.id, attempts, delay, segment.path, exc_info=err)
        failed.retry = asyncio.get_running_loop().call_later(delay, self._retry_seal, segment.id)

    def release(self, size: int) -> None:
        """A sealed copy of ``size`` bytes left the spool (pruned after upload). Loop thread only."""
        self._spool_bytes -= size

    def _seal_in_thread(self, segment: OpenSegment) -> Any:
        manifest = getattr(self._seal_local, "manifest", None)
        if manifest is None:
            manifest = self._seal_local.manifest = Manifest(self.data_dir.root)
        failpoint("seal")
        try:
            outcome = seal_segment(self.data_dir, segment.stream, segment.id, segment.path, self.compression,
                                   self.compression_level, segment.tally)
        except SealError as err:
            log.error("%s; sealing it again, checking every line", err)
            outcome = seal_segment(self.data_dir, segment.stream, segment.id, segment.path, self.compression,
                                   self.compression_level)
        manifest.add_sealed(outcome.row)
        return outcome

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
            "sealing": len(self._sealing),
            "fsync_rounds": self.stats.fsync_rounds,
            "commits_waited": self.stats.commits_waited,
            "segments_sealed": self.stats.segments_sealed,
            "seal_errors": self.stats.seal_errors,
            "seal_failed": [failed.describe() for failed in self._failed.values()],
            "spool_error": self.stats.last_error,
        }


def _sync_round(dirty: list[OpenSegment], retiring: list[OpenSegment]) -> None:
    """One group-commit round, on the fsync thread: data, then new directory entries, then
    close the retired files (already synced above when they were dirty)."""
    failpoint("fsync-round")
    directories: set[Path] = set()
    for segment in dirty:
        if segment.fd >= 0:
            os.fdatasync(segment.fd)
        if not segment.dir_synced:
            directories.add(segment.path.parent)
            directories.add(segment.path.parent.parent)  # the stream's directory may be new
    for directory in directories:
        fsync_dir(directory)
    for segment in dirty:
        segment.dir_synced = True
    for segment in retiring:
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1


def _unlink_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)

