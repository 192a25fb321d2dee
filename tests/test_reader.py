"""Reading back: exact filters, bounded memory, restore, verify, pruned segments from the store."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path
from typing import Any

import pytest
from fs.osfs import OSFS

from archiver import open_archive
from archiver.layout import DataDir
from archiver.manifest import Manifest
from archiver.records import Context, encode_record, json_record
from archiver.rotation import RotationPolicy
from archiver.segments import SegmentWriter
from archiver.uploader import UploadSettings, Uploader
from conftest import archiver_cli, peak_rss_growth

MB = 1024 * 1024
T0 = 1_795_467_600  # 2026-11-23T21:00:00Z


def ts(offset: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(T0 + offset))


def write_archive(data_dir: Path, records: list[dict[str, Any]], policy: RotationPolicy | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        writer = SegmentWriter(DataDir(data_dir), "sinkR", policy or RotationPolicy(10**9, 4, 3600))
        await writer.start()
        for fields in records:
            stream = fields.pop("stream", "app")
            writer.write(stream, encode_record(json_record(fields, Context(stream, None, 0))), 1)
        await writer.commit()
        await writer.close()

    asyncio.run(main())


SAMPLE = [
    {"created": T0 + 0, "level": "DEBUG", "logger": "app.web", "message": "request served"},
    {"created": T0 + 10, "level": "INFO", "logger": "app.db", "message": "query ok"},
    {"created": T0 + 20, "level": "ERROR", "logger": "app.db.pool", "message": "connection lost"},
    {"created": T0 + 30, "level": "CRITICAL", "logger": "app.db", "message": "database down"},
    {"created": T0 + 40, "level": "WARNING", "logger": "worker", "message": "slow job"},
    {"created": T0 + 50, "level": "ERROR", "logger": "worker", "message": "job failed: connection lost"},
    {"created": T0 + 60, "level": "AUDIT", "logger": "audit", "message": "login", "stream": "audit"},
]


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    write_archive(tmp_path / "data", [dict(r) for r in SAMPLE])
    return tmp_path / "data"


def messages(records: Any) -> list[str]:
    return [r["message"] for r in records]


def test_filters_are_exact(archive_dir: Path) -> None:
    archive = open_archive(archive_dir)
    assert archive.streams() == ["app", "audit"]
    assert messages(archive.records(since=ts(10), until=ts(30))) == ["query ok", "connection lost"]  # [since, until)
    assert messages(archive.records(stream="app", level="error")) == ["connection lost", "database down", "job failed: connection lost"]
    assert messages(archive.records(level="AUDIT")) == ["login"]  # a custom level matches itself
    assert messages(archive.records(logger="app.db*")) == ["query ok", "connection lost", "database down"]
    assert messages(archive.records(logger="app.db")) == ["query ok", "database down"]
    assert messages(archive.records(contains="connection lost")) == ["connection lost", "job failed: connection lost"]
    assert messages(archive.records(level="ERROR", logger="worker", where=lambda r: "job" in r["message"])) == ["job failed: connection lost"]
    assert messages(archive.records(since=ts(61))) == []


def test_segments_answer_from_the_manifest(archive_dir: Path) -> None:
    archive = open_archive(archive_dir)
    rows = archive.segments(stream="app")
    assert [row.records for row in rows] == [4, 2]
    assert [row.id for row in archive.segments(since=ts(40))] == [rows[1].id, archive.segments(stream="audit")[0].id]
    for row in rows:  # nothing downloaded or opened: remove the files and ask again
        (archive_dir / row.local_path).rename(archive_dir / (row.local_path + ".away"))
    assert [row.id for row in open_archive(archive_dir).segments(stream="app", until=ts(5))] == [rows[0].id]


def test_level_counts_skip_whole_segments(archive_dir: Path) -> None:
    archive = open_archive(archive_dir)
    opened: list[str] = []
    real = archive.open_segment
    archive.open_segment = lambda row: (opened.append(row.id), real(row))[1]  # type: ignore[method-assign]
    assert messages(archive.records(level="AUDIT")) == ["login"]
    assert opened == [archive.segments(stream="audit")[0].id]


def test_cli_cat_filters_and_classic_form(archive_dir: Path) -> None:
    out = archiver_cli("cat", "--data-dir", str(archive_dir), "--level", "ERROR", "--logger", "app.*", "--grep", "lost").stdout.decode()
    assert out == f"2026-11-23 21:00:20 {'app.db.pool':>40} ERROR connection lost\n"


def test_a_gigabyte_streams_in_bounded_memory(tmp_path: Path) -> None:
    """About 1 GB of uncompressed records read back with RSS growth under 50 MB."""
    data = DataDir(tmp_path / "data")
    data.root.mkdir()
    manifest = Manifest(data.root)
    body = "x" * 4000
    per_segment, segments = 16_000, 16  # 16 x 16,000 x ~4.2 KB = ~1.07 GB
    from archiver.sealing import seal_segment

    for n in range(segments):
        source = data.open_path("big", f"20261123T21{n:02d}00Z-sinkR-{n:06d}")
        source.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "wb") as out:
            for i in range(per_segment):
                record = json_record({"created": T0 + n * per_segment + i, "message": body, "i": i}, Context("big", None, 0))
                out.write(encode_record(record))
        manifest.add_sealed(seal_segment(data, "big", source.name[:-6], source, "gzip", 1).row)
        source.unlink()
    archive = open_archive(data.root)
    assert sum(row.raw_bytes for row in archive.segments()) > 1_000_000_000
    count = 0

    def read_all() -> None:
        nonlocal count
        for _ in archive.records(stream="big"):
            count += 1

    grew = peak_rss_growth(read_all)
    print(f"read {count} records, RSS growth {grew / MB:.1f} MB")
    assert count == per_segment * segments
    assert grew < 50 * MB


def test_restore_is_byte_identical_and_verify_finds_damage(archive_dir: Path, tmp_path: Path) -> None:
    store = OSFS(str(tmp_path / "store"), create=True)
    uploader = Uploader(DataDir(archive_dir), "sinkR", lambda: store, UploadSettings(keep_local=0))
    assert uploader.upload_due()["failed"] == 0
    Manifest(archive_dir).set_meta("store_url", f"osfs://{tmp_path / 'store'}")
    archive = open_archive(archive_dir)
    restored = archive.restore(tmp_path / "restored", stream="app")
    rows = archive.segments(stream="app")
    assert [p.read_bytes() for p in restored] == [(archive_dir / r.local_path).read_bytes() for r in rows]
    assert [str(p.relative_to(tmp_path / "restored")) for p in restored] == [r.store_path.lstrip("/") for r in rows]
    assert archive.verify().ok

    local = archive_dir / rows[0].local_path
    local.write_bytes(gzip.compress(b'{"forged": true}\n'))
    store.remove(rows[1].store_path)
    report = open_archive(archive_dir).verify()
    found = {(p.segment, p.where) for p in report.problems}
    assert found == {(rows[0].id, "local"), (rows[1].id, "store")}, report.problems
    cli = archiver_cli("verify", "--data-dir", str(archive_dir), check=False)
    assert cli.returncode == 1 and b"2 problem(s)" in cli.stdout


def test_pruned_segments_are_read_from_the_store(archive_dir: Path, tmp_path: Path) -> None:
    store = OSFS(str(tmp_path / "store"), create=True)
    uploader = Uploader(DataDir(archive_dir), "sinkR", lambda: store, UploadSettings(keep_local=0))
    uploader.upload_due()
    uploader.verify_due()
    assert uploader.prune_due()["pruned"] == 3
    Manifest(archive_dir).set_meta("store_url", f"osfs://{tmp_path / 'store'}")
    assert not list((archive_dir / "spool" / "sealed").rglob("*.gz"))
    assert messages(open_archive(archive_dir).records()) == [r["message"] for r in SAMPLE]


def test_sealed_not_uploaded_and_open_segments_are_visible(tmp_path: Path) -> None:
    write_archive(tmp_path / "data", [dict(r) for r in SAMPLE[:2]])
    open_file = DataDir(tmp_path / "data").open_path("app", "20261123T220000Z-sinkR-000099")
    open_file.parent.mkdir(parents=True, exist_ok=True)
    open_file.write_bytes(encode_record(json_record({"message": "still open", "created": T0 + 99}, Context("app", None, 0))) + b'{"torn')
    archive = open_archive(tmp_path / "data")
    assert messages(archive.records()) == ["request served", "query ok"]
    assert messages(archive.records(include_open=True)) == ["request served", "query ok", "still open"]


def test_restore_refuses_a_copy_that_does_not_match(archive_dir: Path, tmp_path: Path) -> None:
    row = open_archive(archive_dir).segments(stream="audit")[0]
    (archive_dir / row.local_path).write_bytes(gzip.compress(b"{}\n"))
    with pytest.raises(ValueError, match="does not match its sha256"):
        open_archive(archive_dir).restore(tmp_path / "out", stream="audit")
    assert not list((tmp_path / "out").rglob("*.gz"))
