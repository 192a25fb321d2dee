"""syslog-ng 3.38 as a real client: http() JSON arrays and NDJSON, network() JSON lines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from archiver.common.units import format_ts
from conftest import ROOT, cat_json, stop_process

CONFIG = ROOT / "config" / "syslog-ng" / "archiver.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_lines(port: int, lines: list[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"".join(line + b"\n" for line in lines))
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def syslog_ng(start_sink, tmp_path: Path):  # type: ignore[no-untyped-def]
    binary = shutil.which("syslog-ng")
    if binary is None:  # never a skip: make test installs it
        pytest.fail("syslog-ng is required (Debian syslog-ng-core and syslog-ng-mod-http; make test installs them)")
    sink = start_sink(None, "--tcp-port", "0")
    tcp_port = int(orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"].rsplit(":", 1)[1])
    ports = {"SNG_IN_PORT": free_port(), "SNG_RAW_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "SNG_SINK": sink.url, "SNG_TCP_PORT": str(tcp_port)}
    state = tmp_path / "sng"
    state.mkdir()
    log = open(tmp_path / "syslog-ng.log", "wb")
    proc = subprocess.Popen(
        [binary, "-F", "-e", "--no-caps", "-f", str(CONFIG), "-R", str(state / "persist"), "-p", str(state / "pid"),
         "-c", str(state / "ctl")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield sink, ports, proc
    finally:
        stop_process(proc)


def wait_for(data_dir: Path, want: dict[str, int], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = cat_json(data_dir, "--include-open")
        counts = Counter(r["stream"] for r in records)
        if all(counts[stream] >= n for stream, n in want.items()) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_syslog_ng_three_ways(syslog_ng, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink, ports, _ = syslog_ng
    now = time.time()
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now - 3600))  # "Jan  2 03:04:05": no year, no zone
    severities = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
    lines = [f"<{8 + n % 8}>{stamp} web01 myapp[4{n}]: message {n}".encode() for n in range(200)]
    send_lines(ports["SNG_IN_PORT"], lines)
    records = wait_for(sink.data_dir, {"sng-array": 200, "sng-ndjson": 200, "tcp": 200})
    expected_ts = format_ts(int(now - 3600))
    for stream in ("sng-array", "sng-ndjson", "tcp"):
        mine = [r for r in records if r["stream"] == stream]
        assert sorted(r["message"] for r in mine) == sorted(f"message {n}" for n in range(200)), stream
        for record in mine:
            n = int(record["message"].split()[1])
            assert record["ts"] == expected_ts  # DATE, given the year and the local zone
            assert record["logger"] == "myapp" and record["fields"]["HOST"] == "web01"
            assert record["fields"]["PRIORITY"] == severities[n % 8]
            assert record["level"] == {"emerg": "CRITICAL", "alert": "CRITICAL", "crit": "CRITICAL", "err": "ERROR",
                                       "warning": "WARNING", "notice": "INFO", "info": "INFO", "debug": "DEBUG"}[severities[n % 8]]
    assert {r["source"] for r in records if r["stream"] == "tcp"} == {"tcp"}


def test_a_bad_line_in_a_batch_does_not_block_syslog_ng(syslog_ng) -> None:  # type: ignore[no-untyped-def]
    sink, ports, _ = syslog_ng
    first = [orjson.dumps({"message": f"good {n}"}) for n in range(9)] + [b"this is not json"]
    send_lines(ports["SNG_RAW_PORT"], first)
    records = wait_for(sink.data_dir, {"sng-raw": 9, "_rejected": 1})
    send_lines(ports["SNG_RAW_PORT"], [orjson.dumps({"message": f"after {n}"}) for n in range(10)])
    records = wait_for(sink.data_dir, {"sng-raw": 19})
    raw = sorted(r["message"] for r in records if r["stream"] == "sng-raw")
    assert raw == sorted([f"good {n}" for n in range(9)] + [f"after {n}" for n in range(10)])
    [bad] = [r for r in records if r["stream"] == "_rejected"]
    assert bad["fields"]["raw"] == "this is not json" and bad["fields"]["target_stream"] == "sng-raw"
