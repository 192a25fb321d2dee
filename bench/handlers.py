"""ArchiveHandler against the stdlib HTTPHandler, one process each, same sink, same run.

Prints records/s delivered (sent and acknowledged) and the application thread's time per
logging call. Target: ArchiveHandler >= 20x HTTPHandler records/s.
Run: make bench   (or .venv/bin/python bench/handlers.py [--records N])
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import tempfile
import time
from pathlib import Path


from archiver.client import ArchiveHandler
from common import start_sink, stop


def run(handler: logging.Handler, records: int) -> tuple[float, float]:
    logger = logging.getLogger(f"bench.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    start = time.perf_counter()
    for n in range(records):
        logger.info("user %s logged in from %s", f"user{n % 1000}", "10.0.0.1")
    in_calls = time.perf_counter() - start
    handler.close()  # ArchiveHandler: waits until everything is delivered
    total = time.perf_counter() - start
    return records / total, in_calls / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="records for HTTPHandler (ArchiveHandler gets 30x)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-handlers-") as tmp:
        proc, info = start_sink(Path(tmp))
        url = info["http"]
        try:
            host = url.split("://")[1]
            stdlib_rate, stdlib_call = run(logging.handlers.HTTPHandler(host, "/stdlib", method="POST"), args.records)
            archive = ArchiveHandler(f"{url}/batched", queue_size=1_000_000, timeout=300)
            batched_rate, batched_call = run(archive, args.records * 30)
            assert archive.dropped == 0
        finally:
            stop(proc)
    print("\nOne process logging as fast as it can to one sink (fsync=always)\n")
    print("| handler | records/s delivered | µs per logging call |")
    print("|---|---:|---:|")
    print(f"| logging.handlers.HTTPHandler | {stdlib_rate:.0f} | {stdlib_call:.0f} |")
    print(f"| archiver ArchiveHandler | {batched_rate:.0f} | {batched_call:.1f} |")
    print(f"\nratio ArchiveHandler / HTTPHandler: {batched_rate / stdlib_rate:.1f}x records/s (target >= 20x)")


if __name__ == "__main__":
    main()
