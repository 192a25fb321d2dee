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


# A realistic set of ten ingest rules (as docs/recipes.md builds them): redaction on every
# record, drops and routes that select by logger, field, level and source, fields set on every
# record. The rows that run with it measure what rules cost against the same row without.
TEN_RULES = r"""
[[rules]]
name = "card numbers"
redact = ['\d(?<!\d\d)\d{3}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}(?!\d)']

[[rules]]
name = "credentials"
redact = ['[Bb]earer [A-Za-z0-9._~+/-]+=*', '(?<=[Pp]assword=)[^&\s]+']
redact_fields = ["MESSAGE", "msg"]

[[rules]]
name = "health checks"
logger = ["healthcheck", "kube-probe*"]
drop = true

[[rules]]
name = "health routes"
fields = { "http.path" = '^/_?health(z)?$' }
drop = true

[[rules]]
name = "debug noise"
level = "DEBUG"
drop = true

[[rules]]
name = "web servers"
fields = { PROGRAM = '^(nginx|haproxy)$' }
route = "web"
stop = true

[[rules]]
name = "audit"
logger = "audit.*"
route = "audit"
stop = true

[[rules]]
name = "errors"
min_level = "ERROR"
set = { alert = true }

[[rules]]
name = "site"
set = { env = "prod", dc = "eu-1" }

[[rules]]
name = "over tcp"
source = "tcp"
set = { via = "tcp" }
"""


def rules_config(workdir: Path) -> Path:
    """A config file holding TEN_RULES, for ``start_sink(workdir, "-c", str(path))``."""
    path = workdir / "ten-rules.toml"
    path.write_text(TEN_RULES)
    return path


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
