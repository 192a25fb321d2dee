"""HTTPHandler-style ingest: archiver (fsync=always) against the plain stdlib sink and nginx, same run.

Load: a new connection per record carrying the stdlib HTTPHandler's exact form body, as
`logging.handlers.HTTPHandler` sends it, from --load-procs processes of their own, so the load's
CPU is counted apart from the sink's (on 2 cores they compete). Three measurements per sink:
  * max rate: CONCURRENCY closed-loop clients for DURATION seconds -> records/s, p50/p99; the
    best of --rounds runs, the servers taken in turn;
  * latency at half of that sink's own max rate, and at --rate (1,000/s), open loop -> p50/p99,
    measured from each request's scheduled start so a stall is not hidden (no coordinated
    omission). Half of its own max, not one rate for all: at half of archiver's rate the plain
    sink is saturated and its figures only say how long its queue grew.
Baselines: bench/plain_sink.py (ThreadingHTTPServer, one fsync per record), and Debian's nginx
answering `return 200` without touching the disk: the ceiling of a connection per record here.
Run: make bench   (or .venv/bin/python bench/ingest_http.py [--duration S] [--concurrency N])
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit

import orjson
from common import cpu_seconds, machine_busy_seconds, start_sink, stop

from archiver.app.grid import free_port

ROOT = Path(__file__).resolve().parent.parent
# Time for the load processes to receive their share before the shared start.
START_MARGIN = 0.3

Starter = Callable[[Path], tuple["subprocess.Popen[bytes]", int]]


def httphandler_request(port: int) -> bytes:
    """The bytes HTTPHandler puts on the wire for logger.info('user %s logged in', 'alice')."""
    record = logging.LogRecord("app.auth", logging.INFO, "/srv/app/auth.py", 42, "user %s logged in", ("alice",), None)
    body = urlencode(record.__dict__).encode()
    head = (
        f"POST /app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n"
        f"Content-type: application/x-www-form-urlencoded\r\nContent-length: {len(body)}\r\n\r\n"
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


def start_plain(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = listen_port()
    return serving(subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_sink.py"), str(port),
                                     str(workdir / "plain.jsonl")], stdout=subprocess.DEVNULL), port)


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


def measure(starters: dict[str, Starter], workdir: Path, pool: ProcessPoolExecutor,
            args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every server started at once (idle ones cost next to nothing); --rounds max-rate runs
    each, in turn, the best kept: a noisy spell on this shared machine then hits all alike
    instead of whichever ran during it. Then latency at half of that max and at --rate."""
    with ExitStack() as stack:
        servers = {}
        for name, start in starters.items():
            proc, port = start(workdir)
            stack.callback(stop, proc)
            servers[name] = (proc, port)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, server in servers.items():
                result = max_rate([server], pool, args)
                print(f"  {name}: {result['rate']:.0f} records/s", file=sys.stderr)
                if name not in best or result["rate"] > best[name]["rate"]:
                    best[name] = result
        for name, (_, port) in servers.items():
            result = best[name]
            result["fixed_rate"] = result["rate"] / 2
            for prefix, rate in (("fixed", result["fixed_rate"]), ("set", args.rate)):
                fixed = run_load(pool, args.load_procs, [port], args.duration, rate=rate)
                result.update({f"{prefix}_{key}": fixed[key] for key in ("p50", "p99", "errors")})
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="max-rate runs per server, taken in turn; the best counts")
    parser.add_argument("--rate", type=float, default=1000.0, help="a fixed offered rate for latency, records/s")
    parser.add_argument("--load-procs", type=int, default=2, help="load generator processes (clients split evenly)")
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes (auto: one per core)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-bench-") as tmp, load_pool(args.load_procs) as pool:
        results = measure({"plain": start_plain, "archiver": start_archiver, "nginx": nginx_starter(args.nginx_workers)},
                          Path(tmp), pool, args)
    plain, archiver, nginx = results["plain"], results["archiver"], results["nginx"]
    ratios = {"archiver_plain": archiver["rate"] / plain["rate"], "archiver_nginx": archiver["rate"] / nginx["rate"]}
    if args.json:
        print(orjson.dumps({"plain": plain, "archiver": archiver, "nginx": nginx, **ratios}).decode())
        return
    print(f"\nHTTPHandler-style ingest, a connection per record, fsync per ack; {os.cpu_count()} cores, "
          f"{args.concurrency} clients in {args.load_procs} load processes, {args.duration:.0f} s per run, "
          f"max rate: best of {args.rounds} runs per server taken in turn. "
          f"nginx: worker_processes {args.nginx_workers} (auto = one per core, as Debian ships it; "
          "archiver is one process). Half-max columns: open loop at half of that sink's own max rate. "
          "CPU: cores busy (CPU seconds / wall seconds) during the max-rate run; other: other programs "
          "on this shared machine.\n")
    set_rate = f"{args.rate:.0f}/s"
    print(f"| sink | records/s | p50 ms | p99 ms | half max /s | p50 ms @ half | p99 ms @ half | p50 ms @ {set_rate} "
          f"| p99 ms @ {set_rate} | errors | sink CPU | load CPU | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in (("plain stdlib sink", plain), ("archiver", archiver), ("nginx return 200", nginx)):
        print(f"| {name} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['fixed_rate']:.0f} | "
              f"{r['fixed_p50']:.1f} | {r['fixed_p99']:.1f} | {r['set_p50']:.1f} | {r['set_p99']:.1f} | "
              f"{int(r['errors'] + r['fixed_errors'] + r['set_errors'])} | "
              f"{cores(r, 'sink_cpu')} | {cores(r, 'load_cpu')} | {cores(r, 'other_cpu')} |")
    print(f"\narchiver / plain = {ratios['archiver_plain']:.2f}x (target >= 2.0)")
    print(f"archiver / nginx = {ratios['archiver_nginx']:.0%} (target >= 40%)")
    print(f"archiver p99 at half its max rate ({archiver['fixed_rate']:.0f}/s): {archiver['fixed_p99']:.1f} ms")
    print(f"archiver p99 at {set_rate}: {archiver['set_p99']:.1f} ms (target <= 10 ms at 1,000/s)")


if __name__ == "__main__":
    main()
