"""Uploader jobs against local stores (memory, a directory, a backend with only the required
methods): fast checks of the state machine."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import orjson
import pytest
from fs.memoryfs import MemoryFS
from fs.path import abspath, dirname
from minimal_store import BACKENDS, MinimalStore, make_store

from archiver.common.backoff import retry_delay
from archiver.format.manifest import Manifest, ManifestError
from archiver.format.published import parse_document
from archiver.format.store_layout import index_path, levels_of, store_path
from archiver.read.published import published_rows
from archiver.ship.publisher import Publisher
from archiver.store import FsStore, HasCaps, NotFound, Store, Stored, StoreUnavailable
from conftest import make_uploader, rows, seal


def segment_dirs(stream: str, segment_id: str) -> list[str]:
    """The store directories a segment's upload makes, down to its hour's: the hour comes from
    its id, so tests pass across midnight."""
    day, hour = segment_id[:8], segment_id[9:11]
    return [f"/{stream}", f"/{stream}/{day[:4]}", f"/{stream}/{day[:4]}/{day[4:6]}", f"/{stream}/{day[:4]}/{day[4:6]}/{day[6:8]}",
            f"/{stream}/{day[:4]}/{day[4:6]}/{day[6:8]}/{hour}"]


@pytest.fixture(autouse=True)
def _manifests_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every manifest opened during a test (several inline here) is closed at teardown: Python
    3.13 reports a connection left to the garbage collector."""
    opened: list[Manifest] = []
    init = Manifest.__init__
    here = threading.get_ident()

    def tracked(self: Manifest, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if threading.get_ident() == here:  # other threads' are the code under test's, closed by it
            opened.append(self)

    monkeypatch.setattr(Manifest, "__init__", tracked)
    yield
    for manifest in opened:
        manifest.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return make_store(request.param, tmp_path / "store")


def test_upload_publish_verify_prune(tmp_path: Path, store: Store) -> None:
    seal(tmp_path / "data", {"app": 3, "audit": 2})
    pruned: list[tuple[str, int]] = []
    uploader = make_uploader(tmp_path, store, keep_local=0.0)
    uploader._on_pruned = lambda segment, size: pruned.append((segment, size))
    assert uploader.upload_due() == {"uploaded": 2, "failed": 0, "backlog": 0}
    for row in rows(tmp_path):
        assert row.state == "uploaded" and row.store_path == store_path(row)
        assert row.store_path.startswith(segment_dirs(row.stream, row.id)[-1] + "/") and store.exists(row.store_path)
        assert store.read_bytes(row.store_path) == (tmp_path / "data" / row.local_path).read_bytes()
    indexes = {path for row in rows(tmp_path) for path in levels_of(dirname(index_path(row) or ""))}
    assert indexes >= {"/_manifest/sinkA/index", dirname(index_path(rows(tmp_path)[0]) or "")}
    assert set(Manifest(tmp_path / "data").dirs()) == {path for row in rows(tmp_path) for path in segment_dirs(row.stream, row.id)} | indexes
    uploader.publish()
    published = parse_document(store.read_bytes("/_manifest/sinkA/current.json"), "published")
    assert published["sink_id"] == "sinkA" and len(published["segments"]) == 2
    assert uploader.verify_due() == {"verified": 2, "unhealthy": 0, "missing": 0}
    assert uploader.prune_due() == {"pruned": 2}
    assert {row.state for row in rows(tmp_path)} == {"pruned"}
    assert not list((tmp_path / "data" / "spool" / "sealed").rglob("*.gz")) and len(pruned) == 2


def test_uploading_again_is_idempotent(tmp_path: Path, store: Store) -> None:
    seal(tmp_path / "data", {"app": 3})
    uploader = make_uploader(tmp_path, store)
    uploader.upload_due()
    [row] = rows(tmp_path)
    manifest = Manifest(tmp_path / "data")
    manifest.update_segment(row.id, state="sealed")  # as if the sink died before recording the upload
    assert uploader.upload_due()["uploaded"] == 1
    assert len(rows(tmp_path)) == 1 and store.listdir(segment_dirs("app", row.id)[-1]) == [row.id + ".jsonl.gz"]


def test_failures_back_off_and_a_down_store_stops_the_batch(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"a": 1, "b": 1, "c": 1})

    class DownStore(MinimalStore):
        def makedirs(self, path: str) -> None:
            raise StoreUnavailable("cannot reach the Tahoe node at http://x: URI:DIR2:secretsecret:more")

    uploader = make_uploader(tmp_path, DownStore(tmp_path / "store"), interval=2.0, backoff_base=5.0)
    assert uploader.upload_due() == {"uploaded": 0, "failed": 1, "backlog": 3}
    [failed] = [row for row in rows(tmp_path) if row.attempts]
    assert "secretsecret:more" not in failed.last_error and "StoreUnavailable" in failed.last_error
    assert failed.next_attempt > 0
    assert uploader.upload_due()["failed"] == 1  # the others are still due: the next one is tried


def test_a_corrupt_stored_copy_fails_verification(tmp_path: Path, store: Store) -> None:
    seal(tmp_path / "data", {"app": 2})
    uploader = make_uploader(tmp_path, store, keep_local=0.0)
    uploader.upload_due()
    [row] = rows(tmp_path)
    store.put(row.store_path, io.BytesIO(b"not what was uploaded"))
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
    store = CapStore("grid")
    Publisher("sinkA").publish(store, manifest, store.makedirs)
    public = b"".join(store.read_bytes(path) for path in store.walk_files("/_manifest"))
    assert b"URI:DIR2:" not in public and b"URI:DIR2-RO:gggg:hhhh" in public and b"URI:DIR2-RO:cccc:dddd" in public
    assert b"URI:DIR2:" not in orjson.dumps(manifest.document())
    assert b"URI:DIR2:eeee:ffff" in orjson.dumps(manifest.document(include_write_caps=True))
    with pytest.raises(ManifestError, match="format version 99"):
        parse_document(orjson.dumps({"format": "archiver-manifest", "version": 99}), "x.json")


def test_schema_v1_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    from archiver.format.manifest import _MIGRATIONS

    for statement in _MIGRATIONS[1].split(";"):
        db.execute(statement)
    db.execute("INSERT INTO segments VALUES ('20260101T000000Z-s-000001', 'app', 'sealed', 'p', 'gzip', 1, 1, 'h', 1, 'a', 'b', '{}', 'c')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    [row] = list(Manifest(tmp_path).segments())
    assert row.id == "20260101T000000Z-s-000001" and row.attempts == 0 and row.store_path is None


def test_a_directory_removed_from_the_store_is_made_again(tmp_path: Path, store: Store) -> None:
    seal(tmp_path / "data", {"app": 2})
    uploader = make_uploader(tmp_path, store)
    assert uploader.upload_due()["uploaded"] == 1
    store.delete("/app")  # someone deleted the stream's tree
    seal(tmp_path / "data", {"app": 1})
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    [again] = [row for row in rows(tmp_path) if store.exists(row.store_path)]
    assert store.listdir(segment_dirs("app", again.id)[-1]) == [again.id + ".jsonl.gz"]


class CapStore(FsStore, HasCaps):
    """A memory store that answers like a Tahoe grid of its own: directories have caps naming
    the grid, and ``put`` writes into a directory by its cap, as TahoeStore does."""

    def __init__(self, grid: str) -> None:
        super().__init__(MemoryFS())
        self.grid = grid
        self.refused = 0

    def caps(self, path: str) -> Stored:
        if not self.isdir(path):
            return Stored()
        return Stored(read_cap=f"URI:DIR2-RO:{self.grid}:{abspath(path)}", write_cap=f"URI:DIR2:{self.grid}:{abspath(path)}")

    def open_cap(self, cap: str, size: int, name: str = "") -> BinaryIO:
        raise NotFound(name)

    def root_identity(self) -> str:
        return hashlib.sha256(str(self.caps("/").read_cap).encode()).hexdigest()

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        """A cap of another grid is unreadable here. One of a directory since unlinked from the
        tree still takes the file, which is then not at its path."""
        if parent is not None and not parent.startswith(f"URI:DIR2:{self.grid}:"):
            self.refused += 1
            raise NotFound(f"the directory of {path} cannot be read by the cap known for it")
        data = file.read()
        if parent is None or self.isdir(dirname(path)):
            self.fs.writebytes(path, data)
        digest = hashlib.sha256(data).hexdigest()
        return Stored(read_cap=f"URI:CHK:{digest}", verify_cap=f"URI:CHK-Verifier:{digest}")


@pytest.mark.parametrize("how", ["rebuilt", "deleted"])
def test_a_segment_missing_from_the_store_without_a_local_copy_keeps_its_caps(tmp_path: Path, how: str, store: Store) -> None:
    """A row rebuilt from the store has no local copy (local_path ''); a deleted copy is none
    either. Nothing to upload again: it stays uploaded with its caps and is reported missing."""
    seal(tmp_path / "data", {"app": 1})
    [row] = rows(tmp_path)
    (tmp_path / "data" / row.local_path).unlink()
    stored = {"store_path": store_path(row), "read_cap": "URI:CHK:kept", "verify_cap": "URI:CHK-Verifier:kept"}
    Manifest(tmp_path / "data").update_segment(
        row.id, state="uploaded", **stored, **({"local_path": ""} if how == "rebuilt" else {})
    )
    uploader = make_uploader(tmp_path, store)
    assert uploader.verify_due() == {"verified": 0, "unhealthy": 0, "missing": 1}
    assert uploader.upload_due() == {"uploaded": 0, "failed": 0, "backlog": 0}
    [after] = rows(tmp_path)
    assert after.state == "uploaded" and {key: getattr(after, key) for key in stored} == stored
    assert "missing from the store" in after.last_error and "no local copy" in after.last_error
    assert uploader.verify_due()["missing"] == 1  # still reported, still not sent back to upload


def test_a_segment_missing_from_the_store_keeps_its_caps_until_uploaded_again(tmp_path: Path) -> None:
    seal(tmp_path / "data", {"app": 1})
    store = CapStore("grid")
    uploader = make_uploader(tmp_path, store)
    uploader.upload_due()
    [row] = rows(tmp_path)
    store.delete("/app")
    assert uploader.verify_due()["missing"] == 1
    [sealed] = rows(tmp_path)
    assert (sealed.state, sealed.store_path, sealed.read_cap, sealed.verify_cap) == ("sealed", None, row.read_cap, row.verify_cap)
    assert published_rows(store) == []  # not published meanwhile
    uploader.publish()
    assert published_rows(store) == []
    assert uploader.upload_due()["uploaded"] == 1 and store.exists(row.store_path)
    [again] = rows(tmp_path)
    assert (again.state, again.store_path, again.read_cap) == ("uploaded", row.store_path, row.read_cap)


def test_a_new_store_root_forgets_the_directory_caps_of_the_old(tmp_path: Path) -> None:
    """store.url changed to another root or grid: the old root's directory caps mean nothing there."""
    seal(tmp_path / "data", {"app": 1, "audit": 1})
    assert make_uploader(tmp_path, CapStore("old")).upload_due()["uploaded"] == 2
    seal(tmp_path / "data", {"app": 1})
    new = CapStore("new")
    assert make_uploader(tmp_path, new).upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    assert new.refused == 0  # no PUT into a directory cap of the old root
    dirs = Manifest(tmp_path / "data").dirs()
    assert dirs and all(caps["write_cap"].startswith("URI:DIR2:new:") for caps in dirs.values())
    with closing(sqlite3.connect(tmp_path / "data" / "manifest.sqlite")) as db:
        meta = db.execute("SELECT value FROM meta").fetchall()
    assert not [value for (value,) in meta if "URI:" in value]  # the root is recorded by a hash


def test_a_directory_cap_the_store_cannot_read_is_forgotten_and_made_again(tmp_path: Path) -> None:
    """Caps recorded before the root was (an older or rebuilt manifest), of another grid: the
    PUT by cap gets 410, which is the directory's fault, not the grid's. Made again, it goes."""
    seal(tmp_path / "data", {"app": 1})
    [row] = rows(tmp_path)
    manifest = Manifest(tmp_path / "data")
    for level in segment_dirs("app", row.id):
        manifest.add_dir(level, f"URI:DIR2:elsewhere:{level}", None, "2026-01-01T00:00:00.000000Z")
    store = CapStore("here")
    assert make_uploader(tmp_path, store).upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    assert store.refused == 1 and store.exists(store_path(row))
    assert manifest.dirs()[segment_dirs("app", row.id)[-1]]["write_cap"].startswith("URI:DIR2:here:")


def test_directories_forgotten_while_another_thread_loads_them_stay_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify forgets a segment's directories while publish loads the manifest's: the load must
    not bring them back, or the upload again PUTs into a directory no longer in the tree."""
    seal(tmp_path / "data", {"app": 1})
    store = CapStore("grid")
    make_uploader(tmp_path, store).upload_due()
    store.delete("/app")
    uploader = make_uploader(tmp_path, store)  # a restarted sink: nothing loaded yet
    load = Manifest.dirs_under
    verify = threading.Thread(target=uploader.verify_due)

    def load_while_verify_runs(manifest: Manifest, root: str) -> dict[str, dict[str, Any]]:
        dirs = load(manifest, root)
        verify.start()
        verify.join(0.5)  # it waits for the load to end, or (no lock) forgets the directories now
        return dirs

    monkeypatch.setattr(Manifest, "dirs_under", load_while_verify_runs)
    uploader.publish()
    verify.join()
    [row] = rows(tmp_path)
    assert row.state == "sealed"
    assert uploader.upload_due()["uploaded"] == 1 and store.exists(store_path(row))


def test_the_unpublished_count_loses_no_update_across_threads(tmp_path: Path) -> None:
    """Uploads and verifications add, publish takes away, each on its own scheduler thread: a
    lost update could leave 0 while changes are unpublished, and the last publish is skipped."""
    (tmp_path / "data").mkdir()
    uploader = make_uploader(tmp_path, FsStore(MemoryFS()))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda: [uploader._count_unpublished(1) for _ in range(20_000)])
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert uploader.unpublished == 80_000
