"""The whole promise, end to end: every number an application logged is in the grid.

An application process logs a numbered sequence at full speed through
``ArchiveHandler(buffer_dir=...)``, writing each number to its progress file only after
``emit`` returned. The sink uploads to a real 2-of-3 grid (happy 2: a SIGKILL mid-upload leaves a
partial share that its storage server holds for a while, and the same segment cannot place
a share there again until it is dropped; with happy 3 on three servers that stalled the
drain). Meanwhile the sink is
killed (SIGKILL) twice and stopped (SIGTERM) once, restarted each time; a storage node is
stopped and started (uploads go on to the two left); the application is killed once and
restarted on the same buffer_dir. At the end the archive is read from the root READ cap in a
fresh directory: every logged number must be there (duplicates are allowed and reported).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from archiver.app.grid import LocalGrid, free_port
from conftest import Sink, archiver_cli

APP = textwrap.dedent(
    """
    import json, logging, os, sys, time
    from archiver import ArchiveHandler

    url, buffer_dir, progress_path, stop_path, stats_path = sys.argv[1:6]
    rate = float(sys.argv[6])  # records a second; 0 is as fast as emit returns
    start = 0
    if os.path.exists(progress_path):
        for line in open(progress_path, "rb").read().split(b"\\n"):
            if line.strip().isdigit():
                start = max(start, int(line) + 1)
    # close() sends the buffer's backlog within `timeout`; on a loaded machine that backlog can
    # be a hundred batches, and what close() leaves in buffer_dir waits for the next start.
    handler = ArchiveHandler(url, buffer_dir=buffer_dir, flush_interval=0.2, timeout=120)
    log = logging.getLogger("e2e")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    n = start
    began = time.monotonic()
    with open(progress_path, "a") as progress:
        while not os.path.exists(stop_path):
            log.info("seq %d", n)
            progress.write(f"{n}\\n")  # only after emit returned
            n += 1
            if n % 500 == 0:
                progress.flush()
                if rate:
                    time.sleep(max(0.0, (n - start) / rate - (time.monotonic() - began)))
    handler.close()
    with open(stats_path, "w") as stats:
        json.dump({"sent": handler.sent, "dropped": handler.dropped, "first": start, "last": n - 1}, stats)
    """
)


@dataclass
class App:
    """The application process, restartable on the same buffer dir and progress file."""

    workdir: Path
    url: str
    rate: float
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[int] = field(default_factory=list)

    def start(self) -> None:
        script = self.workdir / "app.py"
        script.write_text(APP)
        with open(self.workdir / "app.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), self.url, str(self.workdir / "buffer"), str(self.workdir / "progress"),
                 str(self.workdir / "stop"), str(self.workdir / "stats.json"), str(self.rate)],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def finish(self, timeout: float = 180) -> dict[str, int]:
        assert self.proc is not None
        (self.workdir / "stop").touch()
        assert self.proc.wait(timeout) == 0, (self.workdir / "app.log").read_text()[-3000:]
        return orjson.loads((self.workdir / "stats.json").read_bytes())

    def logged(self) -> set[int]:
        progress = self.workdir / "progress"
        lines = progress.read_bytes().split(b"\n") if progress.exists() else []
        return {int(line) for line in lines if line.strip().isdigit()}


def _restart(sink: Sink) -> None:
    """Start again on the same port (the application's URL), waiting out a port still held."""
    deadline = time.monotonic() + 30
    while True:
        try:
            sink.start()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_progress(app: App, more_than: int) -> None:
    deadline = time.monotonic() + 60
    while len(app.logged()) <= more_than:
        assert app.proc is not None and app.proc.poll() is None, (app.workdir / "app.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the application logs nothing"
        time.sleep(0.1)


def run_end_to_end(tmp_path: Path, grid: LocalGrid, sinks: list[Sink], rounds: int, rate: float, step: int) -> None:
    """``rounds`` of every fault, each after ``step`` more records were logged."""
    port = free_port(set())
    config = tmp_path / "sink.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[server]\nport = {port}\n'
        f'[store]\nurl = "tahoe://{grid.gateway_url.split("://")[1]}"\nshares_happy = 2\n'
        '[segments]\nmax_age = "1s"\n'
        '[uploader]\ninterval = "1s"\npublish_delay = "500ms"\nverify_interval = "1h"\nbackoff_base = "500ms"\n'
        'backoff_max = "2s"\n'
    )
    sink = Sink(tmp_path / "data", ["-c", str(config), "--port", str(port)])
    sinks.append(sink)  # stopped at teardown even when the test fails or times out
    sink.start()
    app = App(tmp_path, f"{sink.url}/e2e", rate)
    app.start()
    try:
        for _ in range(rounds):
            for event in ("kill sink", "node down", "kill app", "kill sink", "stop sink"):
                _wait_progress(app, len(app.logged()) + step)
                if event == "kill sink":
                    sink.kill()
                    _wait_progress(app, len(app.logged()) + step // 4)  # the application goes on meanwhile
                    _restart(sink)
                elif event == "stop sink":
                    assert sink.stop(120) == 0, sink.log_text()
                    _restart(sink)
                elif event == "node down":
                    grid.stop_node("storage2")
                    try:
                        _wait_progress(app, len(app.logged()) + step)
                    finally:
                        grid.start_node("storage2")
                else:
                    app.kill()
                    app.start()
        stats = app.finish()
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()
    logged = app.logged()
    assert stats["dropped"] == 0, stats

    grid.wait_ready(60)
    deadline = time.monotonic() + 300
    while True:  # the grid is whole again: the uploader drains the backlog
        status = orjson.loads(archiver_cli("status", "--json", "-c", str(config)).stdout)
        if not status["segments"].get("sealed") and not status["open"] and status["backlog_bytes"] == 0:
            break
        assert time.monotonic() < deadline, status
        archiver_cli("flush", "-c", str(config), check=False)
    assert archiver_cli("flush", "-c", str(config)).returncode == 0  # publishes what is uploaded
    read_cap = orjson.loads(archiver_cli("manifest", "export", "-c", str(config)).stdout)["root"]["read_cap"]
    assert read_cap.startswith("URI:DIR2-RO:")
    assert sink.stop(120) == 0, sink.log_text()

    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    reader = subprocess.run(
        [sys.executable, "-m", "archiver", "cat", "--json", "--stream", "e2e",
         "--archive", f"tahoe://{grid.gateway_url.split('://')[1]}/{read_cap}"],
        cwd=fresh, capture_output=True, timeout=600, check=True,
    )
    archived = Counter(int(orjson.loads(line)["message"].split()[1]) for line in reader.stdout.splitlines())
    missing = sorted(logged - set(archived))
    duplicates = sum(n - 1 for n in archived.values() if n > 1)
    print(f"logged {len(logged)}, archived {len(archived)} distinct, {duplicates} duplicate(s)")
    assert not missing, f"{len(missing)} logged numbers missing, first {missing[:20]}; application: {stats}"


def test_every_logged_record_reaches_the_grid_through_kills_and_outages(
    grid3: LocalGrid, tmp_path: Path, sinks: list[Sink]
) -> None:
    """The short run: one round of every fault, the application held to 2,000 records/s so
    the read-back stays small; `make soak` runs many rounds at full speed."""
    run_end_to_end(tmp_path, grid3, sinks, rounds=1, rate=2000, step=3000)


@pytest.mark.soak
def test_every_logged_record_reaches_the_grid_many_rounds(grid3: LocalGrid, tmp_path: Path, sinks: list[Sink]) -> None:
    run_end_to_end(tmp_path, grid3, sinks, rounds=6, rate=0, step=50_000)
