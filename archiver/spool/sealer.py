"""Sealing off the request path, with retries: each retired segment is sealed on one "seal"
thread (archiver.spool.sealing does the work), its manifest row committed, then its open file
unlinked.

A seal that fails (a full disk, a manifest locked too long) is retried with backoff while the
sink runs; the open file stays where it is, durable. Once the sink is stopping there are no
more retries: what still fails is returned to the caller, which names it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from archiver.common.backoff import retry_delay
from archiver.common.failpoints import failpoint
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.spool.sealing import SealError, SealOutcome, fsync_dir, seal_segment
from archiver.spool.segment import OpenSegment, SpoolStats

log = logging.getLogger(__name__)

RETRY_BASE = 1.0
RETRY_MAX = 60.0


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


class Sealer:
    """Seals segments one at a time. ``keep_torn`` archives lines that are not whole records
    (a torn last line after a crash) and makes them durable before the open file goes;
    ``on_sealed`` hears of each segment sealed. ``add_row``, when given, enters a sealed
    segment's manifest row in place of this process (a worker's rows go to the one process
    that writes the manifest); it runs on the seal thread and may block."""

    def __init__(
        self,
        data_dir: DataDir,
        stats: SpoolStats,
        *,
        compression: str,
        compression_level: int,
        keep_torn: Callable[[OpenSegment, list[bytes]], Awaitable[None]],
        on_sealed: Callable[[OpenSegment, SealOutcome], None],
        add_row: Callable[[SegmentRow], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.stats = stats
        self.compression = compression
        self.compression_level = compression_level
        self._keep_torn = keep_torn
        self._on_sealed = on_sealed
        self._add_row = add_row
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: dict[str, FailedSeal] = {}
        self._stopping = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="archiver-seal")
        self._local = threading.local()

    def start(self, segment: OpenSegment) -> None:
        task = asyncio.create_task(self._seal(segment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_failed_now(self) -> None:
        """Seal again every segment whose seal failed, without waiting for its backoff."""
        for segment_id in list(self._failed):
            self._retry(segment_id)

    def in_progress(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    @property
    def failed(self) -> list[FailedSeal]:
        return list(self._failed.values())

    def stop_retrying(self) -> None:
        """The sink is stopping: a seal that fails from now on is reported, not retried."""
        self._stopping = True

    def shutdown(self) -> None:
        """Close the seal thread's manifest connection, then the thread."""
        self._pool.submit(self._close_manifest).result()
        self._pool.shutdown()

    def _close_manifest(self) -> None:
        manifest = getattr(self._local, "manifest", None)
        if manifest is not None:
            manifest.close()
            self._local.manifest = None

    def _retry(self, segment_id: str) -> None:
        failed = self._failed.get(segment_id)
        if failed is None:
            return
        if failed.retry is not None:
            failed.retry.cancel()
            failed.retry = None
        self.start(failed.segment)

    async def _seal(self, segment: OpenSegment) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._pool, self._seal_in_thread, segment)
            if outcome.bad_lines:
                log.warning("%d torn line(s) in %s kept in _rejected", len(outcome.bad_lines), segment.id)
                self.stats.torn_lines += len(outcome.bad_lines)
                await self._keep_torn(segment, outcome.bad_lines)
            await loop.run_in_executor(self._pool, _unlink_durably, segment.path)
        except Exception as err:  # noqa: BLE001 - the open file is kept and sealed again later
            self._failed_once(segment, err)
            return
        self._failed.pop(segment.id, None)
        self.stats.segments_sealed += 1
        self._on_sealed(segment, outcome)

    def _failed_once(self, segment: OpenSegment, err: Exception) -> None:
        failed = self._failed.get(segment.id)
        attempts = failed.attempts + 1 if failed else 1
        message = f"{type(err).__name__}: {err}"
        self._failed[segment.id] = failed = FailedSeal(segment, message, attempts)
        self.stats.seal_errors += 1
        self.stats.last_error = f"sealing {segment.id} failed: {message}"
        if self._stopping:
            log.error("sealing %s failed at stop: %s; its records stay in %s", segment.id, message, segment.path)
            return
        delay = retry_delay(attempts, RETRY_BASE, RETRY_MAX)
        log.error("sealing %s failed (attempt %d, next in %.1f s); its records stay in %s",
                  segment.id, attempts, delay, segment.path, exc_info=err)
        failed.retry = asyncio.get_running_loop().call_later(delay, self._retry, segment.id)

    def _seal_in_thread(self, segment: OpenSegment) -> SealOutcome:
        failpoint("seal")
        try:
            outcome = seal_segment(self.data_dir, segment.stream, segment.id, segment.path, self.compression,
                                   self.compression_level, segment.tally)
        except SealError as err:
            log.error("%s; sealing it again, checking every line", err)
            outcome = seal_segment(self.data_dir, segment.stream, segment.id, segment.path, self.compression,
                                   self.compression_level)
        if self._add_row is not None:
            self._add_row(outcome.row)
            return outcome
        manifest = getattr(self._local, "manifest", None)
        if manifest is None:
            manifest = self._local.manifest = Manifest(self.data_dir.root)
        manifest.add_sealed(outcome.row)
        return outcome


def _unlink_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
