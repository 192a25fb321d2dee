"""Group commit: every writer that wrote before an fsync round starts shares that round.

Rounds run one at a time on one "fsync" thread, so the event loop never waits on the disk. A
round makes the data of every dirty segment durable, then the new directory entries, then
closes the segments retired since the last round and hands them on to be sealed. A failed
fsync fails the waiters of its round (their records are not acknowledged) and tells the
writer, which starts new files: after a failed fsync the page cache cannot be trusted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from archiver.common.failpoints import failpoint
from archiver.spool.sealing import fsync_dir
from archiver.spool.segment import OpenSegment, SpoolStats

log = logging.getLogger(__name__)


class GroupCommit:
    """Shares fsyncs between writers; ``on_retired`` gets each retired segment once it is
    closed (synced or not), ``on_failed`` the dirty segments of a round whose fsync failed."""

    def __init__(
        self,
        stats: SpoolStats,
        on_retired: Callable[[OpenSegment], None],
        on_failed: Callable[[list[OpenSegment]], None],
    ) -> None:
        self.stats = stats
        self._on_retired = on_retired
        self._on_failed = on_failed
        self._dirty: set[OpenSegment] = set()
        self._retiring: list[OpenSegment] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._sync_requested = False
        self._round: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="archiver-fsync")

    def written(self, segment: OpenSegment) -> None:
        """``segment`` has bytes (or a directory entry) that the next round must make durable."""
        self._dirty.add(segment)

    @property
    def has_dirty(self) -> bool:
        return bool(self._dirty)

    def retire(self, segment: OpenSegment) -> None:
        """No more writes go to ``segment``: close it after the next round and hand it on."""
        self._retiring.append(segment)
        self._kick()

    async def sync(self) -> None:
        """Return once everything written before the call is durable (or raise its fsync error).
        Queued behind a round in progress, so every segment retired before it is handed on."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick()
        await waiter

    def request(self) -> None:
        """Start a round without waiting for it (the ``interval`` fsync policy)."""
        self._sync_requested = True
        self._kick()

    async def drain(self) -> None:
        """Wait for the round in progress, if any: none may outlive the thread it runs on."""
        if self._round is not None:
            await self._round

    def shutdown(self) -> None:
        self._pool.shutdown()

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
            written = [segment.size for segment in dirty]  # what this round's fdatasync covers
            started = time.monotonic()
            try:
                await loop.run_in_executor(self._pool, _sync_round, dirty, retiring)
            except Exception as err:  # noqa: BLE001 - waiters must never hang
                log.error("fsync failed, records of this round are not acknowledged: %s", err)
                self.stats.last_error = f"fsync failed: {err}"
                self._on_failed(dirty)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(err)
                for segment in retiring:  # their unacknowledged bytes are kept, never acked
                    if segment.fd >= 0:
                        os.close(segment.fd)
                        segment.fd = -1
                    self._on_retired(segment)
                continue
            finally:
                self.stats.fsync_rounds += 1
                self.stats.observe_fsync_round(time.monotonic() - started)
            for segment, size in zip(dirty, written):
                segment.durable = max(segment.durable, size)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            for segment in retiring:
                self._on_retired(segment)


def _sync_round(dirty: list[OpenSegment], retiring: list[OpenSegment]) -> None:
    """One round, on the fsync thread: data, then new directory entries, then close the retired
    files (already synced above when they were dirty)."""
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
