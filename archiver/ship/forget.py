"""Forgetting what the retention policy drops: the manifest row, the stored file, the local copy.

Each segment is first marked forgotten in a write transaction of its own (the row then says
what is left to remove), and only then unlinked from its directory in the store and its local
copy deleted, so a run that stops halfway leaves rows the next run finishes, never a row that
still lists a file already gone. The sink's jobs leave forgotten rows alone
(``Manifest.update_segment``), so running beside the sink is safe. On Tahoe, unlinking frees
nothing at once: the shares go when their leases expire, which this sink no longer renews.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from posixpath import dirname
from typing import Callable

from archiver.common.redaction import redact
from archiver.common.units import format_ts, ts_epoch
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.store_layout import index_path, store_path
from archiver.ship.retention import Candidate, RetentionPolicy, to_forget
from archiver.store.base import Freezing, Frozen, NotFound, Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dropped:
    """A segment the policy drops, as the manifest knows it, and why."""

    row: SegmentRow
    reason: str


def dropped(manifest: Manifest, policy: RetentionPolicy, now: float) -> list[Dropped]:
    """What ``policy`` drops at ``now`` among the segments the manifest keeps, oldest first."""
    rows = {row.id: row for row in manifest.segments()}
    candidates = [Candidate(row.id, row.stream, ts_epoch(row.last_ts or row.sealed_at), row.state) for row in rows.values()]
    return [Dropped(rows[forget.segment.id], forget.reason) for forget in to_forget(candidates, policy, now)]


class Forgetter:
    """Forgets segments of one data dir; ``store`` is None for a sink that never had one."""

    def __init__(self, data_dir: DataDir, store: Store | None, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = data_dir
        self.store = store
        self._clock = clock

    def forget(self, segments: list[Dropped]) -> dict[str, int]:
        """Mark ``segments`` forgotten, then remove the files of every forgotten segment not
        yet removed (this run's, and any an earlier run left). A store that is down ends the
        run: what is left is removed next time."""
        forgotten = removed = failed = 0
        manifest = Manifest(self.data_dir.root)
        try:
            for segment in segments:
                if manifest.forget(segment.row.id, segment.reason, format_ts(self._clock())) is not None:
                    forgotten += 1
                    log.info("forgot %s: %s", segment.row.id, segment.reason)
            for row in manifest.forgotten_unremoved():
                if self._remove(manifest, row):
                    removed += 1
                else:
                    failed += 1
        finally:
            manifest.close()
        return {"forgotten": forgotten, "removed": removed, "failed": failed}

    def _remove(self, manifest: Manifest, row: SegmentRow) -> bool:
        """Unlink the segment and its search index from the store (at its path even when the
        manifest has none: an upload may have finished just before it was forgotten), then
        delete its local copies. The index goes too: its trigrams tell of the messages."""
        if self.store is not None:
            try:
                unlink_index(self.store, row)
                self._unlink(manifest, row.store_path or store_path(row))
            except NotFound:
                pass
            except StoreUnavailable as err:
                manifest.removed(row.id, redact(f"not yet removed from the store: {err}"))
                raise
            except StoreError as err:
                message = redact(f"not removed from the store: {err}")
                manifest.removed(row.id, message)
                log.warning("%s %s", row.id, message)
                return False
        if row.local_path:  # a row rebuilt from the store has no local copy ('' names the data dir)
            (self.data_dir.root / row.local_path).unlink(missing_ok=True)
        self.data_dir.index_path(row.stream, row.id).unlink(missing_ok=True)
        manifest.removed(row.id)
        return True

    def _unlink(self, manifest: Manifest, path: str) -> None:
        """A segment in a frozen directory is unlinked from a mutable copy of it, which the
        sink freezes again (archiver/ship/freezer.py)."""
        assert self.store is not None
        try:
            self.store.delete(path)
        except Frozen:
            if not isinstance(self.store, Freezing):
                raise
            directory = dirname(path)
            caps = self.store.thaw(directory)
            manifest.add_dir(directory, caps.write_cap, caps.read_cap, format_ts(self._clock()))
            self.store.delete(path)


def unlink_index(store: Store, row: SegmentRow) -> None:
    """Remove a segment's search index from the store, if it has one (index directories are
    never frozen)."""
    path = index_path(row)
    if path is not None:
        try:
            store.delete(path)
        except NotFound:
            pass
