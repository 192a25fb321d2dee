"""A data dir and store written by archiver before manifest schema 4 and published format 2
(tests/fixtures/v1, made by its make.sh) keep opening, reading, verifying and migrating. Each
test works on a fresh copy under tmp_path: the fixture's manifest names its store by the
absolute path it was made at, so each copy is given its own store by a config file."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from archiver.format.manifest import SCHEMA_VERSION, Manifest
from conftest import age_open_period, archiver_cli, low_port

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1"
SINK_ID = "v1host"
REJECTED = "rejected: invalid JSON: invalid JSON: Unterminated string starting at: line 1 column 13 (char 12)"
# What make.sh posted: (stream, level, message) in the order `cat` gives them.
RECORDS = [
    ("app", "INFO", "app started"),
    ("app", "WARNING", "disk at 91%"),
    ("app", "ERROR", "payment failed: timeout"),
    ("audit", "INFO", "alice logged in"),
    ("audit", "INFO", "bob changed a password"),
    ("app", "DEBUG", "cache warmed"),
    ("app", "CRITICAL", "out of memory"),
    ("billing", "INFO", "invoice 7 sent"),
    ("_rejected", "ERROR", REJECTED),
]
# Segment id -> (stream, state, compression, records): run 1 verified and pruned, run 2 uploaded.
SEGMENTS = {
    "20261202T020335Z-v1host-000000": ("app", "pruned", "gzip", 3),
    "20261202T020335Z-v1host-000001": ("audit", "pruned", "gzip", 2),
    "20261202T020335Z-v1host-000002": ("_rejected", "pruned", "gzip", 1),
    "20261202T020350Z-v1host-000003": ("app", "uploaded", "zstd", 2),
    "20261202T020350Z-v1host-000004": ("billing", "uploaded", "zstd", 1),
}


@dataclass
class V1Copy:
    data: Path
    store: Path
    config: Path

    @property
    def store_url(self) -> str:
        return f"osfs://{self.store}"


@pytest.fixture
def v1(tmp_path: Path) -> V1Copy:
    copy = V1Copy(tmp_path / "data", tmp_path / "store", tmp_path / "archiver.toml")
    shutil.copytree(FIXTURE / "data", copy.data)
    shutil.copytree(FIXTURE / "store", copy.store)
    copy.data.chmod(0o700)
    copy.config.write_text(f'data_dir = "{copy.data}"\n[store]\nurl = "{copy.store_url}"\n')
    return copy


def cat_records(*source: str) -> list[tuple[str, str, str]]:
    out = archiver_cli("cat", "--json", *source).stdout
    return [(r["stream"], r["level"], r["message"]) for r in map(orjson.loads, out.splitlines())]


def listed(*source: str) -> dict[str, tuple[str, str, str, int]]:
    rows = orjson.loads(archiver_cli("ls", "--json", *source).stdout)
    return {row["id"]: (row["stream"], row["state"], row["compression"], row["records"]) for row in rows}


def schema_version(data: Path) -> int:
    with closing(sqlite3.connect(data / Manifest.FILENAME)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_the_fixture_is_what_v1_wrote(v1: V1Copy) -> None:
    assert schema_version(v1.data) == 3
    assert sorted(p.name for p in (v1.store / "_manifest").iterdir()) == [f"{SINK_ID}.json"]
    assert orjson.loads((v1.store / "_manifest" / f"{SINK_ID}.json").read_bytes())["version"] == 1


def test_ls_and_cat_migrate_and_show_exactly_the_v1_records(v1: V1Copy) -> None:
    assert listed("-c", str(v1.config)) == SEGMENTS
    assert schema_version(v1.data) == SCHEMA_VERSION  # a reader with write access migrates it
    assert cat_records("-c", str(v1.config)) == RECORDS
    assert cat_records("-c", str(v1.config), "--stream", "app", "--level", "ERROR") == [
        ("app", "ERROR", "payment failed: timeout"), ("app", "CRITICAL", "out of memory")]
    assert cat_records("-c", str(v1.config), "--since", "2026-11-29T14:00:00Z", "--until", "2026-11-30") == RECORDS[5:8]


def test_verify_passes_on_the_v1_data_dir(v1: V1Copy) -> None:
    out = archiver_cli("verify", "-c", str(v1.config)).stdout.decode()
    assert out.strip().endswith("5 segment(s) checked, 0 problem(s)"), out


def test_a_data_dir_whose_store_moved_says_so(v1: V1Copy, tmp_path: Path) -> None:
    """The manifest records the store by the absolute path it had; a reader given only the
    data dir, after the store moved, fails to open it (exit 3) rather than read an empty one
    made at the old path."""
    gone = tmp_path / "moved-away"
    with closing(Manifest(v1.data)) as manifest:
        manifest.set_meta("store_url", f"osfs://{gone}")
    assert listed("--data-dir", str(v1.data)) == SEGMENTS  # listing needs no store
    result = archiver_cli("verify", "--data-dir", str(v1.data), check=False)
    assert result.returncode == 3 and b"does not exist" in result.stderr, result.stderr
    assert not gone.exists()
    assert archiver_cli("verify", "-c", str(v1.config)).returncode == 0


def test_a_reader_reads_the_v1_published_manifest(v1: V1Copy) -> None:
    archive = ("--archive", v1.store_url)
    assert {segment: (stream, compression, records) for segment, (stream, _, compression, records)
            in listed(*archive).items()} == {s: (stream, c, n) for s, (stream, _, c, n) in SEGMENTS.items()}
    assert cat_records(*archive) == RECORDS
    out = archiver_cli("verify", *archive).stdout.decode()
    assert out.strip().endswith("5 segment(s) checked, 0 problem(s)"), out


def test_rebuild_from_the_v1_store_gives_back_every_segment(v1: V1Copy, tmp_path: Path) -> None:
    rebuilt = tmp_path / "rebuilt"
    out = archiver_cli("manifest", "rebuild", "--data-dir", str(rebuilt), "--archive", v1.store_url).stdout
    assert out.decode().strip() == f"rebuilt 5 segment(s) of sink {SINK_ID} from the published"
    with closing(Manifest(v1.data)) as old, closing(Manifest(rebuilt)) as new:
        fields = lambda m: {r.id: (r.stream, r.sha256, r.store_path, r.first_ts, r.last_ts, r.levels)  # noqa: E731
                            for r in m.segments()}
        assert fields(new) == fields(old) and len(fields(new)) == 5
    assert cat_records("--data-dir", str(rebuilt)) == RECORDS


def test_a_sink_on_the_v1_data_dir_publishes_format_2_and_retires_format_1(v1: V1Copy, start_sink) -> None:  # type: ignore[no-untyped-def]
    """The first closed file of format 2 lists every v1 segment; then the format 1 document
    goes. (A period closes by the hour: the test ages it instead of waiting.)"""
    sink = start_sink(v1.data, "-c", str(v1.config), "--port", str(low_port()))
    assert schema_version(v1.data) == SCHEMA_VERSION
    status = orjson.loads(archiver_cli("status", "--json", "--data-dir", str(v1.data)).stdout)
    assert status["sink_id"] == SINK_ID and status["segments"]["pruned"] == 3 and status["segments"]["uploaded"] == 2
    age_open_period(v1.data)
    new = [("app", "INFO", "after the upgrade"), ("later", "ERROR", "a new stream")]
    for stream, level, message in new:
        assert sink.post(f"/{stream}", orjson.dumps({"message": message, "level": level})).status_code == 200
    archiver_cli("flush", "--data-dir", str(v1.data))
    assert sink.stop() == 0

    manifests = v1.store / "_manifest"
    assert sorted(p.name for p in manifests.iterdir()) == [SINK_ID]  # format 1 retired
    closed = sorted((orjson.loads(p.read_bytes()) for p in (manifests / SINK_ID).rglob("0*.json")),
                    key=lambda f: f["seq"])
    assert [(f["version"], f["seq"], f["prev"]) for f in closed[:1]] == [(2, 1, None)]
    assert set(SEGMENTS) <= {entry["id"] for entry in closed[0]["segments"]}  # the first lists all of v1

    for source in (("--archive", v1.store_url), ("-c", str(v1.config))):
        assert sorted(cat_records(*source)) == sorted(RECORDS + new)
    summary = orjson.loads(archiver_cli("verify", "--json", "--archive", v1.store_url).stdout.splitlines()[-1])
    assert summary["ok"] and summary["checked"] == len(SEGMENTS) + len(new)
    assert [(c["sink_id"], c["files"]) for c in summary["chains"]] == [(SINK_ID, len(closed))]
