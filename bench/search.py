"""Searching an old archive for a needle: `cat --grep` with the search index against a full
scan of the same archive, same run.

An archive of --segments segments of --records records (2,000 x 10,000 = 20M at full size)
is written straight through the library (sealed in 2 processes, uploaded to a filesystem
store by the Uploader, published); each message holds a UUID, an IPv4 address and numbers. One
record of one segment in the middle holds the rare token "needle". Then, reading from the store
alone (as `archiver cat --archive DIR --grep needle --json` does, without the interpreter's
start): the search with the published indexes, then the same search after the indexes are
moved away (a full scan). Printed: each run's wall time, CPU and segments read; the speed-up
(target >= 20x); the share of segments read (target < 2%); index bytes against compressed
segment bytes (target < 2%); the archive browser's first page of results for a rare, a common
and a combined search (target < 1 s each). Both runs must return the same records.
Run: .venv/bin/python bench/search.py [--segments N] [--records R] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer
from fs.osfs import OSFS

from archiver.format.layout import DataDir, segment_id
from archiver.format.manifest import Manifest, SegmentRow
from archiver.read.reader import Filters, store_archive
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.sealing import seal_segment
from archiver.store import FsStore
from archiver.web.site import standalone_app

T0 = 1_795_467_600
NEEDLE = "needle"
WEB_SEARCHES = (f"text={NEEDLE}", "level=ERROR", "logger=app.db&text=cache")  # rare, common, combined
TEMPLATES = [
    "user {u} logged in from {ip} after {n} attempts",
    "GET /api/orders/{n} from {ip} took {m} ms request={u}",
    "payment {u} declined: card ending {n4} at {ip}",
    "cache miss for key session:{u} ({n} bytes)",
    "worker {n} finished job {u} in {m} ms",
    "connection reset by peer {ip}:{port} trace={u}",
]
LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"]
LOGGERS = ["app.api", "app.db", "app.worker", "app.cache", "app.payments"]


def message(bits: int, uuid_hex: str) -> str:
    """A message from 64 random bits and 32 random hex digits (cheap: 20M are made)."""
    u = uuid_hex
    return TEMPLATES[bits % len(TEMPLATES)].format(
        u=f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}", n=bits >> 8 & 0x1FFFF, m=bits >> 25 & 0xFFF,
        ip=f"10.{bits >> 37 & 255}.{bits >> 45 & 255}.{bits >> 53 & 255}", n4=bits >> 3 & 0x1FFF,
        port=1024 + (bits >> 20 & 0x7FFF),
    )


def seal_one(root: str, seq: int, records: int, needle: bool) -> SegmentRow:
    """One segment of canonical records, sealed (gzip 6) with its index into the spool."""
    data = DataDir(Path(root))
    rng = random.Random(seq)
    segment = segment_id(T0 + seq * 60, "bench", seq)
    source = data.open_path("app", segment)
    source.parent.mkdir(parents=True, exist_ok=True)
    hexes = os.urandom(16 * records).hex()
    with open(source, "wb") as out:
        for i in range(records):
            bits = rng.getrandbits(64)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + seq * 60 + i * 60 // records))
            text = message(bits, hexes[32 * i:32 * i + 32]) + (f" {NEEDLE} found" if needle and i == records // 2 else "")
            record: dict[str, Any] = {
                "ts": f"{ts}.{i % 1_000_000:06d}Z", "level": LEVELS[(bits >> 58) % len(LEVELS)], "logger": LOGGERS[(bits >> 61) % len(LOGGERS)],
                "message": text, "stream": "app", "source": "json", "peer": "10.0.0.7", "received": f"{ts}.000000Z",
                "fields": {"pid": 4242, "thread": bits >> 33 & 15, "host": "web-3"},
            }
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    row = seal_segment(data, "app", segment, source, "gzip", 6).row
    source.unlink()
    return row


def build(workdir: Path, segments: int, records: int) -> tuple[FsStore, int]:
    """Seal, upload and publish the archive; the stored bytes of its segments."""
    data_dir = workdir / "data"
    data_dir.mkdir()
    with closing(Manifest(data_dir)) as manifest:
        manifest.set_meta("sink_id", "bench")
        with ProcessPoolExecutor(2) as pool:
            futures = [pool.submit(seal_one, str(data_dir), seq, records, seq == segments // 2) for seq in range(segments)]
            rows = [future.result() for future in futures]
        for row in rows:
            manifest.add_sealed(row)
    (workdir / "store").mkdir()
    store = FsStore(OSFS(str(workdir / "store")))
    uploader = Uploader(DataDir(data_dir), "bench", lambda: store, UploadSettings())
    uploader.upload_due(force=True)
    uploader.publish()
    return store, sum(row.stored_bytes for row in rows)


def search(store: FsStore) -> tuple[float, float, int, list[bytes]]:
    """`cat --json --grep needle` from the store alone: wall, CPU, segments read, lines."""
    archive = store_archive(store)
    read: list[str] = []
    original = archive.open_segment

    def counting(row: SegmentRow) -> Any:
        read.append(row.id)
        return original(row)

    archive.open_segment = counting  # type: ignore[method-assign]
    wall, cpu = time.perf_counter(), time.process_time()
    found = list(archive.json_chunks(Filters(contains=NEEDLE)))
    return time.perf_counter() - wall, time.process_time() - cpu, len(read), found


def web_first_pages(store: FsStore) -> list[tuple[str, float]]:
    """The archive browser's first page of results for each of WEB_SEARCHES, served in process
    from the store alone: (query, wall seconds)."""

    async def run() -> list[tuple[str, float]]:
        timed = []
        async with TestClient(TestServer(standalone_app(store_archive(store)))) as client:
            for query in WEB_SEARCHES:
                started = time.perf_counter()
                response = await client.get(f"/_web/search?{query}")
                await response.read()
                assert response.status == 200, query
                timed.append((query, time.perf_counter() - started))
        return timed

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--records", type=int, default=10_000, help="records a segment")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="archiver-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        store, segment_bytes = build(workdir, args.segments, args.records)
        print(f"archive: {args.segments} segments x {args.records} records, {segment_bytes / 1e6:.1f} MB compressed, "
              f"built in {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
        index_dir = workdir / "store" / "_manifest" / "bench" / "index"
        index_bytes = sum(path.stat().st_size for path in index_dir.rglob("*.idx"))
        indexed = search(store)
        web = web_first_pages(store)
        shutil.move(str(index_dir), str(workdir / "index-aside"))
        scan = search(store)
        shutil.move(str(workdir / "index-aside"), str(index_dir))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average after the searches: {os.getloadavg()[0]:.1f} (above ~1.5 the times are not figures)")
    for name, (wall, cpu, read, found) in (("with index", indexed), ("full scan", scan)):
        print(f"{name:>10}: {wall:8.2f} s wall, {cpu:8.2f} s CPU, {read:5d} of {args.segments} segments read, "
              f"{len(found)} record(s)")
    share, speedup, cost = indexed[2] / args.segments, scan[0] / indexed[0], index_bytes / segment_bytes
    print(f"segments read {share:.2%} (target < 2%), {speedup:.1f}x faster (target >= 20x), "
          f"index {index_bytes / args.segments:.0f} bytes a segment = {cost:.2%} of the compressed segments (target < 2%)")
    for query, wall in web:
        print(f"web search {query}: first page in {wall:.2f} s (target < 1 s)")
    ok = indexed[3] == scan[3] and len(scan[3]) == 1 and share < 0.02 and speedup >= 20 and cost < 0.02
    ok = ok and all(wall < 1 for _, wall in web)
    print("OK" if ok else "FAILED: " + ("results differ" if indexed[3] != scan[3] else "a target missed"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
