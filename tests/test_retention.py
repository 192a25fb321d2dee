"""Retention: the pure policy (property-tested), its config, and `archiver forget` on a
directory store, with the sink's uploader beside it."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.app.cli import main
from archiver.app.config import ConfigError, load_config
from archiver.format.layout import DataDir
from archiver.format.manifest import STATES, Manifest, SegmentRow
from archiver.format.record import Context, encode_record
from archiver.format.store_layout import index_path
from archiver.ingest.decode.jsonbody import json_record
from archiver.ship.forget import Forgetter, dropped
from archiver.ship.retention import Candidate, RetentionPolicy, to_forget
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.store import FsStore, Store, Stored, open_store
from conftest import make_uploader

DAY = 86400.0
NOW = 1_800_000_000.0
STREAMS = ("app", "audit", "tcp")

keeps = st.one_of(st.just(math.inf), st.floats(min_value=1, max_value=1000 * DAY))
candidates = st.lists(
    st.builds(
        Candidate,
        id=st.text("0123456789abcdef", min_size=4, max_size=4),
        stream=st.sampled_from(STREAMS),
        last_ts=st.floats(min_value=NOW - 2000 * DAY, max_value=NOW + DAY),
        state=st.sampled_from(STATES),
    ),
    max_size=40,
    unique_by=lambda candidate: candidate.id,
)
policies = st.builds(
    RetentionPolicy,
    keep=keeps,
    streams=st.lists(st.tuples(st.sampled_from(STREAMS), keeps), unique_by=lambda pair: pair[0]).map(tuple),
    min_segments=st.integers(0, 5),
)


@settings(max_examples=300)
@given(candidates, policies)
def test_the_policy_drops_exactly_what_is_older_than_its_streams_keep_beyond_the_floor(
    segments: list[Candidate], policy: RetentionPolicy
) -> None:
    decisions = to_forget(segments, policy, NOW)
    forgotten = {decision.segment.id for decision in decisions}
    assert len(forgotten) == len(decisions)
    for stream in STREAMS:
        kept = [s for s in segments if s.stream == stream and s.state != "forgotten"]
        newest = sorted(kept, key=lambda s: (s.last_ts, s.id), reverse=True)
        floor = newest[: policy.min_segments]
        assert not forgotten & {s.id for s in floor}, "the floor holds"
        keep, setting = policy.keep_for(stream)
        if stream in dict(policy.streams):
            assert keep == dict(policy.streams)[stream], "the stream's own keep wins"
        for segment in newest[policy.min_segments :]:
            assert (segment.id in forgotten) == (NOW - segment.last_ts > keep), "only, and all, older than keep"
    for decision in decisions:
        assert decision.segment.state != "forgotten"
        assert decision.reason.endswith(f"({policy.keep_for(decision.segment.stream)[1]})")


def test_the_default_keeps_everything_and_the_reason_says_why() -> None:
    old = [Candidate(f"s{n}", "app", NOW - 5000 * DAY + n, "pruned") for n in range(3)]
    assert to_forget(old, RetentionPolicy(), NOW) == []
    [first, second] = to_forget(old, RetentionPolicy(keep=400 * DAY, streams=(("audit", 30 * DAY),)), NOW)
    assert (first.segment.id, second.segment.id) == ("s0", "s1")  # oldest first; s2 is the floor
    assert first.reason == "last record 2013-05-08T08:00:00.000000Z is older than 400d (retention.keep)"


# -- config ------------------------------------------------------------------------------------


def test_retention_config(tmp_path: Path) -> None:
    assert load_config().retention.keep == math.inf and load_config().retention.min_segments == 1
    path = tmp_path / "a.toml"
    path.write_text('[retention]\nkeep = "400d"\nstreams = ["app=30d", "audit = forever"]\nmin_segments = 3\n')
    retention = load_config(path).retention
    assert retention.keep == 400 * DAY and retention.min_segments == 3
    assert retention.streams == (("app", 30 * DAY), ("audit", math.inf))
    env = load_config(env={"ARCHIVER_RETENTION_STREAMS": "app=12h", "ARCHIVER_RETENTION_KEEP": "forever"}).retention
    assert env.streams == (("app", 43200.0),) and env.keep == math.inf


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('keep = "soon"', "retention.keep = 'soon'"),
        ('keep = "0d"', "retention.keep must be positive"),
        ('streams = ["app"]', "'app' is not stream=keep"),
        ('streams = ["bad name=1d"]', "is not stream=keep"),
        ('streams = ["app=1d", "app=2d"]', "a stream is named twice"),
        ('streams = ["app=0s"]', "retention.streams keeps must be positive"),
        ("min_segments = -1", "retention.min_segments must be 0 or more"),
    ],
)
def test_retention_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(f"[retention]\n{toml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


# -- forget on a directory store ---------------------------------------------------------------


def seal_records(data_dir: Path, records: list[tuple[str, float]]) -> None:
    """One sealed segment per (stream, record time), with a real SegmentWriter."""
    data_dir.mkdir(exist_ok=True)

    async def main() -> None:
        writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 1, 3600))
        await writer.start()
        for n, (stream, created) in enumerate(records):
            record = json_record({"message": f"{stream}-{n}", "created": created}, Context(stream, None, 0))
            writer.write(stream, encode_record(record), 1)
            await writer.commit()
        await writer.close()

    asyncio.run(main())


def manifest_rows(data_dir: Path) -> dict[str, SegmentRow]:
    """Every row, forgotten ones too."""
    with closing(Manifest(data_dir)) as manifest:
        return {row.id: row for state in STATES for row in manifest.in_state(state)}


@pytest.fixture
def archive(tmp_path: Path) -> dict[str, Any]:
    """A data dir uploaded to an osfs store and published: app has three segments a year old
    and one from now, audit two a year old; the config keeps 30 days, audit forever."""
    now = time.time()
    seal_records(tmp_path / "data", [("app", now - 400 * DAY + n) for n in range(3)] + [("app", now)]
                 + [("audit", now - 400 * DAY + n) for n in range(2)])
    url = f"osfs://{tmp_path / 'store'}"
    store = open_store(url)
    uploader = make_uploader(tmp_path, store)
    assert uploader.upload_due()["uploaded"] == 6
    uploader.publish()
    config = tmp_path / "archiver.toml"
    config.write_text(
        f'data_dir = "data"\n[store]\nurl = "{url}"\n[retention]\nkeep = "30d"\nstreams = ["audit=forever"]\n'
    )
    return {"config": str(config), "url": url, "store": store, "data": tmp_path / "data"}


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def listed(*args: str) -> list[str]:
    return sorted(row["id"] for row in orjson.loads(cli("ls", "--json", *args).stdout))


def test_a_dry_run_lists_what_would_go_and_changes_nothing(archive: dict[str, Any]) -> None:
    before = manifest_rows(archive["data"])
    result = orjson.loads(cli("forget", "-c", archive["config"], "--dry-run", "--json").stdout)
    old_app = sorted(row.id for row in before.values() if row.stream == "app")[:3]
    assert result["dry_run"] is True and "forgotten" not in result
    assert [entry["segment"] for entry in result["segments"]] == old_app
    entry = result["segments"][0]
    assert entry["stream"] == "app" and entry["stored_bytes"] == before[entry["segment"]].stored_bytes
    assert entry["last_ts"] == before[entry["segment"]].last_ts and "(retention.keep)" in entry["reason"]
    assert manifest_rows(archive["data"]) == before
    assert all(archive["store"].exists(row.store_path) for row in before.values())
    text = cli("forget", "-c", archive["config"], "--dry-run").stdout
    assert "would forget 3 segment(s)" in text and old_app[0] in text


def test_forget_unlinks_marks_and_hides_keeping_the_floor(archive: dict[str, Any]) -> None:
    before = manifest_rows(archive["data"])
    old_app = sorted(row.id for row in before.values() if row.stream == "app")[:3]
    text = cli("forget", "-c", archive["config"]).stdout
    assert "forgot 3 segment(s); removed 3, 0 failed" in text and "no longer lists them" in text
    after = manifest_rows(archive["data"])
    for segment in old_app:
        row = after[segment]
        assert row.state == "forgotten" and row.forgotten_at and "older than 30d" in (row.forgotten_reason or "")
        assert row.last_error is None  # removed
        assert not archive["store"].exists(before[segment].store_path)
        assert not (archive["data"] / row.local_path).exists()
    kept = sorted(set(before) - set(old_app))
    assert all(after[segment].state == "uploaded" and archive["store"].exists(after[segment].store_path) for segment in kept)
    assert listed("--data-dir", str(archive["data"])) == kept  # the floor (app's newest) and audit's
    assert listed("--archive", archive["url"]) == kept  # the republished manifest
    messages = [orjson.loads(line)["message"] for line in cli("cat", "--json", "--data-dir", str(archive["data"])).stdout.splitlines()]
    assert sorted(messages) == ["app-3", "audit-4", "audit-5"]
    again = orjson.loads(cli("forget", "-c", archive["config"], "--json").stdout)
    assert again["segments"] == [] and again["forgotten"] == 0


def test_the_floor_keeps_a_quiet_streams_newest(archive: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "floor.toml"
    config.write_text(f'data_dir = "data"\n[store]\nurl = "{archive["url"]}"\n[retention]\nkeep = "1d"\nmin_segments = 2\n')
    cli("forget", "-c", str(config))
    by_stream: dict[str, list[str]] = {}
    for row in manifest_rows(archive["data"]).values():
        if row.state != "forgotten":
            by_stream.setdefault(row.stream, []).append(row.id)
    assert {stream: len(ids) for stream, ids in by_stream.items()} == {"app": 2, "audit": 2}


def test_a_failed_unlink_is_finished_by_the_next_run(archive: dict[str, Any]) -> None:
    class Refusing(FsStore):
        def delete(self, path: str) -> None:
            raise PermissionError("as if the run died here")

    data = DataDir(archive["data"])
    with closing(Manifest(data.root)) as manifest:
        plan = dropped(manifest, RetentionPolicy(keep=30 * DAY), time.time())
    store: Store = archive["store"]
    broken = Refusing(store.fs, archive["url"])  # type: ignore[attr-defined]
    with pytest.raises(PermissionError):
        Forgetter(data, broken).forget(plan)
    rows = manifest_rows(data.root)
    assert all(rows[s.row.id].state == "forgotten" and rows[s.row.id].last_error for s in plan)
    assert Forgetter(data, store).forget([]) == {"forgotten": 0, "removed": len(plan), "failed": 0}
    assert not any(store.exists(s.row.store_path or "") for s in plan)


def test_the_uploader_does_not_bring_back_a_segment_forgotten_during_its_upload(tmp_path: Path) -> None:
    seal_records(tmp_path / "data", [("app", time.time() - 400 * DAY), ("app", time.time())])
    data = DataDir(tmp_path / "data")
    store = open_store(f"osfs://{tmp_path / 'store'}")
    with closing(Manifest(data.root)) as manifest:
        [old] = dropped(manifest, RetentionPolicy(keep=30 * DAY), time.time())

    class ForgetDuringPut(FsStore):
        def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
            if old.row.id in path:  # forgotten after the uploader listed it: nothing to unlink yet
                Forgetter(data, store).forget([old])
            return super().put(path, file, parent)

    uploader = make_uploader(tmp_path, ForgetDuringPut(store.fs, store.url))  # type: ignore[attr-defined]
    uploader.upload_due()
    rows = manifest_rows(data.root)
    assert rows[old.row.id].state == "forgotten" and rows[old.row.id].store_path is None
    stored = [path for path in store.walk_files() if "app" in path]
    assert [path for path in stored if not path.startswith("/_manifest/")] == [rows[r].store_path for r in rows if r != old.row.id]
    assert [path for path in stored if path.startswith("/_manifest/")] == [index_path(rows[r]) for r in rows if r != old.row.id]


def test_lease_renewal_leaves_forgotten_segments(archive: dict[str, Any]) -> None:
    with closing(Manifest(archive["data"])) as manifest:
        for row in manifest.segments():
            manifest.update_segment(row.id, read_cap=f"URI:CHK:{row.id}")
        before = {target.name for target in manifest.lease_targets() if target.kind == "segment"}
    cli("forget", "-c", archive["config"])
    with closing(Manifest(archive["data"])) as manifest:
        after = {target.name for target in manifest.lease_targets() if target.kind == "segment"}
        forgotten = {row.id for row in manifest.in_state("forgotten")}
    assert len(forgotten) == 3 and after == before - forgotten
