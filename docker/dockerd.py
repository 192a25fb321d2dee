"""A Docker daemon for the stack test: the one that answers, else dockerd started here.

A machine without a daemon (CI has only a docker client) gets Debian's dockerd with its data
under .cache/docker and its own socket, tried with overlay2 first, then vfs (a file system that
cannot hold overlay layers), then without iptables and the default bridge (a kernel or sandbox
that refuses them). It is stopped by its PID when the test ends; a daemon found running is left
alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SOCKET = "/run/archiver-docker.sock"
ATTEMPTS = [
    ["--storage-driver=overlay2"],
    ["--storage-driver=vfs"],
    ["--storage-driver=vfs", "--iptables=false", "--bridge=none"],
]


@dataclass
class Daemon:
    host: str
    started_here: bool
    driver: str
    flags: list[str]


def answers(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                              capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def storage_driver() -> str:
    return subprocess.run(["docker", "info", "--format", "{{.Driver}}"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


@contextlib.contextmanager
def docker_daemon(state: Path) -> Iterator[Daemon]:
    """Sets DOCKER_HOST for this process and its children while the daemon is in use."""
    if answers(dict(os.environ)):
        yield Daemon(os.environ.get("DOCKER_HOST", "default socket"), False, storage_driver(), [])
        return
    host = f"unix://{SOCKET}"
    os.environ["DOCKER_HOST"] = host
    state.mkdir(parents=True, exist_ok=True)
    failures = []
    for flags in ATTEMPTS:
        process = _start(state, flags)
        if _wait_up(process):  # dockerd checks its storage driver and iptables as it starts
            break
        failures.append(f"dockerd {' '.join(flags)}: {_tail(state / 'dockerd.log')}")
        _stop(process)
    else:
        raise RuntimeError("no Docker daemon could be started:\n" + "\n".join(failures))
    try:
        yield Daemon(host, True, storage_driver(), flags)
    finally:
        _stop(process)


def _start(state: Path, flags: list[str]) -> subprocess.Popen[bytes]:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    command = [*sudo, "dockerd", f"--data-root={state / 'data'}", "--exec-root=/run/archiver-docker",
               "--pidfile=/run/archiver-docker.pid", f"--host=unix://{SOCKET}", *flags]
    print("+", " ".join(command), f"> {state / 'dockerd.log'}", flush=True)
    with open(state / "dockerd.log", "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_up(process: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if answers(dict(os.environ)):
            return True
        time.sleep(0.5)
    return False


def _stop(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM by PID (dockerd then stops its containers and its containerd), SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    _signal(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(process.pid, signal.SIGKILL)
        process.wait(10)


def _signal(pid: int, sig: signal.Signals) -> None:
    """A dockerd started through sudo is root's: sudo passes the signal on."""
    if os.geteuid() == 0:
        os.kill(pid, sig)
    else:
        subprocess.run(["sudo", "kill", f"-{sig.name}", str(pid)], check=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"
