"""Bulk ingest: NDJSON over HTTP keep-alive, and TCP JSON lines against syslog-ng, same run.

1. NDJSON batches (1,000 lines) over keep-alive connections from CLIENTS threads, fsync=always:
   records/s acknowledged (target >= 200,000), with the default decode worker process and with
   none (server.decode_workers = 0: everything on the sink's own core) for comparison.
2. The same 220-byte JSON lines over one TCP connection into archiver's TCP source, and into
   syslog-ng (network() -> json-parser -> file()), so both parse; syslog-ng without the parser
   (flags(no-parse) -> file("$MSG")) is printed too. Target: archiver >= syslog-ng with parser.
Run: make bench   (or .venv/bin/python bench/ingest_bulk.py [--lines N])
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import orjson
import requests
from common import start_sink, stop

SYSLOG_NG_CONF = """@version: 3.38
options {{ stats-freq(0); keep-hostname(yes); use-dns(no); }};
source s_in {{ network(ip("127.0.0.1") port({port}) transport("tcp") flags(no-parse) log-iw-size(100000) max-connections(10)); }};
{parser}
destination d_out {{ file("{out}" template("{template}\\n") flush-lines(1000)); }};
log {{ source(s_in); {use_parser} destination(d_out); }};
"""


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


def bench_ndjson(workdir: Path, lines: list[bytes], clients: int, seconds: float, decode_workers: int) -> float:
    proc, info = start_sink(workdir, env={"ARCHIVER_SPOOL_FSYNC": "always",
                                          "ARCHIVER_SERVER_DECODE_WORKERS": str(decode_workers)})
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
        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return acked / (time.perf_counter() - start)
    finally:
        stop(proc)


def send_tcp(port: int, payload: bytes, wait_for_close: bool) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        if wait_for_close:  # archiver closes once every line is decoded, appended and fsynced
            while conn.recv(65536):
                pass
    return start


def bench_archiver_tcp(workdir: Path, payload: bytes, count: int) -> float:
    proc, info = start_sink(workdir, "--tcp-port", "0", env={"ARCHIVER_SPOOL_FSYNC": "always"})
    try:
        port = int(info["tcp"].rsplit(":", 1)[1])
        start = send_tcp(port, payload, wait_for_close=True)
        return count / (time.perf_counter() - start)
    finally:
        stop(proc)


def bench_syslog_ng(workdir: Path, payload: bytes, count: int, parse: bool) -> float:
    port = free_port()
    state = workdir / f"sng-{parse}"
    state.mkdir()
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
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        start = send_tcp(port, payload, wait_for_close=False)
        while True:
            written = out.read_bytes().count(b"\n") if out.exists() else 0
            if written >= count:
                return count / (time.perf_counter() - start)
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    lines = sample_lines(args.lines)
    payload = b"\n".join(lines) + b"\n"
    with tempfile.TemporaryDirectory(prefix="archiver-bulk-") as tmp:
        workdir = Path(tmp)
        ndjson = bench_ndjson(workdir, lines, args.clients, args.seconds, decode_workers=1)
        one_core = bench_ndjson(workdir, lines, args.clients, args.seconds, decode_workers=0)
        tcp = bench_archiver_tcp(workdir, payload, args.lines)
        sng_parse = bench_syslog_ng(workdir, payload, args.lines, parse=True)
        sng_raw = bench_syslog_ng(workdir, payload, args.lines, parse=False)
    size = len(payload) / args.lines
    print(f"\nBulk ingest, {args.lines} JSON lines of {size:.0f} B, fsync=always for archiver\n")
    print("| path | records/s |")
    print("|---|---:|")
    print(f"| archiver NDJSON over HTTP keep-alive ({args.clients} clients, 1,000-line batches) | {ndjson:.0f} |")
    print(f"| same, decode_workers = 0 (all on the sink's own core) | {one_core:.0f} |")
    print(f"| archiver TCP JSON lines (one connection) | {tcp:.0f} |")
    print(f"| syslog-ng network() -> json-parser -> file() | {sng_parse:.0f} |")
    print(f"| syslog-ng network(no-parse) -> file() | {sng_raw:.0f} |")
    print(f"\nNDJSON: {ndjson:.0f} records/s (target >= 200,000); {ndjson / one_core:.2f}x decode_workers = 0")
    print(f"TCP: archiver / syslog-ng with json-parser = {tcp / sng_parse:.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
