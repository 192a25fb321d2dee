"""Scale out: HTTPHandler-style load against one archiver sink process, then two sharing one root.

Every sink has its own data dir, port and sink id and the same store root, a directory on a
one-node Tahoe grid made in a temporary directory (`--store tahoe://HOST:PORT/URI:DIR2:...`), as
docs/operations.md describes for several sinks. The load is bench/ingest_http.py's: a new
connection per record, CONCURRENCY closed-loop clients in --load-procs processes of their own,
split evenly across the sinks' ports; the best of --rounds runs of one and of two, in turn.
Printed: records/s for one and two sinks, their ratio (target >= 1.6x where cores allow), and
the CPU the sinks and the load processes used: on a 2-core machine the load generator shares
the cores, so the ratio is bounded by what is left.
Run: make bench   (or .venv/bin/python bench/scale_out.py [--duration S] [--concurrency N])
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import orjson
import requests
from common import one_node_grid, stop
from ingest_http import cores, load_pool, max_rate, start_archiver

from archiver.app.service import grid_store_url


def flushed_root(port: int) -> str | None:
    """Seal and upload what a sink holds, then the store root it reports (its read cap): proof
    that the sinks really wrote to one shared root, taken after the timed run."""
    requests.post(f"http://127.0.0.1:{port}/_admin/flush", timeout=300).raise_for_status()
    cap: str | None = requests.get(f"http://127.0.0.1:{port}/_status", timeout=10).json()["store"]["root_read_cap"]
    return cap


def run(store: str, workdir: Path, pool: ProcessPoolExecutor, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """One sink, and two more sharing its store root, all started at once (idle sinks cost next
    to nothing); --rounds max-rate runs of one and of two, in turn, the best of each kept."""
    with ExitStack() as stack:
        groups: dict[int, list[tuple[subprocess.Popen[bytes], int]]] = {1: [], 2: []}
        for sinks, servers in groups.items():
            for n in range(sinks):
                proc, port = start_archiver(workdir, "--store", store, env={"ARCHIVER_SINK_ID": f"bench-{sinks}-{n}"})
                stack.callback(stop, proc)
                servers.append((proc, port))
        best: dict[int, dict[str, float]] = {}
        for _ in range(args.rounds):
            for sinks, servers in groups.items():
                result = max_rate(servers, pool, args)
                print(f"  {sinks} sink(s): {result['rate']:.0f} records/s", file=sys.stderr)
                if sinks not in best or result["rate"] > best[sinks]["rate"]:
                    best[sinks] = result
        roots = {flushed_root(port) for servers in groups.values() for _, port in servers}
        if len(roots) != 1 or None in roots:
            raise RuntimeError(f"the sinks did not upload to one shared store root: {roots}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32, help="clients in all (a multiple of 2 x --load-procs)")
    parser.add_argument("--rounds", type=int, default=3, help="max-rate runs of one and of two sinks, in turn; the best counts")
    parser.add_argument("--load-procs", type=int, default=2, help="load generator processes (clients split evenly)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-scale-bench-") as tmp, load_pool(args.load_procs) as pool, \
            one_node_grid(Path(tmp)) as grid:
        store = f"{grid_store_url(grid)}/{grid.create_root().root_cap}"
        results = run(store, Path(tmp), pool, args)
    ratio = results[2]["rate"] / results[1]["rate"]
    if args.json:
        print(orjson.dumps({"one": results[1], "two": results[2], "ratio": ratio}).decode())
        return
    print(f"\nScale out, HTTPHandler-style (a connection per record, fsync=always), sinks sharing one "
          f"store root; os.cpu_count() = {os.cpu_count()}, {args.concurrency} clients in {args.load_procs} "
          f"load processes split evenly across the sinks, {args.duration:.0f} s per run, best of {args.rounds}. CPU: cores busy "
          "(CPU seconds / wall seconds) during the run; other: everything else (the idle "
          "grid, other programs on this shared machine).\n")
    print("| sinks | records/s | p50 ms | p99 ms | errors | sinks CPU | load CPU | other CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sinks, r in results.items():
        print(f"| {sinks} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {int(r['errors'])} | "
              f"{cores(r, 'sink_cpu')} | {cores(r, 'load_cpu')} | {cores(r, 'other_cpu')} |")
    print(f"\ntwo sinks / one = {ratio:.2f}x (target >= 1.6x where cores allow)")


if __name__ == "__main__":
    main()
