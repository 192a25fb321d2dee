"""HTTPHandler-style ingest: archiver (fsync=always) against the plain stdlib sink, same run.

Load: a new connection per record carrying the stdlib HTTPHandler's exact form body, as
`logging.handlers.HTTPHandler` sends it. Two measurements per sink:
  * max rate: CONCURRENCY closed-loop clients for DURATION seconds -> records/s, p50/p99;
  * latency at a fixed offered rate (open loop, 1,000 records/s) -> p50/p99, measured from
    each request's scheduled start so a stall is not hidden (no coordinated omission).
Run: make bench   (or .venv/bin/python bench/ingest_http.py [--duration S] [--concurrency N])
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson

ROOT = Path(__file__).resolve().parent.parent


def httphandler_request(port: int) -> bytes:
    """The bytes HTTPHandler puts on the wire for logger.info('user %s logged in', 'alice')."""
    record = logging.LogRecord("app.auth", logging.INFO, "/srv/app/auth.py", 42, "user %s logged in", ("alice",), None)
    body = urlencode(record.__dict__).encode()
    head = (
        f"POST /app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n"
        f"Content-type: application/x-www-form-urlencoded\r\nContent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_request(port: int, payload: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return status.split(b" ", 2)[1:2] == [b"200"]
    finally:
        writer.close()


async def timed_request(port: int, payload: bytes, since: float, latencies: list[float]) -> int:
    """One request; its latency from ``since`` goes to ``latencies``. Returns 1 on error."""
    try:
        ok = await one_request(port, payload)
    except OSError:
        ok = False
    if ok:
        latencies.append(time.perf_counter() - since)
    return 0 if ok else 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def max_rate(port: int, duration: float, concurrency: int) -> dict[str, float]:
    payload = httphandler_request(port)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            errors += await timed_request(port, payload, time.perf_counter(), latencies)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rate": len(latencies) / elapsed, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "errors": errors}


async def fixed_rate(port: int, rate: float, duration: float) -> dict[str, float]:
    payload = httphandler_request(port)
    latencies: list[float] = []
    began = time.perf_counter()

    tasks = []
    for n in range(int(rate * duration)):
        scheduled = began + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed_request(port, payload, scheduled, latencies)))
    errors = sum(await asyncio.gather(*tasks))
    return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "errors": errors}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_plain(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_sink.py"), str(port),
                             str(workdir / "plain.jsonl")], stdout=subprocess.DEVNULL)


def start_archiver(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ARCHIVER_SPOOL_FSYNC": "always", "ARCHIVER_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "archiver", "serve", "--data-dir", str(workdir / "data"),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL)


def measure(name: str, start, workdir: Path, args: argparse.Namespace) -> dict[str, float]:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = start(workdir, port)
    try:
        wait_for_port(port, proc)
        asyncio.run(max_rate(port, 1.0, args.concurrency))  # warm-up
        result = asyncio.run(max_rate(port, args.duration, args.concurrency))
        result.update({f"fixed_{k}": v for k, v in asyncio.run(fixed_rate(port, args.rate, args.duration)).items()})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print(f"  {name}: {result['rate']:.0f} records/s", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered rate for the latency run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-bench-") as tmp:
        workdir = Path(tmp)
        plain = measure("plain stdlib sink", start_plain, workdir, args)
        archiver = measure("archiver", start_archiver, workdir, args)
    if args.json:
        print(orjson.dumps({"plain": plain, "archiver": archiver}).decode())
        return
    print(f"\nHTTPHandler-style ingest, a connection per record, fsync per ack; {os.cpu_count()} cores, "
          f"{args.concurrency} clients, {args.duration:.0f} s per run\n")
    print(f"| sink | records/s | p50 ms | p99 ms | p50 ms @ {args.rate:.0f}/s | p99 ms @ {args.rate:.0f}/s | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in (("plain stdlib sink", plain), ("archiver", archiver)):
        print(f"| {name} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['fixed_p50']:.1f} | "
              f"{r['fixed_p99']:.1f} | {int(r['errors'] + r['fixed_errors'])} |")
    print(f"\nratio archiver / plain: {archiver['rate'] / plain['rate']:.2f}x records/s (target >= 1.5x); "
          f"p99 at {args.rate:.0f}/s: {archiver['fixed_p99']:.1f} ms (target <= 10 ms)")


if __name__ == "__main__":
    main()
