"""Freezing the directories of closed periods, and thawing one for a late segment.

Tahoe rewrites a mutable directory whole on every change, and only a holder of its write cap
can repair it; an immutable directory is written once and a verify cap repairs it. So once a
period is over (an hour directory, or a day directory of an archive written before hour
directories) plus ``freeze_after``, and none of its segments is still open or waiting for
upload, its directory is replaced by an immutable one holding the same files
(``Freezing.freeze``) and the manifest records the new cap: leases renew it from then on, the
mutable one is no longer leased, and the next publish lists it.

A segment that comes late for a frozen period (a replayed buffer, a sink back after days)
thaws the directory: a mutable copy with the same files takes its place, the segment goes in,
and the next run freezes it again once the period is closed and nothing waits. Stores that
cannot freeze (a filesystem) are left as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from posixpath import basename, dirname
from typing import Callable

from archiver.common.redaction import redact
from archiver.common.units import format_ts
from archiver.format.layout import DataDir, id_stamp
from archiver.format.manifest import Manifest
from archiver.format.store_layout import levels_of, period_of, segment_dir, store_path
from archiver.ship.dirs import KnownDirs
from archiver.store.base import Freezing, Frozen, NotFound, Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


def closed_periods(known: set[str], frozen: set[str], pending: set[str], now: float, after: float) -> list[str]:
    """The directories to freeze at ``now``: period directories not frozen whose period ended
    at least ``after`` ago, holding no directory known to the sink (a day directory with hour
    directories under it stays mutable: it has at most 24 more entries, and a late segment
    would otherwise thaw two levels) and no segment still to be uploaded (``pending``), nor one
    that will make a directory in it (a day directory of the older layout, whose late segments
    now go to hour directories under it)."""
    parents = {path.rsplit("/", 1)[0] for path in known}
    waiting = {level for path in pending for level in levels_of(path)}
    chosen = []
    for path in sorted(known - frozen - waiting - parents):
        period = period_of(path)
        if period is not None and period[1] + after <= now:
            chosen.append(path)
    return chosen


def pending_dirs(manifest: Manifest, data_dir: DataDir) -> set[str]:
    """The directories segments will still be uploaded into: the sealed ones', and the open ones'."""
    dirs = {dirname(store_path(row)) for row in manifest.in_state("sealed")}
    return dirs | {segment_dir(stream, segment) for stream, segment, _ in data_dir.open_segments()}


def files_in(manifest: Manifest, path: str) -> list[str]:
    """The names of the files this sink put in the period directory ``path``: a freeze whose
    copy lacks one of them would drop it from the tree."""
    period = period_of(path)
    if period is None:
        return []
    first, end = (id_stamp(moment) for moment in period)
    return [basename(stored) for stored in manifest.stored_paths(first, end) if dirname(stored) == path]


class Freezer:
    """Freezes and thaws the uploader's directories; ``lock`` is the uploader's, taken for each
    directory, so no upload goes into a directory while it is replaced."""

    def __init__(
        self, data_dir: DataDir, dirs: KnownDirs, after: float, lock: threading.Lock,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.after = after
        self._dirs = dirs
        self._lock = lock
        self._clock = clock
        self.last_error: str | None = None

    def freeze_due(self, store: Store, manifest: Manifest, stopping: threading.Event) -> dict[str, int]:
        """Freeze every closed period's directory; a store that is down ends the run."""
        if not isinstance(store, Freezing):
            return {"frozen": 0, "failed": 0}
        known, frozen = self._dirs.known(manifest, store)
        done = failed = 0
        for path in closed_periods(known, frozen, pending_dirs(manifest, self.data_dir), self._clock(), self.after):
            if stopping.is_set():
                break
            with self._lock:
                if path in pending_dirs(manifest, self.data_dir):
                    continue  # a segment of it was sealed since the list was made
                try:
                    caps = store.freeze(path, files_in(manifest, path))
                except StoreUnavailable:
                    raise
                except NotFound:
                    self._dirs.forget(manifest, [path])  # gone from the store: made again if needed
                    continue
                except StoreError as err:
                    failed += 1
                    self.last_error = redact(f"freezing {path}: {err}")
                    log.warning("%s", self.last_error)
                    continue
                self._dirs.freeze(manifest, path, caps, format_ts(self._clock()))
            done += 1
            log.info("froze %s", path)
        return {"frozen": done, "failed": failed}

    def thaw(self, store: Store, manifest: Manifest, path: str) -> None:
        """Make the frozen directory at ``path`` writable again (the caller holds the lock)."""
        if not isinstance(store, Freezing):
            raise Frozen(f"{path} is frozen, and this store cannot thaw it")
        self._dirs.add(manifest, path, store.thaw(path), format_ts(self._clock()))
        log.info("thawed %s for a late segment: frozen again once nothing more waits for it", path)
