"""Reading back: exact filters, bounded memory, restore, verify, pruned segments from the store."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import pty
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from fs.osfs import OSFS

from archiver import open_archive
from archiver.app.cli import main as cli_main
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.record import Context, encode_record
from archiver.format.store_layout import store_path
from archiver.ingest.decode.jsonbody import json_record
from archiver.read.rebuild import rebuild_manifest
from archiver.read.reader import Archive
from archiver.ship.forget import Dropped, Forgetter
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.store import FsStore, Health, HealthCheck, Store
from conftest import age_open_period, archiver_cli, peak_rss_growth
from minimal_store import BACKENDS, make_store

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
    from archiver.spool.sealing import seal_segment

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
    store = make_store("osfs", tmp_path / "store")
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
    store.delete(rows[1].store_path)
    report = open_archive(archive_dir).verify()
    found = {(p.segment, p.where) for p in report.problems}
    assert found == {(rows[0].id, "local"), (rows[1].id, "store")}, report.problems
    cli = archiver_cli("verify", "--data-dir", str(archive_dir), check=False)
    assert cli.returncode == 1 and b"2 problem(s)" in cli.stdout


def sealed_files(data_dir: Path) -> dict[str, bytes]:
    """{store path: bytes} of every sealed segment's local file, as the sink wrote it."""
    return {
        (row.store_path or store_path(row)).lstrip("/"): (data_dir / row.local_path).read_bytes()
        for row in Manifest(data_dir).segments()
    }


def upload_and_prune(data_dir: Path, store: Store) -> Store:
    """Upload every sealed segment to ``store``, then prune the local copies."""
    uploader = Uploader(DataDir(data_dir), "sinkR", lambda: store, UploadSettings(keep_local=0))
    assert uploader.upload_due()["failed"] == 0
    uploader.verify_due()
    assert uploader.prune_due()["pruned"] == len(list(Manifest(data_dir).segments()))
    assert not list((data_dir / "spool" / "sealed").rglob("*.gz"))
    return store


def restored_files(dest: Path) -> dict[str, bytes]:
    return {str(path.relative_to(dest)): path.read_bytes() for path in dest.rglob("*") if path.is_file()}


@pytest.fixture(params=BACKENDS)
def opened_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store of each backend, which a data dir whose manifest names any store URL opens."""
    store = make_store(request.param, tmp_path / "store")
    monkeypatch.setattr("archiver.store.open_store", lambda url, **options: store)
    return store


def test_pruned_segments_are_read_from_the_store(archive_dir: Path, tmp_path: Path, opened_store: Store) -> None:
    originals = sealed_files(archive_dir)
    store = upload_and_prune(archive_dir, opened_store)
    Manifest(archive_dir).set_meta("store_url", "any://store")
    archive = open_archive(archive_dir)
    assert messages(archive.records()) == [r["message"] for r in SAMPLE]

    archive.restore(tmp_path / "restored")  # no local copy left: every byte comes from the store
    assert restored_files(tmp_path / "restored") == originals
    assert archive.verify().ok

    row = archive.segments(stream="audit")[0]
    store.put(row.store_path, io.BytesIO(gzip.compress(b'{"forged": true}\n')))
    with pytest.raises(ValueError, match="does not match its sha256"):
        open_archive(archive_dir).restore(tmp_path / "again", stream="audit")
    assert restored_files(tmp_path / "again") == {}


def test_verify_reports_a_sealed_segment_missing_everywhere(archive_dir: Path) -> None:
    """Sealed, never uploaded, and its local file gone: the data is lost, and verify says so."""
    lost = open_archive(archive_dir).segments(stream="app")[1]
    (archive_dir / lost.local_path).unlink()
    report = open_archive(archive_dir).verify()
    assert report.checked == 3
    assert [(p.segment, p.where) for p in report.problems] == [(lost.id, "local")]
    assert "missing" in report.problems[0].problem
    cli = archiver_cli("verify", "--data-dir", str(archive_dir), check=False)
    assert cli.returncode == 1, cli.stdout
    assert f"{lost.id}  local: missing".encode() in cli.stdout and b"1 problem(s)" in cli.stdout
    listing = archiver_cli("verify", "--json", "--data-dir", str(archive_dir), check=False)
    assert listing.returncode == 1 and orjson.loads(listing.stdout.splitlines()[-1])["problems"][0]["segment"] == lost.id
    cat = archiver_cli("cat", "--json", "--data-dir", str(archive_dir), check=False)
    assert cat.returncode == 1 and lost.id.encode() in cat.stderr and b"Traceback" not in cat.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_does_not_call_missing_what_was_uploaded_and_pruned_meanwhile(archive_dir: Path, tmp_path: Path, backend: str) -> None:
    """A running sink may upload and prune a segment between verify's read of the manifest
    and its look at the spool: the manifest, read again, finds it in the store."""
    before = list(Manifest(archive_dir).segments())
    store = upload_and_prune(archive_dir, make_store(backend, tmp_path / "store"))
    reads = [before]

    def rows(stream: str | None, since: str | None, until: str | None) -> list[Any]:
        return reads.pop() if reads else list(Manifest(archive_dir).segments())

    report = Archive(rows, data_dir=DataDir(archive_dir), store=lambda: store).verify()
    assert report.checked == 3 and report.ok, report.problems
    store.delete(before[0].store_path or store_path(before[0]))
    report = Archive(rows, data_dir=DataDir(archive_dir), store=lambda: store).verify()
    assert [(p.segment, p.where) for p in report.problems] == [(before[0].id, "store")]


class ThinGrid(FsStore, HealthCheck):
    """A local store whose health check answers as a grid where each file reaches 2 servers."""

    def check(self, path: str, *, verify: bool = True, repair: bool = False) -> Health:
        return Health(healthy=True, happiness=2, summary="Healthy")


def write_config(path: Path, store_dir: Path, shares_happy: int) -> Path:
    path.write_text(f'data_dir = "data"\n[store]\nurl = "osfs://{store_dir}"\nshares_happy = {shares_happy}\n')
    return path


def test_a_config_file_brings_its_store_and_shares_happy(
    archive_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data dir's manifest names no store here: only the config says where the pruned
    segments are and how happy the grid must be."""
    upload_and_prune(archive_dir, make_store("osfs", tmp_path / "store"))
    happy3 = write_config(tmp_path / "happy3.toml", tmp_path / "store", 3)
    happy2 = write_config(tmp_path / "happy2.toml", tmp_path / "store", 2)
    everything = [r["message"] for r in SAMPLE]

    archive = open_archive(happy3)
    assert archive.data_dir is not None and archive.data_dir.root == archive_dir
    assert archive.shares_happy == 3 and messages(archive.records()) == everything
    assert archive.verify().ok  # a plain directory store has no health to check
    listing = orjson.loads(archiver_cli("ls", "--json", "-c", str(happy3)).stdout)
    assert [row["state"] for row in listing] == ["pruned"] * 3
    out = archiver_cli("cat", "--json", "-c", str(happy3)).stdout
    assert [orjson.loads(line)["message"] for line in out.splitlines()] == everything
    assert archiver_cli("verify", "-c", str(happy3), check=False).returncode == 0
    assert archiver_cli("verify", "--data-dir", str(archive_dir), check=False).returncode == 1  # no store known

    monkeypatch.setattr("archiver.store.open_store", lambda url, **options: ThinGrid(OSFS(str(tmp_path / "store"))))
    report = open_archive(happy3).verify()
    assert len(report.problems) == 3 and all("count-happiness 2 < shares.happy 3" in p.problem for p in report.problems)
    assert open_archive(happy2).verify().ok
    thin = CliRunner().invoke(cli_main, ["verify", "-c", str(happy3)])
    assert thin.exit_code == 1 and "count-happiness 2 < shares.happy 3" in thin.output, thin.output
    enough = CliRunner().invoke(cli_main, ["verify", "-c", str(happy2)])
    assert enough.exit_code == 0 and "3 segment(s) checked, 0 problem(s)" in enough.output, enough.output


def test_cli_restore_is_byte_identical_and_quiet(archive_dir: Path, tmp_path: Path) -> None:
    """One segment only in the store, one uploaded with its local copy, one sealed and not
    uploaded: all come back as the sink sealed them. Not on a terminal, success prints nothing."""
    store = make_store("osfs", tmp_path / "store")
    assert Uploader(DataDir(archive_dir), "sinkR", lambda: store, UploadSettings(keep_local=0)).upload_due()["uploaded"] == 3
    Manifest(archive_dir).set_meta("store_url", f"osfs://{tmp_path / 'store'}")
    write_archive(archive_dir, [{"created": T0 + 70, "level": "INFO", "logger": "app.web", "message": "late"}])
    originals = sealed_files(archive_dir)
    assert len(originals) == 4
    gone = open_archive(archive_dir).segments(stream="app")[0]
    (archive_dir / gone.local_path).unlink()

    result = archiver_cli("restore", str(tmp_path / "out"), "--data-dir", str(archive_dir))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert restored_files(tmp_path / "out") == originals
    result = archiver_cli("restore", str(tmp_path / "audit"), "--data-dir", str(archive_dir), "--stream", "audit")
    assert result.returncode == 0
    assert restored_files(tmp_path / "audit") == {k: v for k, v in originals.items() if k.startswith("audit/")}

    on_terminal, stderr = restore_on_a_terminal(tmp_path / "tty", archive_dir)
    assert (on_terminal.returncode, on_terminal.stdout) == (0, b"")
    assert "restored 4 segment(s), " in stderr and f" into {tmp_path / 'tty'}" in stderr, stderr
    assert restored_files(tmp_path / "tty") == originals


def restore_on_a_terminal(dest: Path, data_dir: Path) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """`archiver restore` with its stderr on a pseudo-terminal (where the bar and the summary go)."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "archiver", "restore", str(dest), "--data-dir", str(data_dir)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "TERM": "xterm"}) as proc:
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        assert proc.stdout is not None
        out = proc.stdout.read()
        code = proc.wait(60)
    os.close(leader)
    return subprocess.CompletedProcess(command, code, out, None), seen.decode(errors="replace")


def test_cli_ls_and_cat_take_relative_times(tmp_path: Path) -> None:
    now = time.time()
    write_archive(
        tmp_path / "data",
        [{"created": now - 3 * 3600, "message": "three hours ago"}, {"created": now - 3600, "message": "an hour ago"}],
        RotationPolicy(10**9, 1, 3600),  # one segment each
    )
    data = ["--data-dir", str(tmp_path / "data")]

    def ls(*args: str) -> list[int]:
        return [row["records"] for row in orjson.loads(archiver_cli("ls", "--json", *data, *args).stdout)]

    def cat(*args: str) -> list[str]:
        return [orjson.loads(line)["message"] for line in archiver_cli("cat", "--json", *data, *args).stdout.splitlines()]

    assert ls() == [1, 1] and ls("--since", "2h") == [1] and ls("--since", "4h") == [1, 1] and ls("--since", "30m") == []
    assert cat("--since", "2h") == ["an hour ago"]
    assert cat("--until", "2h") == ["three hours ago"]
    assert cat("--since", "4h", "--until", "30m") == ["three hours ago", "an hour ago"]
    assert cat("--since", "1d", "--until", "90m") == ["three hours ago"]
    classic = archiver_cli("cat", *data, "--since", "120m").stdout.decode()
    assert classic.endswith(" an hour ago\n") and classic.count("\n") == 1


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["published", "walk"])
def test_a_lost_manifest_is_rebuilt_from_the_store(archive_dir: Path, tmp_path: Path, backend: str, source: str) -> None:
    """From the published manifest, or (none left) by walking the tree and reading every segment back."""
    store = make_store(backend, tmp_path / "store")
    Manifest(archive_dir).set_meta("sink_id", "sinkR")
    uploader = Uploader(DataDir(archive_dir), "sinkR", lambda: store, UploadSettings(keep_local=0))
    assert uploader.upload_due()["uploaded"] == 3
    uploader.publish()
    if source == "walk":
        store.delete("/_manifest")
    assert rebuild_manifest(tmp_path / "rebuilt", store) == {"sink_id": "sinkR", "segments": 3, "source": source}
    kept = ("id", "stream", "store_path", "sha256", "records", "first_ts", "last_ts", "stored_bytes")
    wanted = [{key: getattr(row, key) for key in kept} for row in Manifest(archive_dir).segments()]
    assert [{key: getattr(row, key) for key in kept} for row in Manifest(tmp_path / "rebuilt").segments()] == wanted
    rebuilt = Archive(lambda *query: list(Manifest(tmp_path / "rebuilt").segments()), store=lambda: store)
    assert messages(rebuilt.records()) == [r["message"] for r in SAMPLE] and rebuilt.verify().ok


def published_sink(archive_dir: Path, store: Store) -> tuple[Store, Uploader]:
    """Sink "sinkR" of ``archive_dir`` with its three segments uploaded, published and pruned."""
    with closing(Manifest(archive_dir)) as manifest:
        manifest.set_meta("sink_id", "sinkR")
    uploader = Uploader(DataDir(archive_dir), "sinkR", lambda: store, UploadSettings(keep_local=0))
    assert uploader.upload_due()["uploaded"] == 3
    uploader.publish()
    return store, uploader


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rebuild_that_walks_finds_what_was_uploaded_after_the_last_publish(
    archive_dir: Path, tmp_path: Path, backend: str,
) -> None:
    """A host lost between an upload and its publish left a segment the published manifest does
    not list: --walk finds it in the tree and reads it back."""
    store, uploader = published_sink(archive_dir, make_store(backend, tmp_path / "store"))
    write_archive(archive_dir, [{"created": T0 + 3600, "message": "uploaded, never published"}])
    assert uploader.upload_due()["uploaded"] == 1

    assert rebuild_manifest(tmp_path / "published", store)["segments"] == 3
    walked = rebuild_manifest(tmp_path / "walked", store, walk=True)
    assert walked == {"sink_id": "sinkR", "segments": 4, "source": "published and the tree"}

    def rows(*query: Any) -> list[SegmentRow]:
        with closing(Manifest(tmp_path / "walked")) as manifest:
            return list(manifest.segments())

    rebuilt = Archive(rows, store=lambda: store)
    assert messages(rebuilt.records()) == [r["message"] for r in SAMPLE] + ["uploaded, never published"]
    assert rebuilt.verify().ok


def test_a_rebuild_that_walks_leaves_a_forgotten_segment_forgotten(archive_dir: Path, tmp_path: Path) -> None:
    """Forget published its tombstone but could not unlink the file: the walk must not bring it back."""
    store, uploader = published_sink(archive_dir, make_store("osfs", tmp_path / "store"))
    age_open_period(archive_dir)
    uploader.publish()  # closes the period: a forgotten segment listed in a closed file gets a tombstone
    with closing(Manifest(archive_dir)) as manifest:
        gone = next(iter(manifest.segments()))
    kept_bytes = store.read_bytes(gone.store_path or "")
    assert Forgetter(DataDir(archive_dir), store).forget([Dropped(gone, "test")])["forgotten"] == 1
    uploader.publish()
    store.put(gone.store_path or "", io.BytesIO(kept_bytes))  # as if the unlink had failed

    assert rebuild_manifest(tmp_path / "walked", store, walk=True)["segments"] == 2
    with closing(Manifest(tmp_path / "walked")) as manifest:
        assert gone.id not in {row.id for row in manifest.segments()}


def test_a_rebuild_that_fails_on_an_unreadable_segment_leaves_nothing_and_runs_again(archive_dir: Path, tmp_path: Path) -> None:
    store, uploader = published_sink(archive_dir, make_store("osfs", tmp_path / "store"))
    [first, *_] = rows_of(archive_dir)
    broken = (first.store_path or "").replace(first.id, "20260101T000000Z-sinkR-999999")
    store.put(broken, io.BytesIO(b"not gzip"))  # uploaded after the last publish, and unreadable now

    with pytest.raises(OSError):  # gzip's BadGzipFile here; on a grid, the error of a segment it cannot serve
        rebuild_manifest(tmp_path / "rebuilt", store, walk=True)
    assert not (tmp_path / "rebuilt" / Manifest.FILENAME).exists()
    assert [p.name for p in (tmp_path / "rebuilt").iterdir()] == []
    store.delete(broken)
    assert rebuild_manifest(tmp_path / "rebuilt", store, walk=True)["segments"] == 3
    assert len(rows_of(tmp_path / "rebuilt")) == 3


def rows_of(data_dir: Path) -> list[SegmentRow]:
    with closing(Manifest(data_dir)) as manifest:
        return list(manifest.segments())
