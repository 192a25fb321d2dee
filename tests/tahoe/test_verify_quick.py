"""Quick verification on a real grid: Tahoe's t=check without verify finds a segment whose
shares are gone from every storage node, and no segment's data is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

import pytest

from archiver.app.grid import LocalGrid
from archiver.format.layout import DataDir
from archiver.read.reader import Archive
from archiver.store import open_store
from conftest import make_uploader, rows, seal


def test_quick_flags_a_segment_with_no_shares_left_without_reading_data(
    grid1: LocalGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seal(tmp_path / "data", {"app": 3, "web": 3})
    store = open_store(f"tahoe://{grid1.gateway_url.split('://')[1]}", make_root=True)
    assert make_uploader(tmp_path, store).upload_due()["uploaded"] == 2
    lost, kept = rows(tmp_path)
    assert lost.verify_cap is not None
    storage_index = lost.verify_cap.split(":")[2]  # URI:CHK-Verifier:<storage index>:...
    removed = 0
    for node in grid1.spec.nodes:
        shares = grid1.node_dir(node.name) / "storage" / "shares" / storage_index[:2] / storage_index
        if shares.is_dir():
            shutil.rmtree(shares)
            removed += 1
    assert removed == 1

    downloads: list[str] = []
    opened, opened_cap = store.open, store.open_cap

    def watched_open(path: str) -> BinaryIO:
        downloads.append(path)
        return opened(path)

    def watched_open_cap(cap: str, size: int, name: str = "") -> BinaryIO:
        downloads.append(name)
        return opened_cap(cap, size, name)

    monkeypatch.setattr(store, "open", watched_open)
    monkeypatch.setattr(store, "open_cap", watched_open_cap)
    archive: Archive = Archive(lambda *_: rows(tmp_path), data_dir=DataDir(tmp_path / "data"), store=lambda: store)
    report = archive.verify(quick=True)
    assert report.checked == 2 and [(p.segment, p.where) for p in report.problems] == [(lost.id, "store")]
    assert "unhealthy" in report.problems[0].problem and not downloads

    full = archive.verify()  # a read of a file with no shares is this segment's problem, not "store unreachable"
    assert [(p.segment, p.where) for p in full.problems] == [(lost.id, "store")] and kept.store_path in downloads
    store.close()
