"""Reading back: `archiver cat --json` against curl + `gzip -dc` of the same segments, same run;
and a time-range listing over a manifest of 100,000 segments.

1. N segments are uploaded to a one-node grid (made in a temporary directory, or --grid DIR).
   `archiver cat --json --archive tahoe://.../URI:DIR2-RO:...` streams them all; the baseline
   is `curl -s URL | gzip -dc` for each segment. Both write to /dev/null. Printed: MB/s of
   uncompressed JSON and the ratio archiver / baseline (target >= 0.8).
2. A manifest with 100,000 segments: `Archive.segments(since=..., until=...)` for one hour, and
   the same through `archiver ls --json` (which adds the interpreter's start). Target < 50 ms.
Run: make bench   (or .venv/bin/python bench/read.py [--segments N] [--records R])
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from archiver import open_archive
from archiver.app.grid import LocalGrid
from archiver.format.layout import DataDir
from archiver.format.manifest import SEALED_COLUMNS, Manifest
from archiver.format.record import Context, encode_record
from archiver.ingest.decode.jsonbody import json_record
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.sealing import seal_segment

T0 = 1_795_467_600


def build_segments(data: DataDir, segments: int, records: int) -> int:
    manifest = Manifest(data.root)
    manifest.set_meta("sink_id", "bench")
    raw = 0
    for n in range(segments):
        source = data.open_path("app", f"20261123T2{n // 60:01d}{n % 60:02d}00Z-bench-{n:06d}")
        source.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "wb") as out:
            for i in range(records):
                fields = {"created": T0 + n * records + i, "levelname": "INFO", "name": "app.web",
                          "msg": "GET /api/items/%d 200 in %.1f ms", "args": f"({i}, {i % 97 / 3:.1f})",
                          "request_id": f"r-{n}-{i}", "user": f"user{i % 1000}"}
                out.write(encode_record(json_record(fields, Context("app", "127.0.0.1", T0))))
        row = seal_segment(data, "app", source.name[:-6], source, "gzip", 6).row
        manifest.add_sealed(row)
        raw += row.raw_bytes
        source.unlink()
    manifest.close()
    return raw


def bench_cat(grid: LocalGrid, workdir: Path, segments: int, records: int) -> tuple[float, float, int]:
    data = DataDir(workdir / "data")
    data.root.mkdir()
    raw = build_segments(data, segments, records)
    root = grid.create_root()
    uploader = Uploader(data, "bench", lambda: root, UploadSettings())
    uploader.upload_due(force=True)
    uploader.publish()
    read_cap = root.getinfo("/", namespaces=["tahoe"]).raw["tahoe"]["read_cap"]
    url = f"tahoe://{grid.gateway_url.split('://')[1]}/{read_cap}"
    paths = [row.store_path for row in open_archive(url).segments()]

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "archiver", "cat", "--json", "--archive", url],
                   stdout=subprocess.DEVNULL, check=True)
    archiver_s = time.perf_counter() - start
    start = time.perf_counter()
    for path in paths:
        subprocess.run(f"curl -sSf '{grid.gateway_url}/uri/{read_cap}{path}' | gzip -dc > /dev/null",
                       shell=True, check=True)
    baseline_s = time.perf_counter() - start
    return archiver_s, baseline_s, raw


def bench_ls(workdir: Path, count: int) -> tuple[float, float, int]:
    data = workdir / "ls-data"
    data.mkdir()
    Manifest(data).close()
    db = sqlite3.connect(data / Manifest.FILENAME)
    rows = []
    for n in range(count):
        first = T0 - count * 60 + n * 60
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(first))
        end = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(first + 59))
        segment = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(first)) + f"-bench-{n % 1_000_000:06d}"
        rows.append((segment, "app", "uploaded", "", "gzip", 1000, 100, "0" * 64, 10, stamp, end, '{"INFO":10}', stamp))
    db.executemany(f"INSERT INTO segments ({', '.join(SEALED_COLUMNS)}) VALUES ({', '.join('?' * len(SEALED_COLUMNS))})", rows)
    db.commit()
    db.close()
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(T0 - 3 * 86400))
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(T0 - 3 * 86400 + 3600))
    archive = open_archive(data)
    best = min(_timed(lambda: archive.segments(since=since, until=until)) for _ in range(5))
    found = len(archive.segments(since=since, until=until))
    cli = min(
        _timed(lambda: subprocess.run([sys.executable, "-m", "archiver", "ls", "--json", "--data-dir", str(data),
                                       "--since", since, "--until", until], capture_output=True, check=True))
        for _ in range(3)
    )
    return best, cli, found


def _timed(action) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--manifest-size", type=int, default=100_000)
    parser.add_argument("--grid", type=Path, help="a running grid's directory (default: a new one-node grid)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-read-bench-") as tmp:
        workdir = Path(tmp)
        grid = LocalGrid(args.grid) if args.grid else LocalGrid.create(workdir / "grid", nodes=1, needed=1, happy=1, total=1)
        if not args.grid:
            grid.start()
        try:
            archiver_s, baseline_s, raw = bench_cat(grid, workdir, args.segments, args.records)
        finally:
            if not args.grid:
                grid.stop()
        api_s, cli_s, found = bench_ls(workdir, args.manifest_size)
    mb = raw / 1e6
    print(f"\nReading {args.segments} segments ({mb:.0f} MB of JSON lines) back from a one-node grid\n")
    print("| reader | seconds | MB/s |")
    print("|---|---:|---:|")
    print(f"| archiver cat --json --archive (read cap) | {archiver_s:.2f} | {mb / archiver_s:.0f} |")
    print(f"| curl + gzip -dc, a segment at a time | {baseline_s:.2f} | {mb / baseline_s:.0f} |")
    print(f"\nratio archiver / curl+gzip: {baseline_s / archiver_s:.2f}x throughput (target >= 0.8)")
    print(f"\ntime-range ls over {args.manifest_size} segments ({found} in the hour): "
          f"Archive.segments {api_s * 1000:.1f} ms (target < 50 ms); `archiver ls --json` {cli_s * 1000:.0f} ms "
          "including interpreter start")
    print(orjson.dumps({"cat_ratio": baseline_s / archiver_s, "ls_ms": api_s * 1000}).decode(), file=sys.stderr)


if __name__ == "__main__":
    main()
