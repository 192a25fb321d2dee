"""Lease renewal: keeping the archive alive on a grid that collects garbage.

A Tahoe storage server with garbage collection on deletes a share once all its leases have
expired; a lease lasts 31 days and an upload adds the first. So every file and directory this
sink made is renewed about every ``lease_renew_every`` (7 days by default), which keeps each
share's expiry at least 24 days ahead. The work is rolling and rate-limited: each run renews
the targets due, oldest first, but at most twice its share of a full pass (the targets over
``every / run_interval`` runs), so a backlog after a long stop is caught up within a few days
instead of in one burst. Renewal needs only read or verify caps; leases belong to the gateway
node's secret (``private/secret``): renewing through another node adds a second lease.

Stores without leases (a filesystem) have nothing to renew.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from archiver.common.redaction import redact
from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import LeaseTarget, Manifest
from archiver.format.store_layout import published_dir
from archiver.store.base import LeaseRenewal, Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    every: float = 7 * 86400.0  # each target renewed about this often
    run_interval: float = 3600.0  # how often the rolling job runs


def lease_summary(targets: list[LeaseTarget], every: float, now: float) -> dict[str, Any]:
    """What status shows: how many targets, how many are due, the oldest renewal (an upload
    counts as one), and how many have no known time at all (due at once)."""
    known = [target.renewed_at for target in targets if target.renewed_at > 0]
    return {
        "objects": len(targets),
        "due": sum(1 for target in targets if now - target.renewed_at >= every),
        "oldest_renewal": format_ts(min(known)) if known else None,
        "never_renewed": len(targets) - len(known),
    }


class LeaseRenewer:
    """Renews the leases of everything the manifest knows; runs on a scheduler thread."""

    def __init__(
        self,
        data_dir: DataDir,
        sink_id: str,
        store: Callable[[], Store],
        settings: LeaseSettings = LeaseSettings(),
        clock: Callable[[], float] = time.time,
        stopping: threading.Event | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.sink_id = sink_id
        self.settings = settings
        self._store = store
        self._clock = clock
        self._stopping = stopping or threading.Event()
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def targets(self, manifest: Manifest) -> list[LeaseTarget]:
        """Every target, least recently renewed first; the published manifest's files are
        renewed all at once, from their directory: each publish adds new ones."""
        targets = manifest.lease_targets()
        if manifest.get_meta("published_at"):
            path = published_dir(self.sink_id)
            key = f"path:{path}"
            renewed = manifest.renewed_at(key)
            targets.append(LeaseTarget("published", path, None, path, renewed or 0.0))
        return sorted(targets, key=lambda target: (target.renewed_at, target.kind, target.name))

    def status(self) -> dict[str, Any]:
        manifest = Manifest(self.data_dir.root)
        try:
            return lease_summary(self.targets(manifest), self.settings.every, self._clock())
        finally:
            manifest.close()

    def renew_due(self) -> dict[str, int]:
        """One rolling run: the due targets, oldest first, at most the run's budget."""
        return self._run(due_only=True)

    def renew_all(self, progress: Callable[[LeaseTarget], None] = lambda target: None) -> dict[str, int]:
        """A full pass now, whatever is due (``archiver leases renew``)."""
        return self._run(due_only=False, progress=progress)

    def _run(self, due_only: bool, progress: Callable[[LeaseTarget], None] = lambda target: None) -> dict[str, int]:
        store = self._store()
        if not isinstance(store, LeaseRenewal):
            return {"renewed": 0, "failed": 0, "due": 0, "objects": 0}
        with self._lock:
            manifest = Manifest(self.data_dir.root)
            try:
                now = self._clock()
                targets = self.targets(manifest)
                chosen = targets
                if due_only:
                    due = [target for target in targets if now - target.renewed_at >= self.settings.every]
                    chosen = due[: self._budget(len(targets))]
                renewed = failed = 0
                for target in chosen:
                    if self._stopping.is_set():
                        break
                    if self._renew(store, manifest, target):
                        renewed += 1
                    else:
                        failed += 1
                    progress(target)
                due_left = sum(1 for target in targets if now - target.renewed_at >= self.settings.every) - renewed
            finally:
                manifest.close()
        return {"renewed": renewed, "failed": failed, "due": max(0, due_left), "objects": len(targets)}

    def _budget(self, total: int) -> int:
        runs_per_pass = max(1.0, self.settings.every / self.settings.run_interval)
        return max(1, math.ceil(2 * total / runs_per_pass))

    def _renew(self, store: LeaseRenewal, manifest: Manifest, target: LeaseTarget) -> bool:
        try:
            if target.cap is not None:
                store.renew_lease_cap(target.cap, f"{target.kind} {target.name}")
            else:
                assert target.path is not None
                for _ in store.renew_leases_deep(target.path):
                    pass
        except StoreUnavailable:
            raise  # the rest would fail the same way: the next run tries again
        except StoreError as err:
            self.last_error = redact(f"lease of {target.kind} {target.name}: {err}")
            log.warning("%s", self.last_error)
            return False
        manifest.lease_renewed(target, self._clock())
        return True
