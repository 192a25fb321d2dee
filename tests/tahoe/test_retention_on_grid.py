"""`archiver forget` beside a running sink on a real 3-node grid: the segments are unlinked from
their directories, the republished manifest no longer leads readers to them, and their leases
are no longer renewed (the shares themselves stay until those leases expire)."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from posixpath import dirname, basename

import orjson

from archiver.app.grid import LocalGrid
from archiver.format.manifest import open_for_reading
from archiver.store import open_store
from conftest import Sink, archiver_cli

DAY = 86400


def test_forget_unlinks_stops_leases_and_drops_it_from_the_published_manifest(grid3: LocalGrid, tmp_path: Path) -> None:
    node = "tahoe://" + grid3.gateway_url.split("://")[1]
    data = tmp_path / "data"
    config = tmp_path / "archiver.toml"
    config.write_text(f'data_dir = "{data}"\n[retention]\nkeep = "30d"\n')
    sink = Sink(data, ["--store", node]).start()
    try:
        old = time.time() - 400 * DAY
        for n, created in enumerate([old, old + 1, time.time()]):  # a segment each
            assert sink.post("/app", f"msg=record {n}&created={created}").status_code == 200
            archiver_cli("flush", "--data-dir", str(data))
        with closing(open_for_reading(data)) as manifest:
            segments = {row.id: row for row in manifest.segments()}
            leased = {target.name for target in manifest.lease_targets() if target.kind == "segment"}
            read_cap = manifest.get_meta("root_read_cap")
        assert len(segments) == 3 and leased == set(segments)
        archive = f"{node}/{read_cap}"
        assert len(orjson.loads(archiver_cli("ls", "--json", "--archive", archive).stdout)) == 3

        result = orjson.loads(archiver_cli("forget", "-c", str(config), "--json").stdout)
        assert (result["forgotten"], result["removed"], result["failed"]) == (2, 2, 0)
        forgotten = {entry["segment"] for entry in result["segments"]}
        assert forgotten == set(sorted(segments)[:2])

        store = open_store(archive)
        try:
            for segment in segments.values():
                path = segment.store_path or ""
                assert (basename(path) in store.listdir(dirname(path))) == (segment.id not in forgotten)
        finally:
            store.close()
        with closing(open_for_reading(data)) as manifest:
            assert {target.name for target in manifest.lease_targets() if target.kind == "segment"} == leased - forgotten

        assert sink.post("/app", "msg=after forgetting").status_code == 200
        archiver_cli("flush", "--data-dir", str(data))  # uploads, and so publishes
        records = [orjson.loads(line) for line in archiver_cli("cat", "--json", "--archive", archive).stdout.splitlines()]
        assert [record["message"] for record in records] == ["record 2", "after forgetting"]
    finally:
        assert sink.stop() == 0
