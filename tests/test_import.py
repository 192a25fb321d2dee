"""archiver import: the parsers (syslog, text with continuation lines, year resolution), file
fingerprints and offsets, and real processes: a SIGKILL mid-import resumed without duplicates,
a rotated directory imported again, an import through a running sink."""

from __future__ import annotations

import asyncio
import calendar
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.format.layout import DataDir
from archiver.format.manifest import ImportPosition, Manifest, file_fingerprint
from archiver.format.record import Context, encode_lines
from archiver.ingest.decode.imported import FILE_FIELD, LineDecoder, sniff_format
from archiver.ingest.decode.syslog import parse_syslog
from archiver.ingest.decode.textlog import join_text
from archiver.ingest.files import head, open_decompressed, whole_lines
from archiver.spool.imports import ImportBatch, ImportSpool
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from conftest import archiver_cli, read_json, wait_until

JAN_2027 = calendar.timegm((2027, 1, 3, 12, 0, 0))
_NAME = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='="]'), min_size=1,
               max_size=12).filter(lambda name: name != "-")  # "-" is RFC 5424's nil value


@pytest.fixture(autouse=True, scope="module")
def _utc() -> Iterator[None]:
    """Year-less syslog dates are read in local time: this module's run in UTC, and the
    process's zone is given back after it."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


# -- parsers -------------------------------------------------------------------------------

def test_a_december_line_in_a_file_modified_in_january_is_of_the_year_before() -> None:
    dec = parse_syslog("Dec 31 23:59:58 host cron[7]: rotated", JAN_2027)
    jan = parse_syslog("Jan  3 11:00:00 host cron[7]: after", JAN_2027)
    assert dec is not None and dec[0] == "2026-12-31T23:59:58.000000Z"
    assert jan is not None and jan[0] == "2027-01-03T11:00:00.000000Z"
    assert dec[1] == {"host": "host", "app": "cron", "procid": "7"} and dec[2] == "rotated"


@settings(max_examples=300, deadline=None)
@given(moment=st.integers(86400 * 400, 4_000_000_000), mtime=st.integers(86400 * 400, 4_000_000_000))
def test_a_yearless_date_lands_in_the_year_before_the_files_mtime_or_its_own(moment: int, mtime: int) -> None:
    parts = time.gmtime(moment)
    stamp = f"{time.strftime('%b', parts)} {parts.tm_mday:>2} {time.strftime('%H:%M:%S', parts)}"
    parsed = parse_syslog(f"{stamp} host app: x", mtime)
    if stamp.startswith("Feb 29"):
        return  # a leap day's year is not always among the two tried
    assert parsed is not None
    resolved = calendar.timegm(time.strptime(parsed[0][:19], "%Y-%m-%dT%H:%M:%S"))
    assert mtime - 366 * 86400 <= resolved - 86400 <= mtime
    if mtime - 300 * 86400 <= moment <= mtime:
        assert resolved == moment


@settings(max_examples=200, deadline=None)
@given(pri=st.integers(0, 191), host=_NAME, app=_NAME, msgid=_NAME, micros=st.integers(0, 999_999),
       params=st.dictionaries(_NAME, st.text(max_size=10).filter(lambda v: "\n" not in v), max_size=3),
       message=st.text(max_size=40).filter(lambda m: not m.startswith("\ufeff")))
def test_rfc5424_lines_give_back_every_part(pri: int, host: str, app: str, msgid: str, micros: int,
                                             params: dict[str, str], message: str) -> None:
    escaped = "".join(f' {k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace("]", chr(92) + "]")}"'
                      for k, v in params.items())
    sd = f"[id@1{escaped}]"
    line = f"<{pri}>1 2026-05-04T03:02:01.{micros:06d}Z {host} {app} - {msgid} {sd} {message}"
    parsed = parse_syslog(line, 0)
    assert parsed is not None
    ts, fields, text = parsed
    assert ts == f"2026-05-04T03:02:01.{micros:06d}Z" and text == message
    assert fields["host"] == host and fields["app"] == app and fields["msgid"] == msgid
    assert fields["structured_data"] == {"id@1": params}
    assert "procid" not in fields


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 86399), st.lists(st.sampled_from(
    ["Traceback (most recent call last):", '  File "x.py", line 1, in f', "ValueError: bad", "", "\tindented"]),
    max_size=4)), min_size=1, max_size=20), st.integers(0, 40))
def test_text_records_keep_their_continuation_lines_across_any_chunking(
        records: list[tuple[int, list[str]]], cut: int) -> None:
    lines, expected = [], []
    for second, continuation in records:
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1_700_000_000 + second)) + ",5 ERROR failed"
        lines += [first, *continuation]
        expected.append("\n".join([first, *continuation]))
    cut = min(cut, len(lines))
    got, used = join_text(lines[:cut], 0, final=False)
    rest, _ = join_text(lines[used:], 0, final=True)
    assert [record.message for record in got + rest] == expected
    assert all(record.level == "ERROR" and record.ts is not None for record in got + rest)


def test_text_lines_without_times_are_records_of_their_own_unless_indented() -> None:
    got, used = join_text(["plain one", "  more of one", "plain two"], 0, final=True)
    assert [r.message for r in got] == ["plain one\n  more of one", "plain two"] and used == 3


def test_each_format_is_sniffed_and_mapped_with_its_file_name() -> None:
    assert [sniff_format(line) for line in (b'{"a": 1}', b"<13>Feb  5 17:32:18 host x: y", b"hello")] == \
        ["jsonl", "syslog", "text"]
    ctx = Context("s", None, JAN_2027)
    decoded, used = LineDecoder("syslog", "/var/log/syslog", ctx, JAN_2027).decode(
        [b"<11>Jan  2 03:04:05 web nginx[9]: upstream down", b"\xff not a line"], final=True)
    record = decoded.records[0]
    assert (record["level"], record["logger"], record["message"], record["source"]) == \
        ("ERROR", "nginx", "upstream down", "import")
    assert record["fields"][FILE_FIELD] == "/var/log/syslog" and used == 2
    assert [item.raw for item in decoded.rejected] == [b"\xff not a line"]


# -- files ---------------------------------------------------------------------------------

def test_a_compressed_copy_has_the_same_head_and_lines_resume_at_an_offset(tmp_path: Path) -> None:
    body = b"".join(b"line %d\n" % n for n in range(500)) + b"no newline"
    (tmp_path / "plain").write_bytes(body)
    with gzip.open(tmp_path / "copy.gz", "wb") as out:
        out.write(body)
    assert head(tmp_path / "plain") == head(tmp_path / "copy.gz") == body[:1024]
    for name in ("plain", "copy.gz"):
        with open_decompressed(tmp_path / name) as content:
            assert b"".join(data for data, _ in whole_lines(content, 7)) == body[7:]


# -- the sink's side -----------------------------------------------------------------------

def test_an_imported_batch_waits_for_the_manifest_lock_off_the_event_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = SegmentWriter(DataDir(tmp_path), "t", RotationPolicy(2**20, 10_000, 60))
        await writer.start()
        spool = ImportSpool(writer, tmp_path)
        lines = encode_lines([{"ts": "2026-11-30T10:00:00.000000Z", "level": "INFO", "message": "m"}])
        batch = ImportBatch("s", "a.log", ImportPosition(file_fingerprint(b"x"), 1), 2, [(JAN_2027, lines)],
                            encode_lines([]))
        sealer = sqlite3.connect(tmp_path / Manifest.FILENAME, isolation_level=None)
        sealer.execute("BEGIN IMMEDIATE")  # the manifest's write lock, held as a seal holds it
        appending = asyncio.ensure_future(spool.append(batch))
        await asyncio.sleep(0.2)  # the loop runs on while the batch's note waits for the lock
        assert not appending.done()
        assert await writer.flush() == []  # retires the segment the note names: sealed only once written
        sealer.execute("COMMIT")
        await appending
        spool.close()
        await writer.close()

    asyncio.run(scenario())
    with closing(Manifest(tmp_path, read_only=True)) as manifest:
        assert manifest.import_offset(file_fingerprint(b"x")) == 2
    assert [record["message"] for record in read_json(tmp_path, "s")] == ["m"]


# -- real processes ------------------------------------------------------------------------

def _jsonl(path: Path, first: int, count: int) -> None:
    with open(path, "ab") as out:
        out.write(b"".join(orjson.dumps({"ts": 1_700_000_000 + n, "level": "INFO", "message": f"m{n}"}) + b"\n"
                           for n in range(first, first + count)))


def _messages(data_dir: Path, stream: str = "import") -> list[str]:
    return [record["message"] for record in read_json(data_dir, stream)]


def _imported_offset(data_dir: Path, writing: bool = False) -> int:
    """How far the file was imported (0 unless a batch is being written, when ``writing``)."""
    query = "SELECT coalesce(max(offset), 0) FROM imports" + (" WHERE pending IS NOT NULL" if writing else "")
    try:
        with closing(sqlite3.connect(f"file:{data_dir / Manifest.FILENAME}?mode=ro", uri=True)) as db:
            return int(db.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _open_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in (data_dir / "spool" / "open").glob("*/*.jsonl"))


def test_an_import_killed_midway_resumes_without_duplicates(tmp_path: Path) -> None:
    logs, data = tmp_path / "logs", tmp_path / "data"
    logs.mkdir()
    lines = 30_000  # three batches of a MiB or less: the kill lands in the second
    _jsonl(logs / "app.jsonl", 0, lines)
    size = (logs / "app.jsonl").stat().st_size
    # Each batch waits between being durable and its offset moving; the kill lands there, after the
    # first batch: the second, in the open segment, must be cut off again at the next start.
    slowed = {**os.environ, "ARCHIVER_FAILPOINTS": "import.before_offset=sleep:0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "import", "--data-dir", str(data), str(logs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=slowed)
    try:
        wait_until(lambda: _imported_offset(data, writing=True) > 0 or proc.poll() is not None, "a second batch",
                   timeout=60)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert 0 < _imported_offset(data) < size and _open_bytes(data) > 0, "the kill must land mid-import"
    archiver_cli("import", "--data-dir", str(data), str(logs))
    messages = _messages(data)
    assert len(messages) == lines and set(messages) == {f"m{n}" for n in range(lines)}


def test_a_rotated_directory_imports_only_what_is_new(tmp_path: Path) -> None:
    logs, data = tmp_path / "log", tmp_path / "data"
    logs.mkdir()

    def write(name: str, first: int, count: int) -> None:
        with open(logs / name, "a") as out:
            out.writelines(f"<30>1 2026-11-30T10:{n // 60 % 60:02d}:{n % 60:02d}Z host app - - - line {n}\n"
                           for n in range(first, first + count))

    write("syslog", 0, 100)
    archiver_cli("import", "--data-dir", str(data), str(logs))
    write("syslog", 100, 50)  # it grew, then was rotated twice and compressed: only its tail is new
    with open(logs / "syslog", "rb") as old, gzip.open(logs / "syslog.2.gz", "wb") as packed:
        packed.write(old.read())
    (logs / "syslog").unlink()
    write("syslog.1", 150, 30)
    write("syslog", 180, 20)
    packed = gzip.compress(b"".join(b"other %d\n" % n for n in range(5000)))
    (logs / "broken.gz").write_bytes(packed[: len(packed) // 2])  # cut short: unreadable past its start
    run = archiver_cli("import", "--data-dir", str(data), str(logs), check=False)
    out = run.stdout.decode()
    assert "imported 100 record(s) from 3 file(s)" in out, out
    assert run.returncode == 1 and f"FAILED {logs / 'broken.gz'}" in run.stderr.decode()
    assert sorted(_messages(data)) == sorted(f"line {n}" for n in range(200))


def test_an_import_goes_through_the_running_sink(tmp_path: Path, start_sink) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "logs"
    logs.mkdir()
    _jsonl(logs / "a.jsonl", 0, 3000)
    (logs / "b.log").write_text("2026-11-30 10:00:00,1 ERROR boom\nTraceback (most recent call last):\nKeyError: 1\n")
    sink = start_sink(tmp_path / "data")
    out = archiver_cli("import", "--data-dir", str(sink.data_dir), "--stream", "old", str(logs)).stdout.decode()
    assert f"through the sink at {sink.url}" in out and "imported 3,001 record(s)" in out, out
    sink.post("/live", b'{"message": "live"}')
    assert sink.stop() == 0
    assert len(_messages(sink.data_dir, "old")) == 3001
    rows = list(Manifest(sink.data_dir, read_only=True).segments("old"))
    assert {row.id[:15] for row in rows} == {"20231114T221320", "20231114T230000", "20261130T100000"}


def test_two_imports_of_one_file_through_a_running_sink_write_each_record_once(tmp_path: Path, start_sink) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = 60_000  # three batches of a MiB, each held a second by the sink: the imports overlap
    _jsonl(logs / "app.jsonl", 0, lines)
    sink = start_sink(tmp_path / "data", env={"ARCHIVER_FAILPOINTS": "import.before_offset=sleep:1"})
    command = [sys.executable, "-m", "archiver", "import", "--data-dir", str(sink.data_dir), str(logs)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    stopped = [err.decode() for _, err in outputs if f"stopped {logs / 'app.jsonl'}: " in err.decode()]
    assert len(stopped) == 1 and "another import is reading it" in stopped[0], outputs
    with closing(sqlite3.connect(sink.data_dir / Manifest.FILENAME)) as db:
        assert db.execute("SELECT offset, records FROM imports").fetchall() == \
            [((logs / "app.jsonl").stat().st_size, lines)]
    assert sink.stop() == 0
    messages = _messages(sink.data_dir)
    assert len(messages) == lines and set(messages) == {f"m{n}" for n in range(lines)}
