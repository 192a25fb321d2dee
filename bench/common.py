"""Helpers the benchmarks share: a real sink process on a fresh data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson


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
