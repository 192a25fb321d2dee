"""Freezing closed hour directories and thawing them for late segments, against a store that
keeps the Freezing contract in memory (the real grid: tests/tahoe/test_small_dirs.py), and a
filesystem store, where freezing is nothing."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from posixpath import dirname
from typing import BinaryIO, Collection

from fs.memoryfs import MemoryFS

from archiver.format.layout import DataDir, segment_id
from archiver.format.manifest import Manifest
from archiver.format.store_layout import levels_of
from archiver.ship.forget import Dropped, Forgetter
from archiver.ship.uploader import Uploader
from archiver.store import FsStore
from archiver.store.base import Freezing, Frozen, Stored
from conftest import make_uploader, rows
from timed_segments import sealed_segment

HOUR = 3600.0
NOW = time.time()
FIVE_HOURS_AGO = (NOW // HOUR - 5) * HOUR
TWO_DAYS_AGO = (NOW // 86400 - 2) * 86400 + HOUR


def old_layout_day(tmp_path: Path, uploader: Uploader) -> str:
    """A day directory as archiver made them before hour directories, known to the uploader."""
    day = "/app/" + time.strftime("%Y/%m/%d", time.gmtime(TWO_DAYS_AGO))
    with closing(Manifest(tmp_path / "data")) as manifest:
        uploader._ensure_dirs(manifest, day)
    return day


class FreezingMemoryStore(FsStore, Freezing):
    """A memory store whose frozen directories refuse writes, as Tahoe's immutable ones do."""

    def __init__(self) -> None:
        super().__init__(MemoryFS())
        self.frozen: set[str] = set()
        self.holds: dict[str, set[str]] = {}
        self.made = 0

    def _writable(self, path: str) -> None:
        if dirname(path) in self.frozen:
            raise Frozen(f"the directory of {path} is frozen")

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        self._writable(path)
        return super().put(path, file, parent)

    def delete(self, path: str) -> None:
        self._writable(path)
        super().delete(path)

    def makedirs(self, path: str) -> None:
        if not self.exists(path):
            for level in levels_of(path):
                if not self.exists(level):
                    self._writable(level)
        super().makedirs(path)

    def freeze(self, path: str, holds: Collection[str] = ()) -> Stored:
        assert set(holds) <= set(self.listdir(path)), "the freezer expects a file that is not there"
        self.holds[path] = set(holds)
        self.frozen.add(path)
        self.made += 1
        return Stored(read_cap=f"URI:DIR2-CHK:{self.made}")

    def thaw(self, path: str) -> Stored:
        self.frozen.discard(path)
        self.made += 1
        return Stored(read_cap=f"URI:DIR2-RO:{self.made}", write_cap=f"URI:DIR2:{self.made}")


def dirs(tmp_path: Path) -> dict[str, dict]:
    with closing(Manifest(tmp_path / "data")) as manifest:
        return manifest.dirs()


def test_closed_hours_are_frozen_late_segments_thaw_them_and_they_are_frozen_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n in range(6):  # hours -5 and -4 are over; the one being written now is not
        sealed_segment(data, "app", FIVE_HOURS_AGO + (n % 2) * HOUR + n * 60, n)
    current = sealed_segment(data, "app", NOW, 6)
    store = FreezingMemoryStore()
    uploader = make_uploader(tmp_path, store)
    assert uploader.upload_due()["uploaded"] == 7
    hours = sorted({dirname(row.store_path) for row in rows(tmp_path) if row.store_path and row.id != current.id})
    assert len(hours) == 2
    waiting = sealed_segment(data, "app", FIVE_HOURS_AGO + HOUR + 3000, 7)  # sealed, not uploaded: hour -4 waits

    published_before = uploader.unpublished
    assert uploader.freeze_due() == {"frozen": 1, "failed": 0}
    assert store.frozen == {hours[0]} and store.holds[hours[0]] == set(store.listdir(hours[0])) and len(store.holds[hours[0]]) == 3
    known = dirs(tmp_path)
    assert known[hours[0]]["frozen_at"] and known[hours[0]]["write_cap"] is None
    assert known[hours[0]]["read_cap"].startswith("URI:DIR2-CHK:")
    assert not known[hours[1]]["frozen_at"] and not known[dirname(hours[0])]["frozen_at"]  # a day keeps its hours
    assert uploader.unpublished == published_before + 1  # the new cap is published next
    assert uploader.freeze_due() == {"frozen": 0, "failed": 0}

    late = sealed_segment(data, "app", FIVE_HOURS_AGO + 30 * 60, 8)  # a late segment for the frozen hour
    assert uploader.upload_due() == {"uploaded": 2, "failed": 0, "backlog": 0}  # with the waiting one
    assert hours[0] not in store.frozen and store.exists(f"{hours[0]}/{late.id}.jsonl.gz")
    assert dirs(tmp_path)[hours[0]]["write_cap"] and not dirs(tmp_path)[hours[0]]["frozen_at"]
    assert store.exists(f"{hours[1]}/{waiting.id}.jsonl.gz")
    assert uploader.freeze_due() == {"frozen": 2, "failed": 0}  # the late one's hour again, and the waiting one's
    assert store.frozen == set(hours)


def test_a_directory_the_store_finds_frozen_is_thawed_for_the_upload(tmp_path: Path) -> None:
    """Another sink on the root froze it, or the manifest was rebuilt: the upload is refused,
    the directory thawed, and the upload made again."""
    (tmp_path / "data").mkdir()
    store = FreezingMemoryStore()
    uploader = make_uploader(tmp_path, store)
    first = sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO, 1)
    assert uploader.upload_due()["uploaded"] == 1
    hour = dirname(rows(tmp_path)[0].store_path or "")
    store.freeze(hour)  # behind this sink's back
    second = sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO + 60, 2)
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    assert hour not in store.frozen and store.listdir(hour) == [f"{first.id}.jsonl.gz", f"{second.id}.jsonl.gz"]


def test_forget_thaws_a_frozen_directory_to_unlink_from_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = FreezingMemoryStore()
    uploader = make_uploader(tmp_path, store)
    kept = sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO, 1)
    gone = sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO + 60, 2)
    uploader.upload_due()
    assert uploader.freeze_due()["frozen"] == 1
    hour = dirname(rows(tmp_path)[0].store_path or "")
    with closing(Manifest(tmp_path / "data")) as manifest:
        row = next(r for r in manifest.segments() if r.id == gone.id)
    result = Forgetter(DataDir(tmp_path / "data"), store).forget([Dropped(row, "test")])
    assert result == {"forgotten": 1, "removed": 1, "failed": 0}
    assert store.listdir(hour) == [f"{kept.id}.jsonl.gz"] and hour not in store.frozen
    assert not dirs(tmp_path)[hour]["frozen_at"]
    assert uploader.freeze_due()["frozen"] == 1 and hour in store.frozen  # the sink freezes it again


def test_a_filesystem_store_freezes_nothing(tmp_path: Path) -> None:
    sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO, 1)
    uploader = make_uploader(tmp_path, FsStore(MemoryFS()))
    uploader.upload_due()
    assert uploader.freeze_due() == {"frozen": 0, "failed": 0}
    assert not any(entry["frozen_at"] for entry in dirs(tmp_path).values())


def test_an_hour_with_a_segment_still_open_is_not_frozen(tmp_path: Path) -> None:
    """A segment opened in a closed hour is sealed up to max_age later, into that hour."""
    sealed_segment(tmp_path / "data", "app", FIVE_HOURS_AGO, 1)
    uploader = make_uploader(tmp_path, FreezingMemoryStore())
    uploader.upload_due()
    still_open = DataDir(tmp_path / "data").open_path("app", segment_id(FIVE_HOURS_AGO + 10, "sinkA", 2))
    still_open.parent.mkdir(parents=True)
    still_open.write_bytes(b"")
    assert uploader.freeze_due()["frozen"] == 0
    still_open.unlink()
    assert uploader.freeze_due()["frozen"] == 1


def test_an_old_day_directory_that_a_waiting_segment_will_make_an_hour_in_is_not_frozen(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = FreezingMemoryStore()
    uploader = make_uploader(tmp_path, store)
    day = old_layout_day(tmp_path, uploader)
    waiting = sealed_segment(tmp_path / "data", "app", TWO_DAYS_AGO, 1)  # a backlog from before the upgrade
    assert uploader.freeze_due() == {"frozen": 0, "failed": 0}
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    assert store.exists(f"{day}/01/{waiting.id}.jsonl.gz")
    assert uploader.freeze_due() == {"frozen": 1, "failed": 0} and store.frozen == {f"{day}/01"}


def test_a_late_segment_thaws_a_frozen_old_day_directory_to_make_its_hour_in_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = FreezingMemoryStore()
    uploader = make_uploader(tmp_path, store)
    day = old_layout_day(tmp_path, uploader)
    assert uploader.freeze_due() == {"frozen": 1, "failed": 0} and store.frozen == {day}
    late = sealed_segment(tmp_path / "data", "app", TWO_DAYS_AGO, 1)
    assert uploader.upload_due() == {"uploaded": 1, "failed": 0, "backlog": 0}
    assert store.exists(f"{day}/01/{late.id}.jsonl.gz") and not store.frozen
