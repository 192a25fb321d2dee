"""archiver import: lines/s and CPU per line, for JSON lines and syslog lines.

A file of --lines lines of each format is written to a temporary directory and imported into a
fresh data dir, in this process (the CLI's own start, about a second, is left out): the whole
path, from reading and parsing (on decode workers, one per core, as the CLI does) to durable
segments (fsync per batch), every segment sealed (gzip) and the offsets committed. CPU is this
process's (every thread: fsync, sealing) and its workers', divided by lines. Targets: 200,000 lines/s for JSON lines, 100,000 for syslog.
Every row runs --runs times; min/median/max are printed.
Run: .venv/bin/python bench/import.py [--lines N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from archiver.app.config import Config
from archiver.app.importing import local_spool
from archiver.ingest.decoder import Decoder
from archiver.ingest.files import walk
from archiver.ingest.importer import import_file

TARGETS = {"jsonl": 200_000, "syslog": 100_000}


def write_jsonl(path: Path, lines: int) -> None:
    with open(path, "wb") as out:
        for start in range(0, lines, 10_000):
            out.write(b"".join(
                orjson.dumps({"@timestamp": 1_764_633_600 + n / 100, "level": "INFO", "logger": "app.web",
                              "message": f"GET /api/items/{n} 200 in {n % 97} ms", "request_id": f"{n:012x}"}) + b"\n"
                for n in range(start, min(lines, start + 10_000))))


def write_syslog(path: Path, lines: int) -> None:
    with open(path, "w") as out:
        for n in range(lines):
            second = n // 100
            out.write(f"Dec  1 {second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d} web01 "
                      f"sshd[{1000 + n % 500}]: Accepted publickey for deploy from 10.0.{n % 256}.7 port {n % 65535}\n")


async def import_once(source: Path, data_dir: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and records of one import of ``source``."""
    files = walk([source])
    workers = Decoder(os.cpu_count() or 1)
    await workers.start()
    pids = workers.pids()
    wall, cpu = time.perf_counter(), time.process_time() + _children_cpu(pids)
    records = 0
    try:
        async with local_spool(Config(data_dir=data_dir)) as spool:
            for file in files:
                records += (await import_file(file, spool, "bench", workers=workers)).records
        return time.perf_counter() - wall, time.process_time() + _children_cpu(pids) - cpu, records
    finally:
        await workers.close()


def _children_cpu(pids: list[int]) -> float:
    """CPU seconds of the decode workers so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archiver-bench-import-"))
    try:
        for kind, write in (("jsonl", write_jsonl), ("syslog", write_syslog)):
            source = work / kind
            source.mkdir()
            write(source / f"big.{kind}", args.lines)
            rates, cpus = [], []
            for run in range(args.runs):
                data_dir = work / f"data-{kind}-{run}"
                wall, cpu, records = asyncio.run(import_once(source, data_dir))
                assert records == args.lines, f"imported {records} of {args.lines} lines"
                rates.append(args.lines / wall)
                cpus.append(cpu / args.lines * 1e6)
                shutil.rmtree(data_dir)
            print(f"{kind:7} {args.lines:,} lines: lines/s min {min(rates):,.0f} median {statistics.median(rates):,.0f} "
                  f"max {max(rates):,.0f} (target {TARGETS[kind]:,}); CPU per line median {statistics.median(cpus):.2f} us")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
