"""HTTPHandler-style ingest: archiver against the plain stdlib sink and nginx, same run.

Max rate: wrk (bench/wrk_load.py), 32 connections, a new connection per record carrying the
stdlib HTTPHandler's exact form body; best of --rounds runs per server, the servers taken in
turn each round. Each row shows records/s, the server's CPU µs per request (from /proc) and
wrk's own, and wrk's closed-loop p50/p99 (saturated: they say how long the queue was).
Rows: archiver fsync=always (the default; durable ack), archiver fsync=never, bench/plain_sink.py
without fsync and with one fsync per record, and Debian's nginx answering `return 200` from
memory (the ceiling of a connection per record here). Ratios are against the plain sink without
fsync, each saying which side is durable.
Latency: Debian's wrk has no fixed-rate mode (wrk2's -R), so ack latency is measured by this
module's Python load generator, open loop (each request timed from its scheduled start: no
coordinated omission), at half of each server's own max and at --rate; its figures are latency
only, never rates. memory.py and scale_out.py drive the same Python load.
Run: make bench   (or .venv/bin/python bench/ingest_http.py [--duration S] [--connections N])
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit

import orjson
from common import cpu_seconds, machine_busy_seconds, rules_config, start_sink, stop
from wrk_load import WrkRun, run_wrk, write_script

from archiver.app.grid import free_port

ROOT = Path(__file__).resolve().parent.parent
# Time for the load processes to receive their share before the shared start.
START_MARGIN = 0.3

Starter = Callable[[Path], tuple["subprocess.Popen[bytes]", int]]


def httphandler_request(port: int, *, close: bool = False) -> bytes:
    """The bytes HTTPHandler puts on the wire for logger.info('user %s logged in', 'alice');
    with ``close``, a `Connection: close` header too, for clients that reconnect only when told."""
    record = logging.LogRecord("app.auth", logging.INFO, "/srv/app/auth.py", 42, "user %s logged in", ("alice",), None)
    body = urlencode(record.__dict__).encode()
    connection = "Connection: close\r\n" if close else ""
    head = (
        f"POST /app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n"
        f"Content-type: application/x-www-form-urlencoded\r\nContent-length: {len(body)}\r\n{connection}\r\n"
    )
    return head.encode() + body


# Source addresses for the load's connections, taken in turn. The client end of each closed
# connection waits in TIME_WAIT for a minute; from 127.0.0.1 alone, the 28,000 ephemeral ports
# run out after about ten seconds at 3,000 connections/s (connect fails: EADDRNOTAVAIL).
SOURCES = itertools.cycle(f"127.0.0.{n}" for n in range(1, 17))
# Linux: choose the port at connect(), for this source and destination, not at bind().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def one_request(port: int, payload: bytes) -> bool:
    """A connection, the request, the response head, close: True for a 200. Raw socket calls,
    not asyncio streams: about 30% less client CPU per request, which the sink gets on 2 cores."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((next(SOURCES), 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            head += chunk
    return head.split(b" ", 2)[1:2] == [b"200"]


async def timed_request(port: int, payload: bytes, since: float, latencies: list[float]) -> int:
    """One request; its latency from ``since`` (time.monotonic) goes to ``latencies``. Returns 1 on error."""
    try:
        ok = await one_request(port, payload)
    except OSError:
        ok = False
    if ok:
        latencies.append(time.monotonic() - since)
    return 0 if ok else 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


@dataclass(frozen=True)
class Share:
    """One load process's part of a run: closed loop when ``concurrency``, else open loop at ``rate``.

    Every process starts at the same ``start_at`` (time.monotonic is system-wide on Linux). Its
    clients (closed loop) or requests (open loop) take the ports in turn, so load splits evenly.
    """

    ports: tuple[int, ...]
    duration: float
    start_at: float
    concurrency: int = 0
    rate: float = 0.0
    index: int = 0
    procs: int = 1


@dataclass(frozen=True)
class Outcome:
    """What one load process sends back: latencies, errors, its CPU seconds, when it finished."""

    latencies: list[float]
    errors: int
    cpu: float
    end: float


async def closed_loop(share: Share) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = share.start_at + share.duration

    async def client(n: int) -> None:
        nonlocal errors
        port = share.ports[n % len(share.ports)]
        payload = httphandler_request(port)
        while time.monotonic() < deadline:
            errors += await timed_request(port, payload, time.monotonic(), latencies)

    await asyncio.sleep(max(0.0, share.start_at - time.monotonic()))
    await asyncio.gather(*(client(n) for n in range(share.concurrency)))
    return latencies, errors


async def open_loop(share: Share) -> tuple[list[float], int]:
    """Requests index, index + procs, ... of a schedule at ``rate``, each timed from its slot."""
    payloads = [httphandler_request(port) for port in share.ports]
    latencies: list[float] = []
    tasks = []
    for k in range(int(share.rate * share.duration / share.procs)):
        scheduled = share.start_at + (k * share.procs + share.index) / share.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = k % len(share.ports)
        tasks.append(asyncio.create_task(timed_request(share.ports[n], payloads[n], scheduled, latencies)))
    return latencies, sum(await asyncio.gather(*tasks))


def run_share(share: Share) -> Outcome:
    """Runs in a load process: its latencies, errors, and the CPU seconds it used."""
    cpu = time.process_time()
    latencies, errors = asyncio.run(closed_loop(share) if share.concurrency else open_loop(share))
    return Outcome(latencies, errors, time.process_time() - cpu, time.monotonic())


def load_pool(procs: int) -> ProcessPoolExecutor:
    """The load processes, kept for the whole benchmark (spawned: the parent is not forked mid-run)."""
    return ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"))


def run_load(pool: ProcessPoolExecutor, procs: int, ports: list[int], duration: float, *,
             concurrency: int = 0, rate: float = 0.0) -> dict[str, float]:
    """One run split over ``procs`` load processes: records/s, p50/p99 ms, errors, load CPU seconds."""
    start_at = time.monotonic() + START_MARGIN
    shares = [Share(tuple(ports), duration, start_at, concurrency // procs, rate, index, procs) for index in range(procs)]
    outcomes = list(pool.map(run_share, shares))
    latencies = [latency for outcome in outcomes for latency in outcome.latencies]
    elapsed = max(outcome.end for outcome in outcomes) - start_at
    return {"rate": len(latencies) / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "errors": sum(outcome.errors for outcome in outcomes), "load_cpu": sum(outcome.cpu for outcome in outcomes),
            "elapsed": elapsed}


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def serving(proc: subprocess.Popen[bytes], port: int) -> tuple[subprocess.Popen[bytes], int]:
    """``proc`` once it listens on ``port``; stopped if it never does."""
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def listen_port() -> int:
    """A free port below 32768, outside the range the load's own connections take their ports
    from: with a connection per record that range can run out, and port 0 with it."""
    return free_port(set())


def plain_starter(fsync: bool) -> Starter:
    """Starts bench/plain_sink.py, with one fsync per record or none."""

    def start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
        port = listen_port()
        out = workdir / f"plain-{port}.jsonl"
        flags = ["--fsync"] if fsync else []
        return serving(subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_sink.py"), *flags, str(port),
                                         str(out)], stdout=subprocess.DEVNULL), port)

    return start


def start_archiver(workdir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """An archiver sink with fsync=always (the default, made explicit) and its HTTP port (the
    last --port given wins over start_sink's --port 0)."""
    proc, info = start_sink(workdir, "--port", str(listen_port()), *args,
                            env={"ARCHIVER_SPOOL_FSYNC": "always", **(env or {})})
    port = urlsplit(info["http"]).port
    assert port is not None
    return proc, port


NGINX_CONF = """\
worker_processes {workers};
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /app {{ return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_starter(workers: str) -> Starter:
    """Starts Debian's nginx in the foreground (its master is our child, stopped by PID), all paths in the temp dir."""

    def start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
        prefix = workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        port = listen_port()
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(workers=workers, port=port))
        return serving(subprocess.Popen(["nginx", "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "error.log",
                                         "-g", "daemon off;"], stdout=subprocess.DEVNULL), port)

    return start


def cpu_snapshot(pids: list[int]) -> tuple[float, float, float]:
    """The servers' CPU seconds, the machine's busy CPU seconds, and the time."""
    return cpu_seconds(*pids), machine_busy_seconds(), time.monotonic()


def max_rate(servers: list[tuple[subprocess.Popen[bytes], int]], pool: ProcessPoolExecutor,
             args: argparse.Namespace) -> dict[str, float]:
    """Closed-loop max rate over all ``servers`` after a check and a warm-up, with the CPU seconds
    they, the load and everything else on the machine used."""
    ports = [port for _, port in servers]
    for port in ports:
        if not asyncio.run(one_request(port, httphandler_request(port))):
            raise RuntimeError(f"the server on port {port} did not answer HTTPHandler's POST with 200")
    run_load(pool, args.load_procs, ports, 1.0, concurrency=args.concurrency)  # warm-up
    pids = [proc.pid for proc, _ in servers]
    before = cpu_snapshot(pids)
    result = run_load(pool, args.load_procs, ports, args.duration, concurrency=args.concurrency)
    sink, busy, wall = (now - then for now, then in zip(cpu_snapshot(pids), before))
    result.update(sink_cpu=sink, other_cpu=busy - sink - result["load_cpu"], cpu_wall=wall)
    return result


def cores(result: dict[str, float], key: str) -> str:
    """CPU seconds of a run as cores busy."""
    return f"{result[key] / result['cpu_wall']:.2f}"


@dataclass(frozen=True)
class Row:
    """A server of the table: how it starts, and what its 200 promises about the record."""

    name: str
    start: Starter
    ack: str


def rows(nginx_workers: str, workers: int) -> list[Row]:
    never = {"ARCHIVER_SPOOL_FSYNC": "never"}
    several = [Row(f"archiver fsync=always, {workers} workers",
                   lambda workdir: start_archiver(workdir, "--workers", str(workers)), "durable")] if workers > 1 else []
    return [
        Row("archiver fsync=always (default)", start_archiver, "durable"),
        *several,
        Row("archiver fsync=always, 10 ingest rules",
            lambda workdir: start_archiver(workdir, "-c", str(rules_config(workdir))), "durable"),
        Row("archiver fsync=never", lambda workdir: start_archiver(workdir, env=never), "not durable"),
        Row("plain stdlib sink, no fsync", plain_starter(fsync=False), "not durable"),
        Row("plain stdlib sink, fsync per record", plain_starter(fsync=True), "durable"),
        Row("nginx return 200", nginx_starter(nginx_workers), "writes nothing"),
    ]


@dataclass
class Measured:
    """A row's best wrk run, and its open-loop latencies: (offered rate, p50 ms, p99 ms, errors)
    at half that run's rate, then at --rate."""

    best: WrkRun
    latency: list[tuple[float, float, float, int]]


def measure(table: list[Row], workdir: Path, pool: ProcessPoolExecutor,
            args: argparse.Namespace) -> tuple[dict[str, Measured], float]:
    """Every server started at once (idle ones cost next to nothing); --rounds wrk runs each, in
    turn, the best kept: a noisy spell on this shared machine then hits all alike instead of
    whichever ran during it. Then open-loop latency at half of that max and at --rate. Also
    returns the cores other programs kept busy on average during the wrk runs."""
    with ExitStack() as stack:
        servers = {}
        for row in table:
            proc, port = row.start(workdir)
            stack.callback(stop, proc)
            if not asyncio.run(one_request(port, httphandler_request(port, close=True))):
                raise RuntimeError(f"{row.name} did not answer HTTPHandler's POST with 200")
            servers[row.name] = (proc, port, write_script(workdir / f"wrk-{port}.lua", httphandler_request(port, close=True)))
        pids = [proc.pid for proc, _, _ in servers.values()]
        for proc, port, script in servers.values():
            run_wrk(port, [proc.pid], script, 1, args.connections, args.threads)  # warm-up
        best: dict[str, WrkRun] = {}
        before, wrk_cpu = cpu_snapshot(pids), 0.0
        for _ in range(args.rounds):
            for name, (proc, port, script) in servers.items():
                run = run_wrk(port, [proc.pid], script, args.duration, args.connections, args.threads)
                wrk_cpu += run.wrk_cpu
                print(f"  {name}: {run.rate:.0f} records/s, {run.server_us():.0f} µs server CPU a request",
                      file=sys.stderr)
                if name not in best or run.rate > best[name].rate:
                    best[name] = run
        servers_cpu, busy, wall = (now - then for now, then in zip(cpu_snapshot(pids), before))
        results = {}
        for name, (_, port, _) in servers.items():
            latency = []
            for rate in (best[name].rate / 2, args.rate):
                fixed = run_load(pool, args.load_procs, [port], args.duration, rate=rate)
                latency.append((rate, fixed["p50"], fixed["p99"], int(fixed["errors"])))
            results[name] = Measured(best[name], latency)
    return results, (busy - servers_cpu - wrk_cpu) / wall


def ratio_lines(table: list[Row], results: dict[str, Measured]) -> list[str]:
    """Each row against the plain sink without fsync, saying what each side's 200 promises."""
    base_row = next(row for row in table if row.name == "plain stdlib sink, no fsync")
    base = results[base_row.name].best
    plain, ruled = (results[name].best for name in ("archiver fsync=always (default)",
                                                     "archiver fsync=always, 10 ingest rules"))
    return [f"{row.name} [{row.ack}] / {base_row.name} [{base_row.ack}]: "
            f"{results[row.name].best.rate / base.rate:.2f}x the records/s, "
            f"{results[row.name].best.server_us() / base.server_us():.2f}x the server CPU a request"
            for row in table if row is not base_row] + [
        f"10 ingest rules cost {1 - ruled.rate / plain.rate:.1%} of the records/s (target < 20%), "
        f"{ruled.server_us() / plain.server_us() - 1:+.1%} server CPU a request"]


def print_table(table: list[Row], results: dict[str, Measured], other_cores: float, load: tuple[float, float],
                args: argparse.Namespace) -> None:
    body = len(httphandler_request(0).partition(b"\r\n\r\n")[2])
    print(f"\nHTTPHandler-style ingest, a new connection per record, a {body}-byte form body; {os.cpu_count()} cores; load average "
          f"{load[0]:.2f} at the start, {load[1]:.2f} at the end; other programs kept {other_cores:.2f} cores busy "
          f"during the wrk runs. Max rate: wrk, {args.connections} connections in {args.threads} threads, "
          f"{args.duration} s a run, best of {args.rounds} round(s) taken in turn; server CPU from /proc, wrk's from "
          f"its rusage; p50/p99: wrk's, closed loop at that max. nginx: worker_processes {args.nginx_workers} "
          "(auto: one per core). Open loop: Python load generator, latency only, each request timed from its "
          "scheduled start.\n")
    print(f"| sink | ack | records/s | server CPU µs/req | wrk CPU µs/req | p50 / p99 ms at max | errors "
          f"| open loop at half max: /s, p50 / p99 ms | open loop at {args.rate:.0f}/s: p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in table:
        best, latency = results[row.name].best, results[row.name].latency
        (half, h50, h99, herr), (_, s50, s99, serr) = latency
        print(f"| {row.name} | {row.ack} | {best.rate:.0f} | {best.server_us():.0f} | {best.wrk_us():.0f} | "
              f"{best.p50_ms:.1f} / {best.p99_ms:.1f} | {best.errors + herr + serr} | "
              f"{half:.0f}: {h50:.1f} / {h99:.1f} | {s50:.1f} / {s99:.1f} |")
    print()
    for line in ratio_lines(table, results):
        print(line)
    print("wrk's CPU a request / the server's: " + ", ".join(
        f"{row.name} {results[row.name].best.wrk_us() / results[row.name].best.server_us():.2f}" for row in table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds a run (wrk takes whole seconds)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server, taken in turn; the best counts")
    parser.add_argument("--rate", type=float, default=1000.0, help="a fixed offered rate for latency, records/s")
    parser.add_argument("--load-procs", type=int, default=2, help="processes of the Python open-loop load")
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes (auto: one per core)")
    parser.add_argument("--workers", type=int, default=1, help="also a row of archiver with server.workers = N")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    table = rows(args.nginx_workers, args.workers)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="archiver-bench-") as tmp, load_pool(args.load_procs) as pool:
        results, other_cores = measure(table, Path(tmp), pool, args)
    load = (load_start, os.getloadavg()[0])
    if args.json:
        print(orjson.dumps({"load": load, "other_cores": other_cores, "ratios": ratio_lines(table, results),
                            **{name: {"best": asdict(m.best), "latency": m.latency}
                               for name, m in results.items()}}).decode())
        return
    print_table(table, results, other_cores, load, args)


if __name__ == "__main__":
    main()
