"""ArchiveHandler against the stdlib HTTPHandler, one process, same sink (fsync=always), same run.

Prints records/s delivered (``handler.sent`` per second, from the first logging call until the
sink acknowledged the last record) and the application thread's time per logging call, for
ArchiveHandler with its defaults (a queue; a full queue waits) and with ``buffer_dir``, each
logging as fast as one thread can for ``--seconds``. Targets: ArchiveHandler >= 20x
HTTPHandler records/s; 100,000 records/s delivered.
Run: make bench   (or .venv/bin/python bench/handlers.py [--records N] [--seconds S] [--profile DIR])
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import logging.handlers
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, start_sink, stop

from archiver.client import ArchiveHandler


def run_stdlib(handler: logging.Handler, records: int) -> tuple[float, float]:
    """records/s and µs per call for a handler that sends in the logging call."""
    logger = _logger(handler)
    start = time.perf_counter()
    for n in range(records):
        logger.info("user %s logged in from %s", f"user{n % 1000}", "10.0.0.1")
    elapsed = time.perf_counter() - start
    handler.close()
    return records / elapsed, elapsed / records * 1e6


def run_archive(handler: ArchiveHandler, seconds: float, profile: Path | None, sink_pid: int) -> tuple[float, float, int, float, float]:
    """Log for ``seconds``, then wait until the sink has acknowledged everything: records/s
    delivered, µs per logging call, records logged, and the CPU µs per record this process
    (both threads) and the sink used. On a shared machine the CPU figures move less than the
    rates: this process's CPU per record bounds what one process can deliver."""
    logger = _logger(handler)
    profilers = _profile_sender(handler) if profile else []
    cpu_start, sink_start = time.process_time(), cpu_seconds(sink_pid)
    start = time.perf_counter()
    deadline = start + seconds
    logged = 0
    while time.perf_counter() < deadline:
        for n in range(1000):
            logger.info("user %s logged in from %s", f"user{n}", "10.0.0.1")
        logged += 1000
    in_calls = time.perf_counter() - start
    while handler.sent + handler.dropped < logged:
        time.sleep(0.001)
    total = time.perf_counter() - start
    app_cpu, sink_cpu = time.process_time() - cpu_start, cpu_seconds(sink_pid) - sink_start
    handler.close()
    for _, profiler in profilers:
        profiler.disable()
    if profile:
        for name, profiler in profilers:
            profiler.dump_stats(profile / f"{name}.prof")
            print(f"\n--- {name} thread, top 25 by own time ---")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    assert handler.dropped == 0 and handler.sent == logged, (handler.sent, handler.dropped, logged)
    return handler.sent / total, in_calls / logged * 1e6, logged, app_cpu / logged * 1e6, sink_cpu / logged * 1e6


def _profile_sender(handler: ArchiveHandler) -> list[tuple[str, cProfile.Profile]]:
    """cProfile the logging thread (this one) and the handler's sender thread."""
    app, sender = cProfile.Profile(), cProfile.Profile()
    original = handler._send_batch

    def profiled() -> bool:
        sender.enable()
        try:
            return original()
        finally:
            sender.disable()

    handler._send_batch = profiled  # type: ignore[method-assign]
    app.enable()
    return [("app", app), ("sender", sender)]


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="records for HTTPHandler")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each ArchiveHandler logs")
    parser.add_argument("--profile", type=Path, help="cProfile both threads of each ArchiveHandler run into DIR")
    args = parser.parse_args()
    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(prefix="archiver-handlers-") as tmp:
        proc, info = start_sink(Path(tmp))
        url = info["http"]
        try:
            host = url.split("://")[1]
            stdlib_rate, stdlib_call = run_stdlib(logging.handlers.HTTPHandler(host, "/stdlib", method="POST"), args.records)
            rows.append(("logging.handlers.HTTPHandler", stdlib_rate, stdlib_call, args.records, None, None))
            for label, options in (("ArchiveHandler (defaults)", {}), ("ArchiveHandler, buffer_dir", {"buffer_dir": Path(tmp) / "buffer"})):
                profile = args.profile / label.split()[-1].strip("(),") if args.profile else None
                if profile:
                    profile.mkdir(parents=True, exist_ok=True)
                handler = ArchiveHandler(f"{url}/batched", timeout=300, **options)  # type: ignore[arg-type]
                rows.append((label, *run_archive(handler, args.seconds, profile, proc.pid)))
        finally:
            stop(proc)
    print(f"\nOne process logging as fast as one thread can to one sink (fsync=always), {args.seconds:.0f} s per ArchiveHandler run\n")
    print("| handler | records/s delivered | µs per logging call | records | app CPU µs/record | sink CPU µs/record |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rate, call, count, app_cpu, sink_cpu in rows:
        cpu = f"{app_cpu:.1f} | {sink_cpu:.1f}" if app_cpu is not None else "|"
        print(f"| {label} | {rate:.0f} | {call:.1f} | {count} | {cpu} |")
    for label, rate, *_ in rows[1:]:
        print(f"\nratio {label} / HTTPHandler: {rate / stdlib_rate:.1f}x records/s (target >= 20x);"
              f" {rate / 100_000:.0%} of the 100,000 records/s target")


if __name__ == "__main__":
    main()
