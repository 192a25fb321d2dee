"""Bulk ingest: NDJSON over HTTP keep-alive, and TCP JSON lines against syslog-ng, same run.

1. NDJSON batches (1,000 lines) over keep-alive connections from CLIENTS threads, fsync=always
   (durable: each 200 follows the fsync): records/s acknowledged (target >= 200,000), with the
   default decode worker processes (two) and with none (server.decode_workers = 0: everything on the
   sink's own core).
2. The same JSON lines, all on one TCP connection, into archiver's TCP source with fsync=always
   (durable: it closes the connection once every line is fsynced) and fsync=never, and into
   syslog-ng (network() -> json-parser -> file() with format-json, so both parse; not durable:
   file() writes without fsync); syslog-ng without the parser (flags(no-parse) -> file("$MSG"))
   too. archiver fsync=always again with the ten rules. syslog-ng is tuned as its documentation advises for throughput: log-fetch-limit(1000)
   and log-iw-size(640000) on the source, whose one connection (max-connections(1)) gets the
   whole window; log-fifo-size(100000) and flush-lines(1000) on the destination; flow-control
   on the log path, so like archiver it slows the sender rather than drop a line.
Every row runs --runs times, the rows taken in turn each round; min/median/max are printed,
and the server's CPU per record (median): the sink's process with its decode workers, or
syslog-ng's, from the first byte sent to the last record acknowledged or written (archiver's
sealing of what is left open at the end, after that, is not counted; what was sealed during a
run, with the search index and gzip, is).
Run: make bench   (or .venv/bin/python bench/ingest_bulk.py [--lines N] [--runs N])
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson
import requests
from common import cpu_seconds, rules_config, start_sink, stop

SYSLOG_NG_CONF = """@version: 3.38
options {{ stats-freq(0); keep-hostname(yes); use-dns(no); }};
source s_in {{ network(ip("127.0.0.1") port({port}) transport("tcp") flags(no-parse) max-connections(1)
                       log-fetch-limit(1000) log-iw-size(640000)); }};
{parser}
destination d_out {{ file("{out}" template("{template}\\n") log-fifo-size(100000) flush-lines(1000)); }};
log {{ source(s_in); {use_parser} destination(d_out); flags(flow-control); }};
"""
# A syslog-ng run that writes nothing for this long has lost lines (or stalled): fail, not hang.
STALL_SECONDS = 30.0


def sample_lines(count: int) -> list[bytes]:
    lines = []
    for n in range(count):
        record = {"DATE": "Nov 23 21:01:24", "HOST": "web01", "PROGRAM": "myapp", "PID": str(1000 + n % 50),
                  "PRIORITY": "info", "FACILITY": "user", "MESSAGE": f"request {n} served in {n % 97} ms",
                  "SOURCEIP": "127.0.0.1"}
        lines.append(orjson.dumps(record))
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Run:
    """One run of a row: records/s, and the server's CPU seconds per record."""

    rate: float
    cpu: float


def bench_ndjson(workdir: Path, lines: list[bytes], clients: int, seconds: float, *args: str,
                 decode_workers: int | None = None) -> Run:
    """``decode_workers``: the sink's default unless given."""
    workers = {} if decode_workers is None else {"ARCHIVER_SERVER_DECODE_WORKERS": str(decode_workers)}
    proc, info = start_sink(workdir, *args, env={"ARCHIVER_SPOOL_FSYNC": "always", **workers})
    body = b"\n".join(lines[:1000])
    acked = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        nonlocal acked
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                if session.post(f"{info['http']}/bulk", data=body, timeout=60).status_code == 200:
                    with lock:
                        acked += 1000

    try:
        cpu, start = cpu_seconds(proc.pid), time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Run(acked / (time.perf_counter() - start), (cpu_seconds(proc.pid) - cpu) / acked)
    finally:
        stop(proc)


def send_tcp(conn: socket.socket, payload: bytes, wait_for_close: bool) -> float:
    """Sends ``payload`` on ``conn`` and closes it; returns when the sending started."""
    start = time.perf_counter()
    with conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        if wait_for_close:  # archiver closes once every line is decoded and appended (fsynced if so set)
            while conn.recv(65536):
                pass
    return start


def connect_when_listening(port: int, timeout: float = 20) -> socket.socket:
    """The benchmark's one connection, once something listens on ``port``: a probe connection
    of its own would hold syslog-ng's single connection slot."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            conn.settimeout(None)  # a timeout would bound the whole sendall, however slow the reader
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bench_archiver_tcp(workdir: Path, payload: bytes, count: int, fsync: str, *args: str) -> Run:
    proc, info = start_sink(workdir, "--tcp-port", "0", *args, env={"ARCHIVER_SPOOL_FSYNC": fsync})
    try:
        port = int(info["tcp"].rsplit(":", 1)[1])
        cpu = cpu_seconds(proc.pid)
        start = send_tcp(socket.create_connection(("127.0.0.1", port)), payload, wait_for_close=True)
        return Run(count / (time.perf_counter() - start), (cpu_seconds(proc.pid) - cpu) / count)
    finally:
        stop(proc)


def wait_for_lines(out: Path, count: int) -> None:
    """Until ``out`` holds ``count`` lines, reading only what is new (rereading a file of
    100 MB every few ms would take the CPU syslog-ng is measured on)."""
    while not out.exists():
        time.sleep(0.005)
    written, last_progress = 0, time.monotonic()
    with out.open("rb") as reader:
        while written < count:
            chunk = reader.read(1 << 20)
            if chunk:
                written += chunk.count(b"\n")
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_SECONDS:
                raise RuntimeError(f"syslog-ng wrote {written} of {count} lines, then nothing for {STALL_SECONDS:.0f} s")
            else:
                time.sleep(0.005)


def bench_syslog_ng(workdir: Path, payload: bytes, count: int, parse: bool) -> Run:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="sng-", dir=workdir))
    out = state / "out.log"
    conf = state / "sng.conf"
    conf.write_text(SYSLOG_NG_CONF.format(
        port=port, out=out,
        parser='parser p_json { json-parser(prefix(".json.")); };' if parse else "",
        use_parser="parser(p_json);" if parse else "",
        template="$(format-json --scope dot-nv-pairs)" if parse else "$MSG",
    ))
    proc = subprocess.Popen([shutil.which("syslog-ng") or "syslog-ng", "-F", "-e", "--no-caps", "-f", str(conf),
                             "-R", str(state / "persist"), "-p", str(state / "pid"), "-c", str(state / "ctl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = connect_when_listening(port)
        cpu = cpu_seconds(proc.pid)
        start = send_tcp(conn, payload, wait_for_close=False)
        wait_for_lines(out, count)
        return Run(count / (time.perf_counter() - start), (cpu_seconds(proc.pid) - cpu) / count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(state)


@dataclass(frozen=True)
class Row:
    """A path of the table, what its acknowledgement promises, and one run of it."""

    name: str
    ack: str
    run: Callable[[], Run]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds an NDJSON run")
    parser.add_argument("--runs", type=int, default=5, help="runs of every row, the rows taken in turn")
    args = parser.parse_args()
    lines = sample_lines(args.lines)
    payload = b"\n".join(lines) + b"\n"
    with tempfile.TemporaryDirectory(prefix="archiver-bulk-") as tmp:
        workdir = Path(tmp)
        ten_rules = rules_config(workdir)
        rows = [
            Row(f"archiver NDJSON over HTTP keep-alive ({args.clients} clients, 1,000-line batches), fsync=always",
                "durable", lambda: bench_ndjson(workdir, lines, args.clients, args.seconds)),
            Row("same, decode_workers = 0 (all on the sink's own core)", "durable",
                lambda: bench_ndjson(workdir, lines, args.clients, args.seconds, decode_workers=0)),
            Row("same as the first, 10 ingest rules", "durable",
                lambda: bench_ndjson(workdir, lines, args.clients, args.seconds, "-c", str(ten_rules))),
            Row("archiver TCP JSON lines (one connection), fsync=always", "durable",
                lambda: bench_archiver_tcp(workdir, payload, args.lines, "always")),
            Row("same, 10 ingest rules", "durable",
                lambda: bench_archiver_tcp(workdir, payload, args.lines, "always", "-c", str(ten_rules))),
            Row("archiver TCP JSON lines (one connection), fsync=never", "not durable",
                lambda: bench_archiver_tcp(workdir, payload, args.lines, "never")),
            Row("syslog-ng network() -> json-parser -> file(format-json), tuned", "not durable",
                lambda: bench_syslog_ng(workdir, payload, args.lines, parse=True)),
            Row("syslog-ng network(no-parse) -> file($MSG), tuned", "not durable",
                lambda: bench_syslog_ng(workdir, payload, args.lines, parse=False)),
        ]
        runs: dict[str, list[Run]] = {row.name: [] for row in rows}
        load_start = os.getloadavg()[0]
        for _ in range(args.runs):
            for row in rows:
                runs[row.name].append(row.run())
        load_end = os.getloadavg()[0]
    size = len(payload) / args.lines
    print(f"\nBulk ingest, {args.lines} JSON lines of {size:.0f} B (newline included); {os.cpu_count()} cores; "
          f"load average {load_start:.2f} at the start, {load_end:.2f} at the end; {args.runs} runs a row, "
          "taken in turn\n")
    print("| path | ack | records/s min | median | max | server CPU per record (median) |")
    print("|---|---|---:|---:|---:|---:|")
    median = {name: statistics.median(run.rate for run in values) for name, values in runs.items()}
    for row in rows:
        rates = [run.rate for run in runs[row.name]]
        cpu = statistics.median(run.cpu for run in runs[row.name])
        print(f"| {row.name} | {row.ack} | {min(rates):.0f} | {median[row.name]:.0f} | {max(rates):.0f} "
              f"| {cpu * 1e6:.2f} µs |")
    ndjson, one_core, ndjson_rules, tcp, tcp_rules, tcp_never, sng_parse, _ = (median[row.name] for row in rows)
    print(f"\nNDJSON (durable): median {ndjson:.0f} records/s (target >= 200,000); "
          f"{ndjson / one_core:.2f}x decode_workers = 0")
    print(f"10 ingest rules cost, medians: NDJSON {1 - ndjson_rules / ndjson:.1%}, TCP {1 - tcp_rules / tcp:.1%} "
          "of the records/s (target < 20%)")
    print(f"TCP, medians: archiver fsync=always (durable) / syslog-ng with json-parser (not durable) = "
          f"{tcp / sng_parse:.2f}x (target >= 1.0)")
    print(f"TCP, medians: archiver fsync=never (not durable) / syslog-ng with json-parser (not durable) = "
          f"{tcp_never / sng_parse:.2f}x")

if __name__ == "__main__":
    main()
