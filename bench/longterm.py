"""A year of segments: what publishing, listing, lease renewal and retention cost after it.

Builds a sink's manifest of --segments segments (default 1,000,000) over 10 streams and the 365
days ending now, hour by hour, publishing after each hour as the sink would (rows made
directly in SQLite, as bench/read.py does; the store is a local directory, format 2 of the
published manifest). Then measures:

1. one publish after one more segment: bytes written and time (target < 64 KiB, < 100 ms);
2. `archiver ls --since 1h` and `archiver ls --since 30d --stream s3` from the store root
   (what a holder of the root read cap does), and how many manifest files each reads
   (target < 1 s for the first);
3. one lease-renewal pass: the objects, the calls of one hourly run and of a full pass;
4. `archiver forget --dry-run` with keep = 300d;
5. the largest directory over the simulated year (entries), in the hour layout the uploader
   writes and in the day layout before it, and how many directories each makes.

Run: make bench   (or .venv/bin/python bench/longterm.py [--segments N])
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from posixpath import dirname
from typing import BinaryIO, Iterable

import orjson
from fs.osfs import OSFS

from archiver.common.units import format_ts
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.store_layout import segment_dir
from archiver.read.reader import store_archive
from archiver.ship.leases import LeaseRenewer, LeaseSettings
from archiver.ship.publisher import Publisher
from archiver.store.base import Stored
from archiver.store.fs import FsStore

STREAMS = 10
HOUR = 3600.0
CAP = "URI:CHK:" + "a" * 26 + ":" + "b" * 52 + ":2:3:{size}"  # a Tahoe CHK read cap's length


class MeasuredStore(FsStore):
    """A directory store that counts what is put and read."""

    def __init__(self, root: Path) -> None:
        super().__init__(OSFS(str(root), create=True), f"osfs://{root}")
        self.put_bytes = 0
        self.puts = 0
        self.reads = 0

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        data = file.read()
        self.put_bytes += len(data)
        self.puts += 1
        return super().put(path, io.BytesIO(data), parent)

    def open(self, path: str) -> BinaryIO:
        self.reads += 1
        return super().open(path)


def build_year(data: Path, store: MeasuredStore, segments: int, end: float) -> float:
    """Insert and publish a year of segments, hour by hour; returns the seconds it took."""
    start = end - 365 * 86400
    hours = 365 * 24
    per_hour = segments / hours
    manifest = Manifest(data)
    manifest.set_meta("sink_id", "year")
    manifest.set_meta("root_read_cap", "URI:DIR2-RO:" + "r" * 26 + ":" + "s" * 52)
    clock = [start]
    publisher = Publisher("year", lambda: clock[0])
    db = sqlite3.connect(data / Manifest.FILENAME, isolation_level=None)
    made = 0
    began = time.perf_counter()
    for hour in range(hours):
        clock[0] = start + hour * HOUR + HOUR - 1
        count = int((hour + 1) * per_hour) - made
        rows = []
        for n in range(made, made + count):
            ts = start + hour * HOUR + (n - made) * HOUR / max(count, 1)
            stream = f"s{n % STREAMS}"
            segment = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts)) + f"-year-{n % 1_000_000:06d}"
            rows.append((
                segment, stream, "verified", "", "gzip", 1_048_576, 98_304, f"{n:064x}", 4096, format_ts(ts - 300),
                format_ts(ts), orjson.dumps({"INFO": 4000, "ERROR": 96}).decode(), format_ts(ts),
                f"{segment_dir(stream, segment)}/{segment}.jsonl.gz", CAP.format(size=n),
                format_ts(ts), format_ts(ts),
            ))
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO segments (id, stream, state, local_path, compression, raw_bytes, stored_bytes, sha256, records,"
            " first_ts, last_ts, levels, sealed_at, store_path, read_cap, uploaded_at, verified_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        )
        db.execute("COMMIT")
        made += count
        publisher.publish(store, manifest, store.makedirs)
    db.close()
    manifest.close()
    return time.perf_counter() - began


def directory_sizes(files: Iterable[str]) -> tuple[tuple[int, str], tuple[int, str], int]:
    """The tree the store paths of ``files`` make: its largest directory and its largest
    directory of files, each as (entries, path), and how many directories it has."""
    leaves: Counter[str] = Counter()
    inner: defaultdict[str, set[str]] = defaultdict(set)
    for path in files:
        leaves[dirname(path)] += 1
        parts = dirname(path).strip("/").split("/")
        for n in range(len(parts)):
            inner["/" + "/".join(parts[:n])].add(parts[n])
    sizes = {**{path: len(names) for path, names in inner.items()}, **leaves}
    largest = max(sizes, key=lambda path: sizes[path])
    leaf = max(leaves, key=lambda path: leaves[path])
    return (sizes[largest], largest), (leaves[leaf], leaf), len(sizes)


def largest_on_disk(root: Path) -> tuple[int, str]:
    """The largest directory of a local tree (the published manifest): (entries, path)."""
    return max((len(dirs) + len(files), "/" + str(Path(top).relative_to(root))) for top, dirs, files in os.walk(root))


def timed_cli(*args: str) -> tuple[float, int]:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, check=True)
    return time.perf_counter() - began, len(out.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="longterm-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        store = MeasuredStore(work / "store")
        end = time.time()
        built = build_year(work / "data", store, args.segments, end)
        print(f"built and published a year of {args.segments:,} segments in {built:.0f} s "
              f"({store.puts:,} puts, {store.put_bytes / 1e6:,.0f} MB of manifest written in all)")
        files = sum(1 for _ in (work / "store" / "_manifest").rglob("*.json"))
        print(f"manifest files in the store: {files:,}")

        # 1. One publish after one more segment.
        manifest = Manifest(work / "data")
        manifest.add_sealed(SegmentRow(
            "20990101T000000Z-year-999999", "s0", "verified", "", "gzip", 1, 1, "0" * 64, 1, format_ts(end),
            format_ts(end), {}, format_ts(end)))
        manifest.update_segment("20990101T000000Z-year-999999", store_path="/s0/x.jsonl.gz", read_cap=CAP.format(size=1),
                                uploaded_at=format_ts(end))
        store.put_bytes = store.puts = 0
        began = time.perf_counter()
        Publisher("year", lambda: end).publish(store, manifest, store.makedirs)
        took = time.perf_counter() - began
        print(f"1. one publish after one more segment: {store.put_bytes:,} bytes in {store.puts} put(s), "
              f"{took * 1000:.1f} ms (targets < 65,536 bytes, < 100 ms)")

        # 2. Listing from the store root.
        for label, since in (("the last hour", end - HOUR), ("the last 30 days", end - 30 * 86400)):
            store.reads = 0
            began = time.perf_counter()
            rows = store_archive(store).segments(since=format_ts(since))
            print(f"2. segments of {label} from the store root, in process: {len(rows):,} in "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms, {store.reads} manifest file(s) read")
        print(f"   (interpreter start and imports of the CLI: {timed_cli('--version')[0]:.2f} s)")
        url = f"osfs://{work / 'store'}"
        seconds, lines = timed_cli("ls", "--json", "--since", "1h", "--archive", url)
        print(f"   archiver ls --since 1h: {seconds:.2f} s, {lines} line(s) (target < 1 s)")
        seconds, lines = timed_cli("ls", "--json", "--since", "30d", "--stream", "s3", "--archive", url)
        print(f"   archiver ls --since 30d --stream s3: {seconds:.2f} s, {lines} line(s)")

        # 3. Lease renewal.
        settings = LeaseSettings()
        renewer = LeaseRenewer(DataDir(work / "data"), "year", lambda: store, settings, lambda: end + 8 * 86400)
        targets = renewer.targets(manifest)
        runs_per_pass = settings.every / settings.run_interval
        print(f"3. lease renewal: {len(targets):,} objects; one hourly run renews at most "
              f"{math.ceil(2 * len(targets) / runs_per_pass):,}; a full pass is {len(targets):,} calls a week "
              f"({len(targets) / settings.every:.2f} calls/s)")
        manifest.close()

        # 4. Retention, dry run.
        env = {**os.environ, "ARCHIVER_RETENTION_KEEP": "300d"}
        began = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "archiver", "forget", "--dry-run", "--json", "--data-dir",
                              str(work / "data")], capture_output=True, env=env)
        print(f"4. archiver forget --dry-run (keep 300d): exit {out.returncode}, "
              f"{len(out.stdout.splitlines()):,} line(s), {time.perf_counter() - began:.1f} s")

        # 5. Directory sizes over the year.
        db = sqlite3.connect(work / "data" / Manifest.FILENAME)
        paths = [path for (path,) in db.execute("SELECT store_path FROM segments WHERE id LIKE '%-year-%'")]
        db.close()
        largest, leaf, count = directory_sizes(paths)
        day_largest, _, day_count = directory_sizes(f"{dirname(dirname(path))}/{path.rsplit('/', 1)[1]}" for path in paths)
        manifest_entries, manifest_where = largest_on_disk(work / "store" / "_manifest")
        print(f"5. largest directory over the simulated year: {largest[0]:,} entries ({largest[1]}); the largest "
              f"of segments: {leaf[0]:,} ({leaf[1]}); {count:,} directories. The day layout: {day_largest[0]:,} "
              f"({day_largest[1]}), {day_count:,} directories. The published manifest's largest: "
              f"{manifest_entries:,} (/_manifest{manifest_where})")


if __name__ == "__main__":
    main()
