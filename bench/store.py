"""TahoeFS against curl, to the same Tahoe gateway in the same run.

Uploads then downloads 200 x 256 KB and 5 x 20 MB files, once through TahoeFS and once with a
curl process per file, and prints time ratios (TahoeFS / curl; target <= 1.15 both ways).
Each figure is the best of --rounds runs. A one-node grid is created in a temporary directory
unless --grid names a running one (`archiver grid create DIR --start`).
Run: make bench   (or .venv/bin/python bench/store.py [--rounds N] [--grid DIR])
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from archiver.app.grid import LocalGrid

SETS = {"200 x 256 KB": (200, 256 * 1024), "5 x 20 MB": (5, 20 * 1024 * 1024)}


def make_files(workdir: Path, count: int, size: int) -> list[Path]:
    files = []
    for n in range(count):
        path = workdir / f"f{size}-{n:03d}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def best_of(rounds: int, action: Callable[[int], None]) -> float:
    times = []
    for round_no in range(rounds):
        start = time.perf_counter()
        action(round_no)
        times.append(time.perf_counter() - start)
    return min(times)


def run(grid: LocalGrid, workdir: Path, rounds: int) -> list[tuple[str, float, float, float, float]]:
    root = grid.create_root()
    base = f"{grid.gateway_url}/uri/{root.root_cap}"
    rows = []
    for label, (count, size) in SETS.items():
        files = make_files(workdir, count, size)
        out = workdir / "out.bin"

        def tahoe_up(r: int) -> None:
            folder = root.makedirs(f"tahoefs/{label}/{r}".replace(" ", "_"), recreate=True)
            for path in files:
                with open(path, "rb") as handle:
                    folder.upload(path.name, handle)

        def curl_up(r: int) -> None:
            folder = f"{base}/curl/{label.replace(' ', '_')}/{r}"
            for path in files:
                subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-T", str(path), f"{folder}/{path.name}"], check=True)

        def tahoe_down(r: int) -> None:
            folder = f"tahoefs/{label.replace(' ', '_')}/0"
            for path in files:
                with open(out, "wb") as handle:
                    root.download(f"{folder}/{path.name}", handle)

        def curl_down(r: int) -> None:
            folder = f"{base}/curl/{label.replace(' ', '_')}/0"
            for path in files:
                subprocess.run(["curl", "-sSf", "-o", str(out), f"{folder}/{path.name}"], check=True)

        up_curl = best_of(rounds, curl_up)
        up_tahoe = best_of(rounds, tahoe_up)
        down_curl = best_of(rounds, curl_down)
        down_tahoe = best_of(rounds, tahoe_down)
        rows.append((label, up_tahoe, up_curl, down_tahoe, down_curl))
        for path in files:
            path.unlink()
    root.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--grid", type=Path, help="a running grid's directory (default: a new one-node grid)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-store-bench-") as tmp:
        workdir = Path(tmp)
        if args.grid:
            rows = run(LocalGrid(args.grid), workdir, args.rounds)
        else:
            grid = LocalGrid.create(workdir / "grid", nodes=1, needed=1, happy=1, total=1)
            grid.start()
            try:
                rows = run(grid, workdir, args.rounds)
            finally:
                grid.stop()
    print(f"\nTahoeFS vs curl, same gateway, best of {args.rounds}; ratio = TahoeFS time / curl time (target <= 1.15)\n")
    print("| files | upload TahoeFS s | upload curl s | ratio | download TahoeFS s | download curl s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, up_t, up_c, down_t, down_c in rows:
        print(f"| {label} | {up_t:.2f} | {up_c:.2f} | {up_t / up_c:.2f} | {down_t:.2f} | {down_c:.2f} | {down_t / down_c:.2f} |")


if __name__ == "__main__":
    main()
