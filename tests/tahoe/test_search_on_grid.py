"""The search index on a real grid: uploaded beside the published manifest, and used by a
reader holding only the root's read cap."""

from __future__ import annotations

from pathlib import Path

from archiver.app.grid import LocalGrid
from archiver.read.reader import store_archive
from archiver.store import HasCaps, open_store
from conftest import make_uploader
from test_search_index import opened, record, seal_records


def test_a_read_cap_reader_downloads_only_the_segment_that_may_match(grid1: LocalGrid, tmp_path: Path) -> None:
    node = grid1.gateway_url.split("://", 1)[1].rstrip("/")
    writer = open_store(f"tahoe://{node}", make_root=True)
    assert isinstance(writer, HasCaps)
    (tmp_path / "data").mkdir()
    segments = [[record(n, f"request {s}-{n} done") for n in range(5)] for s in range(3)]
    segments[2][1]["message"] = "request failed: disk full"
    seal_records(tmp_path / "data", segments)
    uploader = make_uploader(tmp_path, writer)
    assert uploader.upload_due()["uploaded"] == 3
    uploader.publish()
    read_cap = writer.caps("/").read_cap or ""
    assert read_cap.startswith("URI:DIR2-RO:")
    archive = store_archive(open_store(f"tahoe://{node}/{read_cap}"))
    seen = opened(archive)
    assert [r["message"] for r in archive.records(contains="disk full")] == ["request failed: disk full"]
    assert len(seen) == 1
