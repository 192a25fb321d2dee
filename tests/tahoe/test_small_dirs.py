"""Small directories on a real grid: segments land in hour directories, a closed hour's
directory is frozen into an immutable one (seen through Tahoe's own t=json), still read,
verified, repaired and leased from the root; a late segment thaws it and it is frozen again;
another sink and `forget` find it frozen and thaw it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from posixpath import dirname
from typing import Any

import pytest
import requests

from archiver.app.grid import LocalGrid
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest
from archiver.format.store_layout import DIR_ENTRIES_MAX
from archiver.read.reader import store_archive
from archiver.ship.forget import Dropped, Forgetter
from archiver.ship.leases import LeaseRenewer
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.store import open_store
from archiver.store.tahoe import TahoeStore
from conftest import archiver_cli, make_uploader, rows
from timed_segments import sealed_segment

HOUR = 3600.0
PER_HOUR = 10


def node(grid: LocalGrid, cap: str, path: str) -> tuple[str, dict[str, Any]]:
    """What the gateway's web API says of ``path`` under ``cap``: (kind, node)."""
    answer = requests.get(f"{grid.gateway_url}/uri/{cap}{path}?t=json", timeout=30)
    answer.raise_for_status()
    kind, data = answer.json()
    return kind, data


def records(url: str) -> int:
    """The records a holder of the root read cap reads (through the published manifest)."""
    with store_archive(open_store(url)) as archive:
        return sum(1 for _ in archive.records())


def test_hour_directories_are_frozen_when_closed_and_thawed_for_late_segments(
    grid1: LocalGrid, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="archiver")
    data = tmp_path / "data"
    data.mkdir()
    host = grid1.gateway_url.split("://")[1]
    store = open_store(f"tahoe://{host}", make_root=True)
    assert isinstance(store, TahoeStore)
    root = store.caps("/")
    assert root.read_cap and root.write_cap
    with closing(Manifest(data)) as manifest:
        manifest.set_meta("root_read_cap", root.read_cap)
    first_hour = (time.time() // HOUR - 5) * HOUR
    for n in range(2 * PER_HOUR):  # two closed hours, a segment every 4 minutes
        sealed_segment(data, "app", first_hour + (n // PER_HOUR) * HOUR + (n % PER_HOUR) * 240, n)
    current = sealed_segment(data, "app", time.time(), 99)
    uploader = make_uploader(tmp_path, store)
    assert uploader.upload_due()["uploaded"] == 2 * PER_HOUR + 1

    per_dir = Counter(dirname(row.store_path or "") for row in rows(tmp_path))
    hours = sorted(path for path in per_dir if path != dirname(rows(tmp_path)[-1].store_path or ""))
    assert len(hours) == 2 and all(per_dir[hour] == PER_HOUR for hour in hours)
    for path, count in per_dir.items():
        assert len(store.listdir(path)) == count <= DIR_ENTRIES_MAX
        assert all(name.isdigit() and len(name) == 2 for name in store.listdir(dirname(path)))  # a day holds hours
    with closing(Manifest(data)) as manifest:
        mutable_caps = {path: manifest.dirs()[path]["read_cap"] for path in hours}
        mutable_write_caps = {manifest.dirs()[path]["write_cap"] for path in hours}
    assert all(node(grid1, root.read_cap, hour)[1]["mutable"] for hour in hours)

    # The two closed hours are frozen; the open one is not.
    assert uploader.freeze_due() == {"frozen": 2, "failed": 0}
    for hour in hours:
        kind, frozen = node(grid1, root.read_cap, hour)
        assert kind == "dirnode" and frozen["mutable"] is False and frozen["ro_uri"].startswith("URI:DIR2-CHK:")
        assert "rw_uri" not in node(grid1, root.write_cap, hour)[1]
        assert len(frozen["children"]) == PER_HOUR
    current_dir = dirname(next(r for r in rows(tmp_path) if r.id == current.id).store_path or "")
    assert node(grid1, root.read_cap, current_dir)[1]["mutable"] is True

    # Read, verified and repaired from the root read cap, through the frozen directories.
    uploader.publish()
    url = f"tahoe://{host}/{root.read_cap}"
    assert records(url) == 2 * PER_HOUR + 1
    verified = archiver_cli("verify", "--repair", "--archive", url)
    assert verified.returncode == 0
    for hour in hours:
        health = store.check(hour, verify=True, repair=True)
        assert health.healthy, health.summary

    # Leases: the frozen directories' caps are renewed, the mutable ones they replaced are not.
    renewer = LeaseRenewer(DataDir(data), "sinkA", lambda: store)
    with closing(Manifest(data)) as manifest:
        leased = {target.name: target.cap for target in renewer.targets(manifest) if target.kind == "dir"}
    for hour in hours:
        assert leased[hour] == node(grid1, root.read_cap, hour)[1]["ro_uri"] != mutable_caps[hour]
    assert not set(mutable_caps.values()) & {target for target in leased.values()}
    assert renewer.renew_all()["failed"] == 0

    # A late segment for a frozen hour: the directory is thawed, the segment stored and read.
    late = sealed_segment(data, "app", first_hour + 30, 100)
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    thawed = node(grid1, root.read_cap, hours[0])[1]
    assert thawed["mutable"] is True and len(thawed["children"]) == PER_HOUR + 1
    uploader.publish()
    assert records(url) == 2 * PER_HOUR + 2
    assert uploader.freeze_due() == {"frozen": 1, "failed": 0}  # frozen again, with the newcomer
    refrozen = node(grid1, root.read_cap, hours[0])[1]
    assert refrozen["mutable"] is False and f"{late.id}.jsonl.gz" in refrozen["children"]

    # Another sink on the root, which never knew the hour was frozen, stores its late segment.
    other = tmp_path / "other"
    other.mkdir()
    other_store = open_store(f"tahoe://{host}/{root.write_cap}")
    stranger = sealed_segment(other, "app", first_hour + 60, 1, sink_id="sinkB")
    uploader_b = Uploader(DataDir(other), "sinkB", lambda: other_store, UploadSettings())
    assert uploader_b.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    children = node(grid1, root.read_cap, hours[0])[1]["children"]
    assert f"{stranger.id}.jsonl.gz" in children and f"{late.id}.jsonl.gz" in children

    assert uploader_b.freeze_due()["frozen"] == 1  # that sink freezes it again

    # Forget unlinks from a frozen directory by thawing it; the sink freezes it again.
    with closing(Manifest(data)) as manifest:
        row = next(r for r in manifest.segments() if r.id == late.id)
    assert Forgetter(DataDir(data), store).forget([Dropped(row, "test")])["removed"] == 1
    assert f"{late.id}.jsonl.gz" not in node(grid1, root.read_cap, hours[0])[1]["children"]
    assert uploader.freeze_due()["frozen"] == 1
    assert node(grid1, root.read_cap, hours[0])[1]["mutable"] is False

    # No write cap of a directory, mutable or thawed, in the log or the published manifest.
    uploader.publish()
    published = b"".join(store.read_bytes(path) for path in store.walk_files("/_manifest"))
    assert b"URI:DIR2-CHK:" in published and b"URI:DIR2:" not in published
    write_caps = {root.write_cap, *mutable_write_caps}
    for manifest_dir in (data, other):
        with closing(Manifest(manifest_dir)) as manifest:
            write_caps |= {caps["write_cap"] for caps in manifest.dirs().values() if caps["write_cap"]}
    assert len(write_caps) > 2 and not [cap for cap in write_caps if cap in caplog.text]
    uploader_b.close()
    uploader.close()
