"""SegmentWriter on a real disk: rotation by each limit, group commit, sealing, recovery."""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.format.layout import DataDir, segment_seq
from archiver.format.manifest import Manifest
from archiver.format.record import Context, encode_record
from archiver.format.search_index import build
from archiver.format.segment import SegmentTally
from archiver.ingest.decode.jsonbody import json_record
from archiver.read.reader import data_dir_archive
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter

LOOSE = RotationPolicy(max_bytes=10**9, max_records=10**9, max_age=3600)


def line(n: int, level: str = "INFO", ts: float = 1_800_000_000.0) -> bytes:
    record = json_record({"message": f"m{n}", "level": level, "n": n, "created": ts + n}, Context("app", None, ts))
    return encode_record(record)


def run_writer(tmp_path: Path, body: Callable[[SegmentWriter], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        writer = SegmentWriter(DataDir(tmp_path), "sink1", kwargs.pop("policy", LOOSE), **kwargs)
        await writer.start()
        try:
            return await body(writer)
        finally:
            await writer.close()

    return asyncio.run(main())


def sealed(tmp_path: Path, stream: str = "app") -> list:
    with closing(Manifest(tmp_path)) as manifest:
        return list(manifest.segments(stream))


def all_messages(tmp_path: Path, stream: str = "app") -> list[str]:
    return [r["message"] for r in data_dir_archive(DataDir(tmp_path)).records(stream)]


@pytest.mark.parametrize(
    ("policy", "expected_segments"),
    [
        (RotationPolicy(max_bytes=10**9, max_records=4, max_age=3600), 3),  # 10 records, 4 per segment
        (RotationPolicy(max_bytes=len(line(0)) * 3, max_records=10**9, max_age=3600), 4),
    ],
)
def test_rotation_by_records_and_bytes(tmp_path: Path, policy: RotationPolicy, expected_segments: int) -> None:
    async def body(writer: SegmentWriter) -> None:
        for n in range(10):
            writer.write("app", line(n), 1)
            await writer.commit()

    run_writer(tmp_path, body, policy=policy)
    rows = sealed(tmp_path)
    assert len(rows) == expected_segments
    assert sum(row.records for row in rows) == 10
    assert all(row.raw_bytes <= policy.max_bytes for row in rows)
    assert all(row.records <= policy.max_records for row in rows)
    assert all_messages(tmp_path) == [f"m{n}" for n in range(10)]


def test_rotation_by_age_seals_while_running(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> int:
        writer.write("app", line(1), 1)
        await writer.commit()
        deadline = time.monotonic() + 10
        while not sealed(tmp_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return len(sealed(tmp_path))

    assert run_writer(tmp_path, body, policy=RotationPolicy(10**9, 10**9, max_age=0.3)) == 1


def test_one_oversized_batch_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    big = b"".join(line(n) for n in range(5))

    async def body(writer: SegmentWriter) -> None:
        writer.write("app", line(100), 1)
        writer.write("app", big, 5)
        writer.write("app", line(101), 1)
        await writer.commit()

    run_writer(tmp_path, body, policy=RotationPolicy(len(line(0)) * 2, 10**9, 3600))
    assert [row.records for row in sorted(sealed(tmp_path), key=lambda r: r.id)] == [1, 5, 1]


def test_concurrent_commits_share_fsync_rounds(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> tuple[int, int]:
        async def request(n: int) -> None:
            writer.write("app", line(n), 1)
            await writer.commit()

        await asyncio.gather(*(request(n) for n in range(200)))
        return writer.stats.fsync_rounds, writer.stats.commits_waited

    rounds, commits = run_writer(tmp_path, body)
    assert commits == 200
    assert rounds < 50  # group commit: many requests per fsync


def test_seal_records_stats_in_manifest(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> None:
        writer.write("app", line(3, "ERROR") + line(1, "INFO") + line(2, "INFO"), 3)
        await writer.commit()

    run_writer(tmp_path, body)
    [row] = sealed(tmp_path)
    assert row.records == 3 and row.levels == {"ERROR": 1, "INFO": 2} and row.state == "sealed"
    assert row.first_ts == "2027-01-15T08:00:01.000000Z" and row.last_ts == "2027-01-15T08:00:03.000000Z"
    path = tmp_path / row.local_path
    assert path.name == f"{row.id}.jsonl.gz" and path.stat().st_size == row.stored_bytes
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
    assert len(gzip.decompress(path.read_bytes())) == row.raw_bytes
    # A plain gzip member any reader takes: deflate, no flags (no file name), mtime 0, OS unknown.
    assert path.read_bytes()[:10] == bytes.fromhex("1f8b08000000000000ff")
    assert not list((tmp_path / "spool" / "open").glob("*/*.jsonl"))


def test_zstd_segments(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> None:
        writer.write("app", b"".join(line(n) for n in range(50)), 50)
        await writer.commit()

    run_writer(tmp_path, body, compression="zstd", compression_level=3)
    [row] = sealed(tmp_path)
    assert row.local_path.endswith(".jsonl.zst") and row.compression == "zstd"
    assert all_messages(tmp_path) == [f"m{n}" for n in range(50)]


@pytest.mark.parametrize("policy", ["interval", "never"])
def test_other_fsync_policies_ack_without_waiting(tmp_path: Path, policy: str) -> None:
    async def body(writer: SegmentWriter) -> tuple[int, int]:
        for n in range(20):
            writer.write("app", line(n), 1)
            await writer.commit()
        for _ in range(200 if policy == "interval" else 0):  # the timer, not a commit, syncs
            if writer.stats.fsync_rounds:
                break
            await asyncio.sleep(0.05)
        return writer.stats.commits_waited, writer.stats.fsync_rounds

    waited, rounds = run_writer(tmp_path, body, fsync=policy, fsync_interval=0.05)
    assert waited == 0 and (rounds > 0 if policy == "interval" else rounds == 0)
    assert all_messages(tmp_path) == [f"m{n}" for n in range(20)]


def test_recovery_seals_leftovers_and_keeps_torn_line_in_rejected(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    left = data.open_path("app", "20270101T000000Z-sink1-000041")
    left.parent.mkdir(parents=True)
    left.write_bytes(line(1) + line(2) + b'{"ts":"2027-01-15T08:0')
    (data.sealed_dir / "app").mkdir(parents=True)
    (data.sealed_dir / "app" / ".stale.jsonl.gz.tmp").write_bytes(b"half a seal")

    async def body(writer: SegmentWriter) -> str:
        await writer.flush()
        writer.write("app", line(3), 1)
        await writer.commit()
        return writer._open["app"].id

    new_id = run_writer(tmp_path, body)
    assert not list(data.open_dir.glob("*/*.jsonl"))  # the _rejected segment was sealed too
    assert segment_seq(new_id) == 43  # numbering continues after the leftover (42 went to _rejected)
    assert all_messages(tmp_path) == ["m1", "m2", "m3"]
    [torn] = list(data_dir_archive(data).records("_rejected"))
    assert torn["fields"]["raw"] == '{"ts":"2027-01-15T08:0'
    assert torn["fields"]["segment"] == "20270101T000000Z-sink1-000041"
    assert not left.exists() and not (data.sealed_dir / "app" / ".stale.jsonl.gz.tmp").exists()


def test_reseal_after_crash_before_unlink_makes_no_duplicate(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    segment = data.open_path("app", "20270101T000000Z-sink1-000007")
    segment.parent.mkdir(parents=True)
    segment.write_bytes(line(1))
    run_writer(tmp_path, lambda writer: asyncio.sleep(0))
    segment.write_bytes(line(1))  # as if the sink died after the manifest commit, before unlink
    run_writer(tmp_path, lambda writer: asyncio.sleep(0))
    assert len(sealed(tmp_path)) == 1 and all_messages(tmp_path) == ["m1"]


def test_failed_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(writer: SegmentWriter) -> None:
        writer.write("app", line(1), 1)
        real_write = os.write

        def half_then_fail(fd: int, data: Any) -> int:
            monkeypatch.setattr(os, "write", fail)
            return real_write(fd, bytes(data[:10]))

        def fail(fd: int, data: Any) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(OSError):
            writer.write("app", line(2), 1)
        monkeypatch.setattr(os, "write", real_write)
        writer.write("app", line(3), 1)
        await writer.commit()

    run_writer(tmp_path, body)
    assert all_messages(tmp_path) == ["m1", "m3"]
    assert not list(data_dir_archive(DataDir(tmp_path)).records("_rejected"))


def test_spool_limit_and_accounting(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> tuple[bool, bool, int]:
        before = writer.over_limit()
        writer.write("app", b"".join(line(n) for n in range(100)), 100)
        await writer.commit()
        during = writer.over_limit()
        await writer.flush()
        return before, during, writer.spool_bytes

    before, during, after = run_writer(tmp_path, body, spool_limit=5000)
    assert (before, during) == (False, True)
    assert after == sum(p.stat().st_size for p in (tmp_path / "spool").rglob("*") if p.is_file())


def test_manifest_is_private_and_versioned(tmp_path: Path) -> None:
    Manifest(tmp_path).close()
    mode = stat.S_IMODE((tmp_path / "manifest.sqlite").stat().st_mode)
    assert mode == 0o600
    import sqlite3

    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    from archiver.format.manifest import ManifestError

    with pytest.raises(ManifestError, match="schema version 99"):
        Manifest(tmp_path)


def test_stream_names_cannot_escape_the_spool(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> None:
        for name in ("../../etc", "a/b", ".hidden", ""):
            with pytest.raises(ValueError):
                writer.write(name, line(1), 1)

    run_writer(tmp_path, body)


LINE_KINDS = st.sampled_from([
    line(1, "ERROR"), line(2), line(3, "DEBUG", 1_700_000_000.0), b"\n", b"not json\n", b'{"ts": 5, "level": "INFO"}\n',
    b'{"ts": "2020-01-01T00:00:00.000000Z", "level": ["x"]}\n', b"[1, 2]\n", b'{"level": "INFO"}\n',
    b'{"ts": "2020-01-01T00:00:00.000000Z", "level": null}\n',
])


@given(st.lists(LINE_KINDS, max_size=30))
def test_tally_by_block_counts_as_line_by_line(lines: list[bytes]) -> None:
    by_line, by_block = SegmentTally(), SegmentTally()
    kept_by_line = b"".join(item for item in lines if by_line.add(item))
    assert by_block.add_block(b"".join(lines)) == kept_by_line
    index = by_block.__dict__.pop("index")
    del by_line.__dict__["index"]
    assert vars(by_block) == vars(by_line)
    assert index.to_bytes() == build([kept_by_line])  # the records the tally kept, indexed


def test_a_segment_larger_than_a_read_block_seals_whole_with_its_torn_tail(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    left = data.open_path("app", "20270101T000000Z-sink1-000001")
    left.parent.mkdir(parents=True)
    body = b"".join(line(n) for n in range(12_000))  # about 2.5 read blocks, lines cut across blocks
    left.write_bytes(body + b"garbage in the middle\n" + body + b'{"ts":"2027')
    run_writer(tmp_path, lambda writer: writer.flush())
    [row] = sealed(tmp_path)
    assert row.records == 24_000 and row.raw_bytes == 2 * len(body)
    assert all_messages(tmp_path) == [f"m{n}" for n in range(12_000)] * 2
    raws = sorted(r["fields"]["raw"] for r in data_dir_archive(data).records("_rejected"))
    assert raws == ["garbage in the middle\n", '{"ts":"2027']


def test_stats_counted_while_writing_match_a_parse_of_the_file(tmp_path: Path) -> None:
    records = [json_record({"message": f"m{n}", "level": ["INFO", "ERROR", None][n % 3], "created": 1_800_000_000 - n},
                           Context("app", None, 0)) for n in range(30)]

    async def body(writer: SegmentWriter) -> None:
        writer.write_records("app", records[:10])
        writer.write_records("app", records[10:])
        assert writer._open["app"].tally is not None  # the seal will not parse the file
        await writer.commit()

    run_writer(tmp_path, body)
    [row] = sealed(tmp_path)
    parsed = SegmentTally()
    assert parsed.add_block(gzip.decompress((tmp_path / row.local_path).read_bytes()))
    assert (row.records, row.raw_bytes, row.levels, row.first_ts, row.last_ts) == (
        parsed.records, parsed.raw_bytes, dict(parsed.levels), parsed.first_ts, parsed.last_ts)
    assert row.levels == {"INFO": 10, "ERROR": 10, "NOTSET": 10}


def test_a_file_changed_behind_the_writer_is_sealed_line_by_line(tmp_path: Path) -> None:
    async def body(writer: SegmentWriter) -> None:
        writer.write_records("app", [json_record({"message": "m1"}, Context("app", None, 0))])
        await writer.commit()
        with open(writer._open["app"].path, "ab") as segment:
            segment.write(b"bytes the writer never wrote\n")

    run_writer(tmp_path, body)
    assert all_messages(tmp_path) == ["m1"] and sealed(tmp_path)[0].records == 1
    [stray] = list(data_dir_archive(DataDir(tmp_path)).records("_rejected"))
    assert stray["fields"]["raw"] == "bytes the writer never wrote\n"
