"""archiver replay: the merge and its checkpoint, the wire formats, and replays into a second
archiver and a real syslog-ng, killed, resumed, and with the target down for a while."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from click.testing import CliRunner, Result

from archiver.app.replay import ReplaySettings, replay
from archiver.app.replay_send import TargetUnavailable
from archiver.app.replay_wire import json_object, octet_counted, rfc5424
from archiver.format.layout import DataDir
from archiver.format.record import Context, encode_record
from archiver.ingest.decode.jsonbody import json_record
from archiver.read.checkpoint import Checkpoint, CheckpointError, load, save
from archiver.read.merge import MergeSegment, merge
from archiver.read.reader import Filters, data_dir_archive, existing_data_dir
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.app.cli import main
from conftest import StartLocal, low_port, read_json, stop_process, wait_until

BASE = 1_795_000_000  # 2026-11-18
RECORDS = 600


def _segment(name: str, first_ts: str, stamps: list[str], opened: list[str]) -> MergeSegment:
    def lines() -> Iterator[bytes]:
        opened.append(name)
        return iter(orjson.dumps({"ts": ts, "n": f"{name}{i}"}) for i, ts in enumerate(stamps))

    return MergeSegment(name, first_ts, lines)


def test_merge_is_stable_by_ts_segment_line_and_opens_segments_lazily() -> None:
    opened: list[str] = []
    segments = [
        _segment("c", "5", ["5", "6"], opened),
        _segment("a", "1", ["1", "3", "3"], opened),
        _segment("b", "2", ["4", "2", "7"], opened),  # arrival order is not time order
    ]
    out = merge(segments)
    first = next(out)
    assert first.record["n"] == "a0" and opened == ["a"]  # b and c wait until the merge reaches them
    rest = [m.record["n"] for m in out]
    assert rest == ["a1", "a2", "b0", "b1", "c0", "c1", "b2"]
    assert opened == ["a", "b", "c"]


def test_merge_resumes_from_positions_exactly() -> None:
    def segments() -> list[MergeSegment]:
        return [_segment(name, "0", [f"{n:03d}" for n in range(start, 90, 3)], [])
                for name, start in (("x", 0), ("y", 1), ("z", 2))]

    whole = [(m.segment, m.line) for m in merge(segments())]
    positions: dict[str, int] = {}
    for m in whole[:37]:
        positions[m[0]] = m[1] + 1
    assert [(m.segment, m.line) for m in merge(segments(), positions)] == whole[37:]


def test_checkpoint_round_trips_and_refuses_another_replay(tmp_path: Path) -> None:
    path = tmp_path / "state" / "r.json"
    assert load(path, "q1") is None
    save(path, Checkpoint("q1", "2026-11-18T00:00:00.000000Z", None, {"seg": 3}, 3))
    assert load(path, "q1") == Checkpoint("q1", "2026-11-18T00:00:00.000000Z", None, {"seg": 3}, 3)
    with pytest.raises(CheckpointError, match="another replay"):
        load(path, "q2")


def test_a_record_is_sent_as_its_fields_when_they_give_it_back_else_whole() -> None:
    ctx = Context("app", "10.0.0.1", BASE + 0.5)
    timed = json_record({"created": BASE, "levelname": "WARNING", "name": "app.db", "msg": "x %s", "args": "(1,)"}, ctx)
    untimed = json_record({"message": "no time", "severity": "err"}, ctx)
    assert json_object(timed) is timed["fields"]
    assert json_object(untimed) is untimed
    for record in (timed, untimed):
        again = json_record(orjson.loads(encode_record(json_object(record))), Context("r", None, time.time()))
        assert {k: again[k] for k in ("ts", "level", "logger", "message")} == \
               {k: record[k] for k in ("ts", "level", "logger", "message")}


def test_rfc5424_carries_the_original_time() -> None:
    record = {"ts": "2026-11-18T08:53:20.000001Z", "level": "ERROR", "logger": "app.db", "message": "a\nb"}
    message = rfc5424(record)
    assert message == "<11>1 2026-11-18T08:53:20.000001Z - app.db - - - a\nb".encode()
    assert octet_counted(message) == b"%d %s" % (len(message), message)
    assert rfc5424({**record, "logger": "two words", "message": None}).startswith(b"<11>1 2026-11-18T08:53:20.000001Z - - ")


# -- replays of a real archive ----------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A data dir of two streams whose segments (50 records each) interleave in time, every
    tenth record with no time of its own (its ts is the receive time); and its records in the
    order a replay must send them."""
    data_dir = tmp_path_factory.mktemp("replay") / "source"
    data_dir.mkdir()
    records = []
    for n in range(RECORDS):
        stream = "a" if n % 2 == 0 else "b"
        fields: dict[str, Any] = {"message": f"m{n}", "levelname": "INFO", "name": f"app.{stream}"}
        if n % 10:
            fields["created"] = BASE + n
        records.append(json_record(fields, Context(stream, "127.0.0.1", BASE + n + 0.5)))

    async def write() -> None:
        writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 50, 3600))
        await writer.start()
        for record in records:
            writer.write(record["stream"], encode_record(record), 1)
        await writer.commit()
        await writer.close()

    asyncio.run(write())
    return data_dir, sorted(records, key=lambda r: r["ts"])


def _same_record(got: dict[str, Any], sent: dict[str, Any]) -> bool:
    """What a replay keeps: ts, level, logger, message; fields as sent, or the whole record."""
    return all(got[k] == sent[k] for k in ("ts", "level", "logger", "message")) and \
        got["fields"] == (sent["fields"] if "created" in sent["fields"] else sent)


def _replay(*args: str) -> list[str]:
    return ["replay", "--data-dir", *args]


def replay_here(*args: str) -> Result:
    """``archiver replay`` in this process: most replays need no process boundary."""
    result = CliRunner().invoke(main, _replay(*args))
    assert result.exit_code == 0, result.output
    return result


def test_replay_into_a_second_archiver_in_time_order(source, local_sink: StartLocal, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir, expected = source
    target = local_sink({"ARCHIVER_AUTH_TOKENS": "t0ken"}, data_dir=tmp_path / "target")
    resume = tmp_path / "resume.json"
    refused = CliRunner().invoke(main, _replay(str(data_dir), "--to", f"{target.url}/again", "--resume-file", str(resume)))
    assert refused.exit_code == 1 and "HTTP 401" in refused.output
    (tmp_path / "token").write_text("t0ken\n")
    replay_here(str(data_dir), "--to", f"{target.url}/again", "--token", f"@{tmp_path / 'token'}", "--batch-size", "64",
                "--resume-file", str(resume))
    target.stop()
    got = read_json(tmp_path / "target", "again")
    assert len(got) == len(expected)
    assert all(_same_record(g, e) for g, e in zip(got, expected))
    assert orjson.loads(resume.read_bytes())["complete"] is True
    again = replay_here(str(data_dir), "--to", f"{target.url}/again", "--batch-size", "64", "--resume-file", str(resume))
    assert "nothing to send" in again.stderr


class FlakySender:
    """Takes batches, after failing the first ``failures`` tries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[dict[str, Any]]] = []

    def send(self, records: list[dict[str, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise TargetUnavailable("connection refused")
        self.batches.append(list(records))

    def close(self) -> None:
        pass


def test_rate_and_retries_in_process(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A fake clock: --rate paces batches to records/rate, and a failing target is retried
    with the shared backoff, losing nothing."""
    data_dir, expected = source
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    retries: list[tuple[int, float]] = []
    sender = FlakySender(failures=3)
    saved: list[int] = []
    with data_dir_archive(existing_data_dir(data_dir)) as archive:
        sent = replay(archive, Filters(stream="a"), sender, Checkpoint("q", None, None), lambda c: saved.append(c.sent),
                      ReplaySettings(batch_size=100, rate=60.0), lambda n, why, delay: retries.append((n, delay)),
                      sleep=sleep, clock=lambda: now[0])
    want = [e["ts"] for e in expected if e["stream"] == "a"]
    assert sent == len(want) and [r["ts"] for batch in sender.batches for r in batch] == want
    assert {len(batch) for batch in sender.batches} == {60}  # a batch is at most a second's worth
    assert [n for n, _ in retries] == [1, 2, 3] and all(0.25 <= d <= 2.0 for _, d in retries)
    assert now[0] >= len(want) / 60.0 and saved == [*range(60, len(want) + 1, 60), len(want)]  # then: complete


def test_a_replay_killed_midway_and_resumed_skips_nothing(source, local_sink: StartLocal, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir, expected = source
    target = local_sink(data_dir=tmp_path / "target")
    resume = tmp_path / "resume.json"
    flags = (str(data_dir), "--to", f"{target.url}/again", "--batch-size", "20", "--rate", "400",
             "--resume-file", str(resume))
    proc = subprocess.Popen([sys.executable, "-m", "archiver", *_replay(*flags)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: resume.exists() and orjson.loads(resume.read_bytes())["sent"] >= 200, "a checkpoint", 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    stopped_at = orjson.loads(resume.read_bytes())["sent"]
    assert stopped_at < RECORDS
    replay_here(*flags)
    target.stop()
    got = [r["fields"].get("message") for r in read_json(tmp_path / "target", "again")]
    want = [r["message"] for r in expected]
    assert set(got) == set(want)
    assert len(got) - len(want) <= 20  # at most the batch in flight at the kill, sent again
    first_seen = list(dict.fromkeys(got))
    assert first_seen == want


def _open_lines(data_dir: Path, stream: str) -> int:
    return sum(len(path.read_bytes().splitlines()) for s, _, path in DataDir(data_dir).open_segments() if s == stream)


def test_a_target_down_for_a_while_is_retried(source, start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Over HTTP (stream a) and as JSON lines to the TCP source (stream b), both started while
    nothing listens."""
    data_dir, expected = source
    http_port, tcp_port = low_port(), low_port()
    targets = {"a": f"http://127.0.0.1:{http_port}/late", "b": f"tcp://127.0.0.1:{tcp_port}"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "archiver",
                          *_replay(str(data_dir), "--to", to, "--format", "json", "--stream", stream,
                                   "--resume-file", str(tmp_path / f"{stream}.json"))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for stream, to in targets.items()
    ]
    try:
        for proc in procs:
            assert proc.stderr is not None and b"target unavailable" in proc.stderr.readline()
        sink = start_sink(tmp_path / "target", "--port", str(http_port), "--tcp-port", str(tcp_port))
        assert [proc.wait(120) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stderr:
                proc.stderr.close()
    wanted = {stream: [e for e in expected if e["stream"] == stream] for stream in targets}
    wait_until(lambda: _open_lines(tmp_path / "target", "tcp") >= len(wanted["b"]), "the TCP source's records", 60)
    sink.stop()
    for stream, got in (("a", read_json(tmp_path / "target", "late")), ("b", read_json(tmp_path / "target", "tcp"))):
        assert len(got) == len(wanted[stream])
        assert all(_same_record(g, e) for g, e in zip(got, wanted[stream])), stream


SYSLOG_NG_CONF = """@version: 3.38
options {{ frac-digits(6); }};
source s_in {{ syslog(ip("127.0.0.1") port({port}) transport("tcp")); }};
destination d_out {{ file("{out}" template("${{S_ISODATE}}\\t${{PROGRAM}}\\t${{LEVEL}}\\t${{MSG}}\\n") time-zone("UTC")); }};
log {{ source(s_in); destination(d_out); }};
"""


def test_replay_to_syslog_ng_over_tcp_keeps_each_record_time(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    binary = shutil.which("syslog-ng")
    if binary is None:  # never a skip: make test installs it
        pytest.fail("syslog-ng is required (Debian syslog-ng-core; make test installs it)")
    data_dir, expected = source
    port, out = low_port(), tmp_path / "received.log"
    conf = tmp_path / "syslog-ng.conf"
    conf.write_text(SYSLOG_NG_CONF.format(port=port, out=out))
    state = tmp_path / "sng"
    state.mkdir()
    with open(tmp_path / "syslog-ng.log", "wb") as log:
        daemon = subprocess.Popen([binary, "-F", "-e", "--no-caps", "-f", str(conf), "-R", str(state / "persist"),
                                   "-p", str(state / "pid"), "-c", str(state / "ctl")], stdout=log, stderr=subprocess.STDOUT)
    try:
        replay_here(str(data_dir), "--to", f"tcp://127.0.0.1:{port}", "--format", "rfc5424",
                    "--resume-file", str(tmp_path / "r.json"))
        wait_until(lambda: out.exists() and len(out.read_bytes().splitlines()) >= RECORDS, "syslog-ng's file", 60)
    finally:
        stop_process(daemon)
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert [(ts.replace("+00:00", "Z"), program, level, message) for ts, program, level, message in lines] == \
           [(e["ts"], e["logger"], "info", e["message"]) for e in expected]
