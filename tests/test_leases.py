"""The rolling lease renewal's policy, offline: what is due, oldest first, within each run's
budget, and how failures count. tests/tahoe/test_lease_renewal.py proves renewal on a real grid."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Iterator

import pytest
from fs.memoryfs import MemoryFS

from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import LeaseTarget, Manifest, SegmentRow
from archiver.ship.leases import LeaseRenewer, LeaseSettings, lease_summary
from archiver.store.base import Health, LeaseRenewal, NotFound, StoreUnavailable
from archiver.store.fs import FsStore

DAY = 86400.0
UPLOADED = 1_800_000_000.0


class LeasingStore(FsStore, LeaseRenewal):
    """A store that keeps leases, recording each renewal; ``refuse`` names caps it fails."""

    def __init__(self) -> None:
        super().__init__(MemoryFS())
        self.renewed: list[str] = []
        self.refuse: dict[str, Exception] = {}

    def _renew(self, key: str) -> Health:
        if key in self.refuse:
            raise self.refuse[key]
        self.renewed.append(key)
        return Health(healthy=True)

    def renew_lease(self, path: str) -> Health:
        return self._renew(f"path:{path}")

    def renew_lease_cap(self, cap: str, name: str = "") -> Health:
        return self._renew(cap)

    def renew_leases_deep(self, path: str = "/") -> Iterator[str]:
        self._renew(f"path:{path}")
        yield path


def archive_of(tmp_path: Path, segments: int) -> DataDir:
    """A manifest with ``segments`` uploaded segments (uploaded an hour apart), a directory
    and a root, all with read caps."""
    data = tmp_path / "data"
    data.mkdir()
    with closing(Manifest(data)) as manifest:
        manifest.set_meta("sink_id", "sinkL")
        manifest.set_meta("root_read_cap", "URI:DIR2-RO:root")
        manifest.add_dir("/app", None, "URI:DIR2-RO:app", format_ts(UPLOADED))
        manifest.lease_renewed(LeaseTarget("root", "/", "URI:DIR2-RO:root", None, 0.0), UPLOADED - 3600)
        for n in range(segments):
            segment = f"20270115T000000Z-sinkL-{n:06d}"
            manifest.add_sealed(SegmentRow(segment, "app", "sealed", "", "gzip", 1, 1, "0" * 64, 1, None, None, {},
                                           format_ts(UPLOADED)))
            manifest.update_segment(segment, state="uploaded", read_cap=f"URI:CHK:{n}",
                                    uploaded_at=format_ts(UPLOADED + n * 3600))
    return DataDir(data)


def renewer(data: DataDir, store: LeasingStore, now: list[float]) -> LeaseRenewer:
    return LeaseRenewer(data, "sinkL", lambda: store, LeaseSettings(every=7 * DAY, run_interval=3600), lambda: now[0])


def test_nothing_is_due_within_a_week_of_upload(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 5), LeasingStore(), [UPLOADED + 6 * DAY]
    assert renewer(data, store, now).renew_due() == {"renewed": 0, "failed": 0, "due": 0, "objects": 7}
    assert store.renewed == []


def test_a_backlog_is_renewed_oldest_first_within_each_runs_budget(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 200), LeasingStore(), [UPLOADED + 30 * DAY]
    leases = renewer(data, store, now)
    budget = 3  # twice its share, rounded up: 202 objects over 168 hourly runs a week
    first = leases.renew_due()
    assert first == {"renewed": budget, "failed": 0, "due": 202 - budget, "objects": 202}
    assert store.renewed == ["URI:DIR2-RO:root", "URI:DIR2-RO:app", "URI:CHK:0"]  # oldest first
    runs, due = 1, first["due"]
    while due:
        now[0] += 3600
        runs += 1
        due = leases.renew_due()["due"]
    assert sorted(store.renewed) == sorted({*store.renewed})  # each object once
    assert len(store.renewed) == 202 and runs == -(-202 // budget)
    now[0] += 3 * DAY
    assert leases.renew_due()["renewed"] == 0  # renewed ones are not due again for a week


def test_renew_all_counts_failures_and_a_store_down_stops_the_run(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 3), LeasingStore(), [UPLOADED + DAY]
    leases = renewer(data, store, now)
    store.refuse["URI:CHK:1"] = NotFound("gone")
    assert leases.renew_all() == {"renewed": 4, "failed": 1, "due": 0, "objects": 5}
    assert leases.last_error is not None and "segment 20270115T000000Z-sinkL-000001" in leases.last_error
    store.refuse["URI:CHK:0"] = StoreUnavailable("the grid is down")
    with pytest.raises(StoreUnavailable):
        leases.renew_all()


def test_the_published_manifest_is_renewed_from_its_directory_once_published(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 1), LeasingStore(), [UPLOADED + DAY]
    leases = renewer(data, store, now)
    with closing(Manifest(data.root)) as manifest:
        assert "published" not in {target.kind for target in leases.targets(manifest)}
        manifest.set_meta("published_at", format_ts(UPLOADED))
    leases.renew_all()
    assert "path:/_manifest/sinkL" in store.renewed


def test_status_says_how_many_are_due_and_the_oldest_renewal(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 3), LeasingStore(), [UPLOADED + 8 * DAY]
    with closing(Manifest(data.root)) as manifest:
        targets = renewer(data, store, now).targets(manifest)
    summary = lease_summary(targets, 7 * DAY, now[0])
    assert summary == {"objects": 5, "due": 5, "oldest_renewal": format_ts(UPLOADED - 3600), "never_renewed": 0}


def test_a_target_never_renewed_is_due_and_counted(tmp_path: Path) -> None:
    data, store, now = archive_of(tmp_path, 1), LeasingStore(), [UPLOADED + DAY]
    with closing(Manifest(data.root)) as manifest:
        manifest.add_dir("/old", None, "URI:DIR2-RO:old", "")  # no creation time known
        targets = renewer(data, store, now).targets(manifest)
    assert lease_summary(targets, 7 * DAY, now[0])["never_renewed"] == 1
    assert renewer(data, store, now).renew_due()["renewed"] == 1 and store.renewed == ["URI:DIR2-RO:old"]
