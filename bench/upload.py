"""Sink-to-grid upload throughput: archiver's upload job against curl PUTs of the same sealed files.

1. A real SegmentWriter writes and seals --segments segments of --segment-records varied log
   records each (gzip level 6, as the sink seals them: about 10 MB compressed apiece).
2. Each round, on the same one-node grid, each side into a fresh root, in alternating order:
   `Uploader.upload_due()` (the sink's job: directories, PUT, caps, manifest rows) and one
   `curl -T FILE URL` process per file (a path-form PUT, which makes missing directories
   itself). Each uploads the files twice: the first batch of a day makes the day's
   directories, a later batch finds them (the sink's steady state). The best round counts.
   Tahoe's convergent encryption would find the shares of bytes it has already stored and skip
   most of the work, so every batch gets its own variant of the files: the gzip header's MTIME
   field set to a number of its own (same size, same records, different bytes).
3. Read-back of the stored (compressed) bytes by the reader's path (`Archive.open_segment` by
   read cap) against `curl -o` of the same caps; bench/read.py times decompressing them.
Prints MB/s, the ratio archiver / curl (target >= 0.9) and upload_due's requests by kind.
Run: .venv/bin/python bench/upload.py [--segments N] [--segment-records R] [--rounds N] [--grid DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from common import one_node_grid

from archiver import open_archive
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.record import Context
from archiver.format.store_layout import store_path
from archiver.ingest.decode.jsonbody import json_record
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.store.tahoe import TahoeFS, _new_session

SINK_ID = "bench"
Tally = dict[str, list[float]]  # request kind -> [count, seconds]
STREAM = "app"
WRITE_BATCH = 1000
POOL = 50 * WRITE_BATCH
METHODS = ("curl", "archiver")
RUNS = ("first batch of the day", "later batch")
PATHS = ["/api/items", "/api/orders", "/login", "/static/app.js", "/api/search", "/healthz"]


def varied_records(rng: random.Random, start: float, count: int) -> list[dict[str, object]]:
    """Access-log-like records with ids, sizes and timings that differ line to line, so gzip
    leaves about a sixth of them (as with real logs) instead of next to nothing."""
    ctx = Context(STREAM, "127.0.0.1", start)
    records = []
    for i in range(count):
        status = rng.choice((200, 200, 200, 201, 304, 404, 500))
        fields = {
            "created": start + i / 1000, "levelname": "WARNING" if status >= 400 else "INFO", "name": "app.web",
            "msg": "%s %s/%d %d in %.1f ms", "args": f"('GET', '{rng.choice(PATHS)}', {rng.getrandbits(24)}, "
            f"{status}, {rng.expovariate(1 / 40):.1f})", "request_id": rng.randbytes(12).hex(),
            "user": f"user{rng.randrange(50_000)}", "bytes": rng.randrange(100, 2_000_000),
            "trace": rng.randbytes(18).hex(),
        }
        records.append(json_record(fields, ctx))
    return records


def build_sealed(root: Path, segments: int, per_segment: int) -> list[SegmentRow]:
    """``segments`` segments of ``per_segment`` records each, sealed by a real SegmentWriter in data
    dir ``root``. Records come in turn from a pool of POOL distinct ones: their repeats are
    megabytes apart, far beyond what gzip's 32 KB window can see."""
    root.mkdir()
    manifest = Manifest(root)
    manifest.set_meta("sink_id", SINK_ID)
    manifest.close()
    pool = varied_records(random.Random(8), time.time(), POOL)

    async def write() -> None:
        writer = SegmentWriter(DataDir(root), SINK_ID, RotationPolicy(2**62, per_segment, 86400))
        await writer.start()
        for n in range(0, segments * per_segment, WRITE_BATCH):
            writer.write_records(STREAM, pool[n % POOL : n % POOL + WRITE_BATCH])
            await writer.commit()
        await writer.close()

    asyncio.run(write())
    manifest = Manifest(root)
    try:
        return manifest.in_state("sealed")
    finally:
        manifest.close()


def restamp(path: Path, variant: int) -> None:
    """Write ``variant`` into the gzip header's MTIME (bytes 4-7): new bytes, same size and records."""
    with open(path, "r+b") as handle:
        handle.seek(4)
        handle.write(variant.to_bytes(4, "little"))


def tallied(root: TahoeFS, tally: Tally) -> TahoeFS:
    """``root`` through a session that adds each request's time (until its answer's headers) to
    ``tally`` under its kind, such as "GET t=json": where upload_due's time goes."""
    session = _new_session()

    def record(response: requests.Response, *args: object, **kwargs: object) -> None:
        query = parse_qs(urlsplit(response.request.url or "").query)
        kind = "t=" + query["t"][0] if "t" in query else "file"
        entry = tally.setdefault(f"{response.request.method} {kind}", [0, 0.0])
        entry[0] += 1
        entry[1] += response.elapsed.total_seconds()

    session.hooks["response"].append(record)
    return TahoeFS(root.node_url, root.root_cap, session=session)


def archiver_uploads(template: Path, rows: list[SegmentRow], workdir: Path, root: TahoeFS,
                     variants: list[int]) -> list[tuple[float, Tally]]:
    """Seconds and requests by kind of an `Uploader.upload_due()` of every segment into ``root``
    for each variant of the files; one Uploader, as in a running sink, so only the first run
    makes the day's directories. Publishes at the end, for the read-back."""
    data = workdir / "data"
    shutil.copytree(template, data)
    tally: Tally = {}
    store = tallied(root, tally)
    uploader = Uploader(DataDir(data), SINK_ID, lambda: store, UploadSettings())
    runs = []
    for variant in variants:
        manifest = Manifest(data)
        for row in rows:
            manifest.update_segment(row.id, state="sealed")  # due again, under the same store path
            restamp(data / row.local_path, variant)
        manifest.close()
        tally.clear()
        start = time.perf_counter()
        result = uploader.upload_due(force=True)
        runs.append((time.perf_counter() - start, {kind: list(entry) for kind, entry in tally.items()}))
        if result["uploaded"] != len(rows) or result["failed"]:
            raise RuntimeError(f"upload_due: {result}, last error {uploader.last_error}")
    uploader.publish()
    uploader.close()
    shutil.rmtree(data)
    return runs


def curl_uploads(template: Path, rows: list[SegmentRow], workdir: Path, root: TahoeFS, variants: list[int]) -> list[float]:
    """Seconds of a `curl -T` process per file to each segment's store path under ``root``, for
    each variant of the files (a path-form PUT makes missing directories itself)."""
    folder = workdir / "curl"
    folder.mkdir()
    files = []
    for row in rows:
        path = folder / Path(row.local_path).name
        shutil.copyfile(template / row.local_path, path)
        files.append((path, f"{root.node_url}/uri/{root.root_cap}{store_path(row)}"))
    runs = []
    for variant in variants:
        for path, _ in files:
            restamp(path, variant)
        start = time.perf_counter()
        for path, url in files:
            subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-T", str(path), url], check=True)
        runs.append(time.perf_counter() - start)
    shutil.rmtree(folder)
    return runs


def read_back(root: TahoeFS) -> tuple[float, float]:
    """Seconds to read every segment published under ``root`` by its read cap: the reader's path
    (as `archiver cat --archive` fetches them), then a curl process per file."""
    read_cap = root.getinfo("/", namespaces=["tahoe"]).raw["tahoe"]["read_cap"]
    with open_archive(f"tahoe://{root.node_url.split('://', 1)[1]}/{read_cap}") as archive:
        rows = archive.segments()
        start = time.perf_counter()
        for row in rows:
            with archive.open_segment(row) as stored:
                while stored.read(1 << 20):
                    pass
        archiver_s = time.perf_counter() - start
    start = time.perf_counter()
    for row in rows:
        subprocess.run(["curl", "-sSf", "-o", "/dev/null", f"{root.node_url}/uri/{row.read_cap}"], check=True)
    return archiver_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--segment-records", type=int, default=120_000,
                        help=f"records per segment, a multiple of {WRITE_BATCH} (about 490 B each, 6:1 under gzip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grid", type=Path, help="a running grid's directory (default: a new one-node grid)")
    args = parser.parse_args()
    if args.segment_records % WRITE_BATCH:
        parser.error(f"--segment-records must be a multiple of {WRITE_BATCH}")
    with tempfile.TemporaryDirectory(prefix="archiver-upload-bench-") as tmp, ExitStack() as roots:
        workdir = Path(tmp)
        template = workdir / "template"
        began = time.perf_counter()
        rows = build_sealed(template, args.segments, args.segment_records)
        stored = sum(row.stored_bytes for row in rows)
        print(f"sealed {len(rows)} segments in {time.perf_counter() - began:.0f} s: "
              f"{sum(row.raw_bytes for row in rows) / 1e6:.0f} MB of JSON lines, {stored / 1e6:.1f} MB gzip", flush=True)
        times: dict[tuple[str, str], list[float]] = {(method, batch): [] for method in METHODS for batch in RUNS}
        tallies: dict[str, list[Tally]] = {batch: [] for batch in RUNS}
        grid = roots.enter_context(one_node_grid(workdir, args.grid))
        for round_no in range(args.rounds):
            for method in METHODS if round_no % 2 == 0 else METHODS[::-1]:
                root = grid.create_root()
                roots.callback(root.close)
                variants = [len(RUNS) * (2 * round_no + METHODS.index(method)) + n + 1 for n in range(len(RUNS))]
                if method == "archiver":
                    runs = archiver_uploads(template, rows, workdir, root, variants)
                    for batch, (elapsed, tally) in zip(RUNS, runs):
                        times[method, batch].append(elapsed)
                        tallies[batch].append(tally)
                    published = root
                else:
                    for batch, elapsed in zip(RUNS, curl_uploads(template, rows, workdir, root, variants)):
                        times[method, batch].append(elapsed)
                print(f"  round {round_no + 1} {method}: " + ", ".join(
                    f"{batch} {times[method, batch][-1]:.2f} s" for batch in RUNS), flush=True)
        read_archiver, read_curl = read_back(published)
    report(args.rounds, len(rows), stored / 1e6, times, tallies)
    print(f"read-back of the stored bytes by read cap: Archive.open_segment {read_archiver:.2f} s, "
          f"curl -o {read_curl:.2f} s: archiver / curl = {read_curl / read_archiver:.2f}x throughput")


def report(rounds: int, segments: int, mb: float, times: dict[tuple[str, str], list[float]],
           tallies: dict[str, list[Tally]]) -> None:
    """The throughput table, the ratios, and upload_due's requests in its best round of each batch."""
    best = {key: min(values) for key, values in times.items()}
    print(f"\nUploading {segments} sealed segments ({mb:.1f} MB gzip) to a one-node grid, twice into a fresh root "
          f"(the first batch makes the day's directories); best of {rounds} rounds, alternating which goes first\n")
    print("| uploader | batch | MB | best s | MB/s | every round s |")
    print("|---|---|---:|---:|---:|---|")
    for method, label in zip(METHODS, ("curl -T, a process per file", "archiver Uploader.upload_due (TahoeFS)")):
        for batch in RUNS:
            every = ", ".join(f"{t:.2f}" for t in times[method, batch])
            print(f"| {label} | {batch} | {mb:.1f} | {best[method, batch]:.2f} | {mb / best[method, batch]:.1f} | {every} |")
    print()
    for batch in RUNS:
        print(f"ratio archiver / curl = {best['curl', batch] / best['archiver', batch]:.2f}x throughput "
              f"(target >= 0.9), {batch}")
    print("\nWhere upload_due's time went, in its best round of each batch (seconds until each answer's headers)\n")
    fastest = {batch: tallies[batch][times["archiver", batch].index(best["archiver", batch])] for batch in RUNS}
    print("| request | " + " | ".join(f"{batch}: count | s | ms each" for batch in RUNS) + " |")
    print("|---|" + "---:|---:|---:|" * len(RUNS))
    kinds = sorted({kind for tally in fastest.values() for kind in tally}, key=lambda k: -fastest[RUNS[0]].get(k, [0, 0])[1])
    for kind in kinds:
        cells = []
        for batch in RUNS:
            count, seconds = fastest[batch].get(kind, [0, 0.0])
            cells.append(f"{count:.0f} | {seconds:.2f} | {seconds / count * 1000:.1f}" if count else "0 | | ")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    others = [best["archiver", batch] - sum(s for _, s in fastest[batch].values()) for batch in RUNS]
    print("| manifest, files, Python | " + " | ".join(f" | {other:.2f} | " for other in others) + " |\n")

if __name__ == "__main__":
    main()
