"""Uploader jobs against the local-filesystem store: fast checks of the state machine."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import orjson
import pytest
from fs import errors
from fs.osfs import OSFS

from archiver.manifest import Manifest, ManifestError, parse_published
from archiver.uploader import retry_delay, store_path
from conftest import make_uploader, rows, seal


def day_dirs(stream: str, segment_id: str) -> list[str]:
    """The store directories a segment's upload makes: the day comes from its id, so tests pass across midnight."""
    day = segment_id[:8]
    return [f"/{stream}", f"/{stream}/{day[:4]}", f"/{stream}/{day[:4]}/{day[4:6]}", f"/{stream}/{day[:4]}/{day[4:6]}/{day[6:8]}"]


def test_upload_publish_verify_prune(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"app": 3, "audit": 2})
    store = OSFS(str(tmp_path / "store"), create=True)
    pruned: list[int] = []
    uploader = make_uploader(tmp_path, store, keep_local=0.0)
    uploader._on_pruned = pruned.append
    assert uploader.upload_due() == {"uploaded": 2, "failed": 0, "backlog": 0}
    for row in rows(tmp_path):
        assert row.state == "uploaded" and row.store_path == store_path(row)
        assert row.store_path.startswith(day_dirs(row.stream, row.id)[-1] + "/") and store.exists(row.store_path)
        assert store.readbytes(row.store_path) == (tmp_path / "data" / row.local_path).read_bytes()
    assert set(Manifest(tmp_path / "data").dirs()) == {path for row in rows(tmp_path) for path in day_dirs(row.stream, row.id)}
    uploader.publish()
    published = parse_published(store.readbytes("/_manifest/sinkA.json"), "published")
    assert published["sink_id"] == "sinkA" and len(published["segments"]) == 2
    assert uploader.verify_due() == {"verified": 2, "unhealthy": 0, "missing": 0}
    assert uploader.prune_due() == {"pruned": 2}
    assert {row.state for row in rows(tmp_path)} == {"pruned"}
    assert not list((tmp_path / "data" / "spool" / "sealed").rglob("*.gz")) and len(pruned) == 2


def test_uploading_again_is_idempotent(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"app": 3})
    store = OSFS(str(tmp_path / "store"), create=True)
    uploader = make_uploader(tmp_path, store)
    uploader.upload_due()
    [row] = rows(tmp_path)
    manifest = Manifest(tmp_path / "data")
    manifest.update_segment(row.id, state="sealed")  # as if the sink died before recording the upload
    assert uploader.upload_due()["uploaded"] == 1
    assert len(rows(tmp_path)) == 1 and store.listdir(day_dirs("app", row.id)[-1]) == [row.id + ".jsonl.gz"]


def test_failures_back_off_and_a_down_store_stops_the_batch(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"a": 1, "b": 1, "c": 1})

    class DownStore(OSFS):
        def makedirs(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise errors.RemoteConnectionError(msg="cannot reach the Tahoe node at http://x: URI:DIR2:secretsecret:more")

    uploader = make_uploader(tmp_path, DownStore(str(tmp_path / "store"), create=True), interval=2.0, backoff_base=5.0)
    assert uploader.upload_due() == {"uploaded": 0, "failed": 1, "backlog": 3}
    [failed] = [row for row in rows(tmp_path) if row.attempts]
    assert "secretsecret:more" not in failed.last_error and "RemoteConnectionError" in failed.last_error
    assert failed.next_attempt > 0
    assert uploader.upload_due()["failed"] == 1  # the others are still due: the next one is tried


def test_a_corrupt_stored_copy_fails_verification(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"app": 2})
    store = OSFS(str(tmp_path / "store"), create=True)
    uploader = make_uploader(tmp_path, store, keep_local=0.0)
    uploader.upload_due()
    [row] = rows(tmp_path)
    store.writebytes(row.store_path, b"not what was uploaded")
    assert uploader.verify_due() == {"verified": 0, "unhealthy": 1, "missing": 0}
    assert uploader.prune_due() == {"pruned": 0}  # never drop the local copy of an unverified segment
    assert (tmp_path / "data" / row.local_path).exists()


def test_retry_delay_grows_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, 5, 600, rng) for n in range(1, 12)]
    assert 2.5 <= delays[0] <= 5 and delays[-1] <= 600
    assert all(retry_delay(n, 5, 600, rng) >= 5 * 2 ** (n - 1) / 2 for n in range(1, 7))
    assert len({round(retry_delay(3, 5, 600, rng), 6) for _ in range(20)}) > 1


def test_published_manifest_never_has_write_caps(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    manifest.set_meta("root_write_cap", "URI:DIR2:aaaa:bbbb")
    manifest.set_meta("root_read_cap", "URI:DIR2-RO:cccc:dddd")
    manifest.add_dir("/app", "URI:DIR2:eeee:ffff", "URI:DIR2-RO:gggg:hhhh", "2026-01-01T00:00:00.000000Z")
    public = orjson.dumps(manifest.document(uploaded_only=True))
    assert b"URI:DIR2:" not in public and b"URI:DIR2-RO:gggg:hhhh" in public
    assert b"URI:DIR2:eeee:ffff" in orjson.dumps(manifest.document(include_write_caps=True))
    with pytest.raises(ManifestError, match="format version 99"):
        parse_published(orjson.dumps({"format": "archiver-manifest", "version": 99}), "x.json")


def test_schema_v1_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    from archiver.manifest import _MIGRATIONS

    for statement in _MIGRATIONS[1].split(";"):
        db.execute(statement)
    db.execute("INSERT INTO segments VALUES ('20260101T000000Z-s-000001', 'app', 'sealed', 'p', 'gzip', 1, 1, 'h', 1, 'a', 'b', '{}', 'c')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    [row] = list(Manifest(tmp_path).segments())
    assert row.id == "20260101T000000Z-s-000001" and row.attempts == 0 and row.store_path is None


def test_a_directory_removed_from_the_store_is_made_again(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"app": 2})
    store = OSFS(str(tmp_path / "store"), create=True)
    uploader = make_uploader(tmp_path, store)
    assert uploader.upload_due()["uploaded"] == 1
    store.removetree("/app")  # someone deleted the stream's tree
    seal(tmp_path / "data", {"app": 1})
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    [again] = [row for row in rows(tmp_path) if store.exists(row.store_path)]
    assert store.listdir(day_dirs("app", again.id)[-1]) == [again.id + ".jsonl.gz"]
