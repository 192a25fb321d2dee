"""The published manifest, format 2: O(new segments) a publish, files written once in a hash
chain, readers that fetch only the files a time range needs, and tampering found by name."""

from __future__ import annotations

import io
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
from fs.memoryfs import MemoryFS
from fs.osfs import OSFS

from archiver.common.units import format_ts
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.published import ChainName, check_chain
from archiver.read.published import chain_paths, check_published_chains, published_rows
from archiver.read.rebuild import rebuild_manifest
from archiver.ship.publisher import PERIOD_MAX, Publisher
from archiver.store.base import Stored
from archiver.store.fs import FsStore
from conftest import archiver_cli

HOUR = 3600.0
START = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight, UTC


class CountingStore(FsStore):
    """A memory store that counts the bytes put and the files read."""

    def __init__(self) -> None:
        super().__init__(MemoryFS())
        self.put_bytes: dict[str, int] = {}
        self.reads: list[str] = []

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        data = file.read()
        self.put_bytes[path] = len(data)
        return super().put(path, io.BytesIO(data), parent)

    def open(self, path: str) -> BinaryIO:
        self.reads.append(path)
        return super().open(path)


class OnDisk(CountingStore):
    """The same, in a directory: what `archiver verify --archive osfs://DIR` reads."""

    def __init__(self, root: Path) -> None:
        FsStore.__init__(self, OSFS(str(root), create=True))
        self.put_bytes = {}
        self.reads = []


class Sink:
    """A manifest with uploaded segments, published by a Publisher on a settable clock."""

    def __init__(self, tmp_path: Path, store: CountingStore) -> None:
        self.data = tmp_path / "data"
        self.data.mkdir(exist_ok=True)
        self.store = store
        self.now = START
        self.count = 0
        with closing(Manifest(self.data)) as manifest:
            manifest.set_meta("sink_id", "sinkP")
            manifest.set_meta("root_read_cap", "URI:DIR2-RO:root")
        self.publisher = Publisher("sinkP", lambda: self.now)

    def upload(self, n: int, event: float | None = None) -> None:
        """``n`` segments uploaded now, their records from ``event`` (default: an hour ago)."""
        with closing(Manifest(self.data)) as manifest:
            for _ in range(n):
                segment = f"{format_ts(self.now)[:19].replace('-', '').replace(':', '')}Z-sinkP-{self.count:06d}"
                first = format_ts((event or self.now - HOUR) + self.count % 60)
                manifest.add_sealed(SegmentRow(segment, "app", "sealed", "", "gzip", 10, 10, "0" * 64, 1, first, first,
                                               {"INFO": 1}, format_ts(self.now)))
                manifest.update_segment(segment, state="uploaded", store_path=f"/app/{segment}.jsonl.gz",
                                        read_cap=f"URI:CHK:{self.count}", uploaded_at=format_ts(self.now))
                self.count += 1

    def publish(self) -> dict[str, int]:
        with closing(Manifest(self.data)) as manifest:
            return self.publisher.publish(self.store, manifest, self.store.makedirs)


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return Sink(tmp_path, CountingStore())


def test_one_publish_writes_only_the_open_period(sink: Sink) -> None:
    for hour in range(30):  # 30 hours of segments, every period closed
        sink.upload(40)
        sink.publish()
        sink.now += HOUR
    sink.store.put_bytes.clear()
    sink.upload(1)
    sink.publish()  # the first publish of an hour also closes the last hour's period: 40 entries
    assert sum(sink.store.put_bytes.values()) < 64 * 1024
    sink.store.put_bytes.clear()
    sink.upload(1)
    sink.publish()
    assert list(sink.store.put_bytes) == ["/_manifest/sinkP/current.json"]
    assert sink.store.put_bytes["/_manifest/sinkP/current.json"] < 64 * 1024
    assert len(published_rows(sink.store)) == 30 * 40 + 2


def test_a_full_period_closes_and_stays_small(sink: Sink) -> None:
    sink.upload(PERIOD_MAX)
    assert sink.publish()["closed"] == 1
    sink.upload(PERIOD_MAX - 1)
    result = sink.publish()
    assert result["closed"] == 0 and result["bytes"] < 64 * 1024


def test_days_are_compacted_into_one_file_and_the_chain_holds(sink: Sink) -> None:
    for hour in range(50):
        sink.upload(3)
        sink.publish()
        sink.now += HOUR
    paths = [path for path, _ in chain_paths(sink.store, "/_manifest/sinkP")]
    day_files = [path for path in paths if path.count("/") == 4]
    assert len(day_files) == 2, paths  # two whole days compacted; today's periods still apart
    assert all(path.count("/") == 5 for path in paths if path not in day_files)
    [check] = check_published_chains(sink.store)
    assert check.problems == [] and check.files == len(paths)
    assert len(published_rows(sink.store)) == 150


def test_readers_fetch_only_the_files_a_time_range_needs(sink: Sink) -> None:
    for hour in range(72):
        sink.upload(5)
        sink.publish()
        sink.now += HOUR
    sink.store.reads.clear()
    recent = published_rows(sink.store, since=format_ts(sink.now - 2 * HOUR))
    fetched = [path for path in sink.store.reads if path.endswith(".json")]
    assert len(fetched) <= 3, fetched  # the open period and the last closed file or two
    assert recent and all(row.last_ts >= format_ts(sink.now - 2 * HOUR) for row in recent[-5:])
    everything = published_rows(sink.store)
    assert len(everything) == 360


def test_a_late_segment_lands_in_the_open_period_and_its_file_says_when_it_happened(sink: Sink) -> None:
    sink.upload(2)
    sink.publish()
    sink.now += 3 * HOUR
    sink.upload(1, event=START - 30 * 86400)  # a month-old buffer replayed
    sink.publish()
    sink.now += HOUR
    sink.upload(1)
    sink.publish()  # closes the period holding the late segment
    names = [name for _, name in chain_paths(sink.store, "/_manifest/sinkP")]
    assert any(name.first <= format_ts(START - 30 * 86400)[:10].replace("-", "") + "T235959Z" for name in names)
    old = published_rows(sink.store, since=format_ts(START - 31 * 86400), until=format_ts(START - 29 * 86400))
    assert "URI:CHK:2" in [row.read_cap for row in old]  # the file holding it is fetched for that month


def test_a_removed_altered_or_reordered_file_is_named(sink: Sink) -> None:
    for hour in range(5):
        sink.upload(2)
        sink.publish()
        sink.now += HOUR
    files = [(path, sink.store.read_bytes(path)) for path, _ in chain_paths(sink.store, "/_manifest/sinkP")]
    current = sink.store.read_bytes("/_manifest/sinkP/current.json")
    assert check_chain(files, current).problems == []

    removed = check_chain(files[:1] + files[2:], current)
    assert any(files[2][0] in problem and "missing or altered" in problem for problem in removed.problems)

    document = orjson.loads(files[1][1])
    document["segments"][0]["sha256"] = "f" * 64
    altered = check_chain([files[0], (files[1][0], orjson.dumps(document, option=orjson.OPT_SORT_KEYS)), *files[2:]],
                          current)
    assert any(files[2][0] in problem for problem in altered.problems)

    last = check_chain(files[:-1], current)
    assert any("current.json names head" in problem for problem in last.problems)

    seq = ChainName.parse(files[1][0].rsplit("/", 1)[1])
    assert seq is not None
    renamed = files[1][0].replace(f"{seq.seq:010d}", f"{seq.seq + 100:010d}")
    reordered = check_chain([files[0], (renamed, files[1][1]), *files[2:]], current)
    assert any(renamed in problem and "name does not match" in problem for problem in reordered.problems)


def test_format_1_files_are_still_read_and_retired_by_the_first_closed_file(sink: Sink) -> None:
    legacy = {"format": "archiver-manifest", "version": 1, "sink_id": "sinkP", "root": {"read_cap": "URI:DIR2-RO:root"},
              "dirs": {}, "segments": [{"id": "20200101T000000Z-sinkP-999999", "stream": "old",
                                        "store_path": "/old/x.jsonl.gz", "read_cap": "URI:CHK:old",
                                        "compression": "gzip", "raw_bytes": 1, "stored_bytes": 1, "sha256": "0" * 64,
                                        "records": 1, "first_ts": "2020-01-01T00:00:00.000000Z",
                                        "last_ts": "2020-01-01T00:00:00.000000Z", "levels": {}, "sealed_at": "x",
                                        "state": "verified"}]}
    sink.store.makedirs("/_manifest")
    sink.store.put("/_manifest/sinkP.json", io.BytesIO(orjson.dumps(legacy)))
    assert [row.stream for row in published_rows(sink.store)] == ["old"]
    sink.upload(PERIOD_MAX)  # the first closed file lists everything the sink has
    sink.publish()
    assert not sink.store.exists("/_manifest/sinkP.json")


def test_a_rebuilt_data_dir_carries_on_the_same_chain(sink: Sink, tmp_path: Path) -> None:
    for hour in range(30):
        sink.upload(2)
        sink.publish()
        sink.now += HOUR
    assert rebuild_manifest(tmp_path / "rebuilt", sink.store)["source"] == "published"
    sink.data = tmp_path / "rebuilt"  # the new host
    for hour in range(30):
        sink.upload(2)
        sink.publish()
        sink.now += HOUR
    [check] = check_published_chains(sink.store)
    assert check.problems == []
    ids = [row.id for row in published_rows(sink.store)]
    assert len(ids) == len(set(ids)) == 120


def test_a_forgotten_segment_gets_a_tombstone_that_hides_it_in_older_files(sink: Sink) -> None:
    sink.upload(3)
    sink.publish()
    sink.now += HOUR
    sink.upload(1)
    sink.publish()  # the first three are in a closed file now
    with closing(Manifest(sink.data)) as manifest:
        [first] = [row for row in manifest.segments() if row.read_cap == "URI:CHK:0"]
        assert manifest.forget(first.id, "retention: keep 1d", format_ts(sink.now)) is not None
    sink.publish()
    current = orjson.loads(sink.store.read_bytes("/_manifest/sinkP/current.json"))
    assert [tombstone["id"] for tombstone in current["forgotten"]] == [first.id]
    assert "URI:CHK:0" not in {row.read_cap for row in published_rows(sink.store)}
    sink.now += HOUR
    sink.publish()
    sink.upload(1)
    sink.publish()  # the tombstone is in a closed file, named by the forgotten segment's range
    assert "URI:CHK:0" not in {row.read_cap for row in published_rows(sink.store, until=first.last_ts + "1")}
    [check] = check_published_chains(sink.store)
    assert check.problems == []


def test_verify_from_the_root_names_a_tampered_chain_and_holds_a_pinned_head(sink: Sink, tmp_path: Path) -> None:
    """`archiver verify --archive <root>`: the chain as published passes, a removed closed file
    is named, and a head pinned before no longer passes once the chain is rewritten."""
    root = tmp_path / "root"
    sink.store = OnDisk(root)
    for hour in range(4):
        sink.upload(2)
        sink.publish()
        sink.now += HOUR
    for row in published_rows(sink.store):  # the segments themselves, so verify can read them
        sink.store.makedirs(row.store_path.rsplit("/", 1)[0])
        sink.store.put(row.store_path, io.BytesIO(b""))
    [check] = check_published_chains(sink.store)
    archive = f"osfs://{root}"
    good = archiver_cli("verify", "--quick", "--json", "--archive", archive, "--expect-head", str(check.head), check=False)
    summary = orjson.loads(good.stdout.splitlines()[-1])
    assert [p for p in summary["problems"] if p["where"] == "manifest"] == [] and summary["chains"][0]["head"] == check.head

    [(victim, _)] = [item for item in chain_paths(sink.store, "/_manifest/sinkP")][1:2]
    sink.store.delete(victim)
    removed = archiver_cli("verify", "--quick", "--archive", archive, check=False)
    assert removed.returncode == 1 and b"missing or altered" in removed.stdout

    pinned = archiver_cli("verify", "--quick", "--archive", archive, "--expect-head", "0" * 64, check=False)
    assert pinned.returncode == 1 and b"no chain passes through the expected head" in pinned.stdout


def test_a_file_listing_no_timed_entry_is_found_again(sink: Sink) -> None:
    """A segment with no records (recovered from an empty open file) has no time range."""
    assert ChainName.parse("0000000002----.json") == ChainName(2, "-", "-")
    with closing(Manifest(sink.data)) as manifest:
        manifest.add_sealed(SegmentRow("20270101T000000Z-sinkP-999999", "app", "sealed", "", "gzip", 0, 20, "0" * 64, 0,
                                       None, None, {}, format_ts(sink.now)))
        manifest.update_segment("20270101T000000Z-sinkP-999999", state="uploaded", store_path="/app/empty.jsonl.gz",
                                read_cap="URI:CHK:empty", uploaded_at=format_ts(sink.now))
    sink.publish()
    sink.now += HOUR
    sink.upload(1)
    sink.publish()
    assert "URI:CHK:empty" in {row.read_cap for row in published_rows(sink.store, since=format_ts(sink.now - HOUR))}
    assert check_published_chains(sink.store)[0].problems == []


def test_a_format_1_file_left_beside_the_directory_hides_nothing(sink: Sink) -> None:
    sink.upload(3)
    sink.publish()
    sink.store.put("/_manifest/sinkP.json", io.BytesIO(orjson.dumps(
        {"format": "archiver-manifest", "version": 1, "sink_id": "sinkP", "root": {}, "dirs": {}, "segments": []})))
    assert len(published_rows(sink.store)) == 3


def test_a_file_left_by_a_publish_that_died_is_replaced_not_doubled(sink: Sink) -> None:
    sink.upload(2)
    sink.publish()
    sink.now += HOUR
    directory = "/_manifest/sinkP/" + format_ts(START)[:4] + "/" + format_ts(START)[:10]
    sink.store.makedirs(directory)
    sink.store.put(f"{directory}/0000000001-20000101T000000Z-20000101T000001Z.json", io.BytesIO(b"{}"))  # the dead one
    sink.upload(1)
    sink.publish()
    assert [name for name in sink.store.listdir(directory) if name.startswith("0000000001-")] != []
    assert len([name for name in sink.store.listdir(directory) if name.startswith("0000000001-")]) == 1
    assert check_published_chains(sink.store)[0].problems == []


def test_a_directory_frozen_while_a_file_was_written_is_published_again(tmp_path: Path) -> None:
    """A publish reads a directory's cap, a freeze replaces it, then the publish records its
    file: the directory stays unpublished, so its frozen cap goes in the next file."""
    with closing(Manifest(tmp_path)) as manifest:
        manifest.add_dir("/app/2026/01/01/00", "URI:DIR2:w", "URI:DIR2-RO:mutable", format_ts(0))
        read = manifest.unpublished()[2]
        assert read == {"/app/2026/01/01/00": "URI:DIR2-RO:mutable"}
        manifest.dir_frozen("/app/2026/01/01/00", "URI:DIR2-CHK:frozen", format_ts(1))
        manifest.mark_published([], [], read, 1, {"chain_seq": "1"})
        assert manifest.unpublished()[2] == {"/app/2026/01/01/00": "URI:DIR2-CHK:frozen"}
        manifest.mark_published([], [], manifest.unpublished()[2], 2, {"chain_seq": "2"})
        assert manifest.unpublished()[2] == {}
