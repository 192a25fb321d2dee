"""Helpers the benchmarks share: a real sink process on a fresh data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
import psutil

from archiver.app.grid import LocalGrid


def start_sink(workdir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """`archiver serve` on a free port; returns the process and its sink.json."""
    data = workdir / f"data-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "archiver", "serve", "--data-dir", str(data), "--port", "0", *args],
        env={**os.environ, "ARCHIVER_LOG_LEVEL": "WARNING", **(env or {})}, stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            info = orjson.loads((data / "sink.json").read_bytes())
            if info["pid"] == proc.pid:
                return proc, info
        except (FileNotFoundError, orjson.JSONDecodeError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("the sink did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)


@contextmanager
def one_node_grid(workdir: Path, running: Path | None = None) -> Iterator[LocalGrid]:
    """A started 1-of-1 grid under ``workdir``, stopped (by its recorded PIDs) on exit; or the
    running grid in ``running`` (--grid DIR), left running."""
    if running is not None:
        yield LocalGrid(running)
        return
    grid = LocalGrid.create(workdir / "grid", nodes=1, needed=1, happy=1, total=1)
    grid.start()
    try:
        yield grid
    finally:
        grid.stop()


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds these processes, their threads and their live children (nginx's
    workers) have used so far: what servers took of the cores the load generator also needs."""
    procs = [psutil.Process(pid) for pid in pids]
    procs += [child for proc in procs for child in proc.children(recursive=True)]
    return sum(sum(proc.cpu_times()[:2]) for proc in procs)


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy so far, interrupts included (here the processes'
    own times include the softirq time of loopback TCP that /proc/stat counts apart). Less the
    sink's and the load's: what other programs on this shared machine took during a run."""
    times = psutil.cpu_times()
    busy: float = times.user + times.nice + times.system + times.irq + times.softirq
    return busy
