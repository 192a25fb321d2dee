"""The per-segment search index: built at seal, published beside the manifest, and used by
readers to skip segments; results are always those of a full scan."""

from __future__ import annotations

import itertools
import random
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
from fs.memoryfs import MemoryFS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.format.layout import DataDir, segment_id
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format import search_index
from archiver.format.record import encode_lines
from archiver.format.search_index import MAGIC, IndexBuilder, SearchIndex, SearchIndexError, build
from archiver.format.segment import SegmentTally
from archiver.format.store_layout import index_path
from archiver.read.reader import Archive, Filters, store_archive
from archiver.ship.forget import Dropped, Forgetter
from archiver.spool.sealing import seal_segment
from archiver.store import FsStore, Store
from conftest import make_uploader

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
LOGGERS = ["app", "app.db", "web"]


def record(n: int, message: str, level: str = "INFO", logger: str = "app") -> dict[str, Any]:
    return {"ts": f"2026-11-23T10:{n // 60 % 60:02d}:{n % 60:02d}.000000Z", "level": level, "logger": logger,
            "message": message, "fields": {}}


def seal_records(data_dir: Path, segments: list[list[dict[str, Any]]], stream: str = "app",
                 batch: int | None = None) -> list[SegmentRow]:
    """Each list of records sealed as one segment of sink "sinkA", entered in the manifest:
    indexed as sealing reads it, or with ``batch``, written in batches of that many records
    as the segment writer does and indexed from their index parts."""
    rows = []
    with closing(Manifest(data_dir)) as manifest:
        for seq, records in enumerate(segments):
            segment = segment_id(1_795_860_000 + seq, "sinkA", seq)
            source = data_dir / f"{segment}.open"
            known = None
            if batch is None:
                source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
            else:
                known = SegmentTally()
                with open(source, "wb") as out:
                    for start in range(0, len(records), batch):
                        lines = encode_lines(records[start:start + batch])
                        out.write(lines.data)
                        known.add_lines(lines)
            outcome = seal_segment(DataDir(data_dir), stream, segment, source, "gzip", 1, known)
            source.unlink()
            manifest.add_sealed(outcome.row)
            rows.append(outcome.row)
    return rows


def local_archive(data_dir: Path, rows: list[SegmentRow]) -> Archive:
    return Archive(lambda *_: rows, data_dir=DataDir(data_dir))


def opened(archive: Archive) -> list[str]:
    """Record the ids of the segments ``archive`` opens from now on."""
    seen: list[str] = []
    original = archive.open_segment

    def counting(row: SegmentRow) -> Any:
        seen.append(row.id)
        return original(row)

    archive.open_segment = counting  # type: ignore[method-assign]
    return seen


messages = st.lists(st.text(alphabet="abcdeé-:. 0123456789XYZ\n\"\\", max_size=30), min_size=1, max_size=6)
archives = st.lists(st.lists(st.tuples(messages, st.sampled_from(LEVELS), st.sampled_from(LOGGERS)),
                             min_size=1, max_size=4), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(archive=archives, batch=st.one_of(st.none(), st.integers(1, 4)), data=st.data())
def test_index_never_causes_a_miss(
    tmp_path_factory: pytest.TempPathFactory, archive: list, batch: int | None, data: st.DataObject,
) -> None:
    """Any archive, indexed at seal or as written, any query (partial tokens, short ones,
    absent ones): the records are those a full scan finds."""
    data_dir = tmp_path_factory.mktemp("data")
    segments = [[record(n, " ".join(words), level, logger) for n, (words, level, logger) in enumerate(segment)]
                for segment in archive]
    rows = seal_records(data_dir, segments, batch=batch)
    everything = [r for segment in segments for r in segment]
    some_message = data.draw(st.sampled_from([r["message"] for r in everything]))
    start = data.draw(st.one_of(st.just(0), st.integers(0, len(some_message))))
    length = data.draw(st.integers(0, 12))
    query = data.draw(st.sampled_from([
        some_message[start:start + length],  # a partial token, maybe short
        some_message[-length:],  # the end of a message
        data.draw(st.text(alphabet="abcXYZ9é-", min_size=1, max_size=6)),
    ]))
    logger = data.draw(st.one_of(st.none(), st.sampled_from([*LOGGERS, "app*", "nothing"])))
    level = data.draw(st.one_of(st.none(), st.sampled_from(LEVELS)))
    wanted = Filters(contains=query, logger=logger, level=level)
    found = list(local_archive(data_dir, rows).records(contains=query, logger=logger, level=level))
    assert found == [r for r in everything if wanted.matches(r)]


def test_only_segments_that_may_match_are_read(tmp_path: Path) -> None:
    rng = random.Random(7)
    segments = [[record(n, f"user {uuid.UUID(int=rng.getrandbits(128))} from 10.0.{s}.{n} took {n * 7} ms",
                        logger=f"svc{s % 3}") for n in range(50)] for s in range(20)]
    segments[13][20]["message"] += " needle-in-haystack"
    rows = seal_records(tmp_path, segments)
    archive = local_archive(tmp_path, rows)
    seen = opened(archive)
    assert [r["message"] for r in archive.records(contains="in-hay")] == [segments[13][20]["message"]]
    assert seen == [rows[13].id]
    seen.clear()
    assert len(list(archive.records(logger="svc1"))) == 7 * 50
    assert len(seen) == 7
    seen.clear()
    assert len(list(archive.records(contains="ne"))) == 1  # shorter than a trigram: every segment read
    assert len(seen) == 20


def test_segments_without_an_index_are_always_read(tmp_path: Path) -> None:
    rows = seal_records(tmp_path, [[record(1, "alpha")], [record(2, "beta")], [record(3, "gamma")]])
    DataDir(tmp_path).index_path("app", rows[0].id).unlink()  # sealed before indexes existed
    newer = DataDir(tmp_path).index_path("app", rows[1].id)
    newer.write_bytes(MAGIC + bytes([9]) + newer.read_bytes()[len(MAGIC) + 1:])  # a later index version
    archive = local_archive(tmp_path, rows)
    seen = opened(archive)
    assert list(archive.records(contains="zzz")) == []
    assert seen == [rows[0].id, rows[1].id]
    with pytest.raises(SearchIndexError, match="version 9"):
        SearchIndex.parse(newer.read_bytes())


def noisy_records(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [record(n, f"user {uuid.UUID(int=rng.getrandbits(128))} said {rng.randbytes(6).hex()} é{n}",
                   rng.choice(LEVELS), rng.choice(LOGGERS)) for n in range(count)]


@pytest.mark.parametrize("count", [10, 2_000])  # the text of the messages, or their trigrams' codes
def test_an_index_built_as_written_is_the_index_of_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int,
) -> None:
    """One batch: the index from its part is byte for byte the one a parse of the segment
    gives; and sealing does not parse the segment for it."""
    records = noisy_records(count, count)
    lines = encode_lines(records)
    assert bool(lines.index and lines.index.codes) == (count > 10)
    expected = build([lines.data])
    monkeypatch.setattr(IndexBuilder, "add_block", lambda *_: pytest.fail("the sealed segment was parsed"))
    [row] = seal_records(tmp_path, [records], batch=count)
    assert DataDir(tmp_path).index_path("app", row.id).read_bytes() == expected


def test_an_index_built_from_many_parts_finds_every_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of every size, text folded into codes many times over: every message and
    every piece of one is found, the loggers and levels are the segment's, and nothing is
    claimed that a parse of the segment would not."""
    monkeypatch.setattr(search_index, "FOLD_BYTES", 2_000)
    records = noisy_records(6_000, 3)
    builder, start = IndexBuilder(), 0
    for size in itertools.cycle([1, 7, 300, 2, 40, 900]):
        lines = encode_lines(records[start:start + size])
        assert lines.index is not None
        assert builder.add_part(lines.index, lines.levels)
        start += size
        if start >= len(records):
            break
    index = SearchIndex.parse(builder.to_bytes() or b"")
    parsed = SearchIndex.parse(build([encode_lines(records).data]) or b"")
    assert (index.levels, index.loggers) == (parsed.levels, parsed.loggers)
    rng = random.Random(5)
    for r in rng.sample(records, 300):
        begin = rng.randrange(len(r["message"]))
        assert index.may_contain(r["message"]) and index.may_contain(r["message"][begin:begin + rng.randint(3, 9)])
    absent = [uuid.UUID(int=rng.getrandbits(128)).hex[:8] for _ in range(300)]
    assert [q for q in absent if index.may_contain(q)] == [q for q in absent if index.may_contain(q) and parsed.may_contain(q)]


def test_a_segment_with_too_many_trigrams_to_hold_is_indexed_as_it_is_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search_index, "PARTS_MAX", 10_000)
    records = noisy_records(2_000, 4)
    tally = SegmentTally()
    for start in range(0, len(records), 100):
        tally.add_lines(encode_lines(records[start:start + 100]))
    assert tally.index is None  # its parts were dropped on the way
    [row] = seal_records(tmp_path, [records], batch=100)
    assert DataDir(tmp_path).index_path("app", row.id).read_bytes() == build([encode_lines(records).data])


def test_every_trigram_is_indexed() -> None:
    index = SearchIndex.parse(build([orjson.dumps(record(0, m)) + b"\n" for m in ("abcdef", "ghi")]) or b"")
    assert all(index.may_contain(q) for q in ("abc", "bcd", "def", "abcdef", "ghi", "gh", ""))
    assert not any(index.may_contain(q) for q in ("abd", "defg", "fgh", "bce"))


def test_an_unreadable_line_leaves_no_index() -> None:
    assert build([b'{"message": "ok", "logger": "a", "level": "INFO"}\n']) is not None
    assert build([b'{"message": "ok"}\n', b"not json\n"]) is None
    lone = build([b'{"message": "x\\ud800yz", "logger": "a", "level": "INFO"}\n'])
    assert lone is not None and SearchIndex.parse(lone).may_contain("\ud800yz")


def upload_all(tmp_path: Path, segments: list[list[dict[str, Any]]]) -> Store:
    """Seal, upload, publish, verify and prune: the store is the only copy; the first
    segment has no index (sealed before indexes existed)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = seal_records(data_dir, segments)
    DataDir(data_dir).index_path("app", rows[0].id).unlink()
    store = FsStore(MemoryFS())
    uploader = make_uploader(tmp_path, store, keep_local=0)
    assert uploader.upload_due()["uploaded"] == len(segments)
    uploader.publish()
    uploader.verify_due()
    assert uploader.prune_due()["pruned"] == len(segments)
    assert not list((data_dir / "spool" / "sealed" / "app").iterdir())  # index files pruned with their segments
    return store


def test_a_reader_with_only_the_store_uses_the_published_index(tmp_path: Path) -> None:
    segments = [[record(n, f"request {s}-{n} done", logger="app.db" if s == 2 else "app") for n in range(5)]
                for s in range(6)]
    segments[4][3]["message"] = "request failed: disk full"
    store = upload_all(tmp_path, segments)
    paths = [index_path(row) for row in store_archive(store).segments()]
    assert paths[0] is not None and paths[0].startswith("/_manifest/sinkA/index/app/")
    assert [store.exists(path) for path in paths if path] == [False, True, True, True, True, True]
    archive = store_archive(store)
    seen = opened(archive)
    assert [r["message"] for r in archive.records(contains="disk full")] == ["request failed: disk full"]
    assert len(seen) == 2  # the one without an index, and the match
    seen.clear()
    assert len(list(archive.records(logger="app.d*"))) == 5
    assert len(seen) == 2
    forgotten = archive.segments()[4]
    Forgetter(DataDir(tmp_path / "data"), store).forget([Dropped(forgotten, "retention")])
    assert not store.exists(index_path(forgotten) or "")  # its trigrams tell of the messages
