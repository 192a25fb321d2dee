"""The container stack end to end, as `make docker-test` runs it (not collected by `make test`).

A Docker daemon (started here if none answers), the base image from a debootstrap root, the
images from wheels built on this host, a private registry they are pushed to and pulled from,
the grid and the sink of docker/compose.yaml; then records in over curl, HTTPHandler and TCP,
read back from the root read cap the sink logged, with a storage node stopped, and after the
stack is taken down and brought up again on the same volumes. Every step that fails raises;
each phase prints its duration, and the end prints them all with the storage driver and the
image sizes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

import dockerd
import images

ROOT = images.ROOT
STATE = images.CACHE / "docker"
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
PROJECT = "archiver-docker-test"
TAG = "docker-test"
ARCHIVER = str(Path(sys.executable).parent / "archiver")  # the host's CLI reads the archive as any reader would
READ_CAP = re.compile(r"root read cap: (URI:DIR2-RO:\S+)")
timings: list[tuple[str, float]] = []


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    print(f"== {name}", flush=True)
    start = time.monotonic()
    yield
    timings.append((name, time.monotonic() - start))
    print(f"== {name}: {timings[-1][1]:.0f} s", flush=True)


def free_port(taken: set[int]) -> int:
    """A port below 32768 that nothing on 127.0.0.1 listens on now."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in taken:
            taken.add(port)
            return port


def wait_for(what: str, ready: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = ready()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


class Stack:
    """docker-compose (v1, Debian's) on docker/compose.yaml under its own project name."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def compose(self, *args: str, capture: bool = False) -> str:
        command = ["docker-compose", "--ansi", "never", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
        if not capture:
            print("+ docker-compose", " ".join(args), flush=True)
        result = subprocess.run(command, env=self.env, check=True, text=True, timeout=900,
                                stdout=subprocess.PIPE if capture else None)
        return result.stdout or ""

    def health(self, service: str) -> str:
        container = self.compose("ps", "-q", service, capture=True).strip()
        if not container:
            return "absent"
        return subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                              capture_output=True, text=True, check=True).stdout.strip()

    def up(self) -> str:
        """Start every service, wait until the sink is healthy, and return the read cap it logged."""
        self.compose("up", "-d")
        wait_for("the archiver container healthy", lambda: self.health("archiver") == "healthy", 300)
        caps = wait_for("'root read cap:' in the archiver's log",
                        lambda: READ_CAP.findall(self.compose("logs", "--no-color", "archiver", capture=True)), 120)
        assert isinstance(caps, list)
        return str(caps[-1])

    def flush(self) -> None:
        """Seal and upload now, through the sink's admin API from inside its container (loopback)."""
        self.compose("exec", "-T", "archiver", "archiver", "flush")

    def report(self) -> None:
        with contextlib.suppress(Exception):
            self.compose("ps")
            self.compose("logs", "--no-color", "--tail=40")


@contextlib.contextmanager
def registry(port: int) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1:port with its storage in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="archiver-registry-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(
            f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        with open(STATE / "registry.log", "ab") as log:
            process = subprocess.Popen(["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for("the registry answering", lambda: _get(f"http://127.0.0.1:{port}/v2/") == 200, 30)
            yield f"127.0.0.1:{port}"
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(30)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def send_records(http_port: int, tcp_port: int, tag: str) -> set[str]:
    """Records in over curl (form and JSON), Python's HTTPHandler and TCP JSON lines; their messages."""
    url = f"http://127.0.0.1:{http_port}"
    sent = {f"curl form {tag}", f"curl json {tag}", f"tcp {tag}"}
    subprocess.run(["curl", "-fsS", "-X", "POST", "--data-urlencode", f"msg=curl form {tag}", f"{url}/app"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json",
                    "-d", json.dumps({"message": f"curl json {tag}"}), f"{url}/app"], check=True, stdout=subprocess.DEVNULL)
    log = logging.getLogger(f"docker-test.{tag}")
    log.propagate = False
    handler = logging.handlers.HTTPHandler(f"127.0.0.1:{http_port}", "/app", method="POST")
    log.addHandler(handler)
    try:
        for n in range(3):
            log.warning("httphandler %s %d", tag, n)
            sent.add(f"httphandler {tag} {n}")
    finally:
        log.removeHandler(handler)
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as sock:
        sock.sendall(json.dumps({"message": f"tcp {tag}"}).encode() + b"\n")
    return sent


def read_messages(gateway_port: int, read_cap: str) -> set[str]:
    """Every record's message (or form field ``msg``) in the archive, read from its root read cap."""
    out = subprocess.run([ARCHIVER, "cat", "--json", "--archive", f"tahoe://127.0.0.1:{gateway_port}/{read_cap}"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    messages = set()
    for line in out.splitlines():
        record = json.loads(line)
        messages.add(str(record.get("message") or (record.get("fields") or {}).get("msg")))
    return messages


def wait_read(gateway_port: int, read_cap: str, wanted: set[str]) -> None:
    """The archive holds ``wanted``; the sink publishes its manifest a moment after the upload."""
    seen: set[str] = set()

    def holds() -> bool:
        nonlocal seen
        seen = read_messages(gateway_port, read_cap)
        return wanted <= seen

    try:
        wait_for("the records in the archive", holds, 120)
    except AssertionError:
        raise AssertionError(f"missing from the archive: {sorted(wanted - seen)}") from None


def image_sizes(names: list[str]) -> dict[str, str]:
    return {name: subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", name], capture_output=True,
                                 text=True, check=True).stdout.strip() for name in names}


def main() -> None:
    for tool in ("docker", "docker-compose", "docker-registry", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: `make docker-test` installs it (system-packages.txt, target docker)")
    run_id = uuid.uuid4().hex[:8]
    taken: set[int] = set()
    ports = {name: free_port(taken) for name in ("http", "tcp", "gateway", "registry")}
    with contextlib.ExitStack() as outer:
        with phase("daemon start"):
            docker = outer.enter_context(dockerd.docker_daemon(STATE))
        print(f"daemon: {docker.host}, started here: {docker.started_here}, storage driver {docker.driver} {docker.flags}")
        with phase("base image (debootstrap + import)"):
            images.build_base()
        with phase("wheels"):
            wheels = images.build_wheels()
        with phase("image builds"):
            images.build_images(images.BASE_IMAGE, TAG, wheels)
        sizes = image_sizes([images.BASE_IMAGE, *(f"{name}:{TAG}" for name in images.IMAGES)])
        with registry(ports["registry"]) as address:
            with phase("push to the registry"):
                images.push(address, TAG)
                local = [f"{name}:{TAG}" for name in images.IMAGES]
                images.run("docker", "rmi", "--no-prune", *local, *(f"{address}/{name}" for name in local))
            stack = Stack({"ARCHIVER_REGISTRY": f"{address}/", "ARCHIVER_TAG": TAG, "ARCHIVER_HTTP_PORT": str(ports["http"]),
                           "ARCHIVER_TCP_PORT": str(ports["tcp"]), "ARCHIVER_GATEWAY_PORT": str(ports["gateway"])})
            try:
                run_stack(stack, ports, run_id)
            except BaseException:
                stack.report()
                raise
            finally:
                with phase("down, volumes removed"):
                    stack.compose("down", "--volumes", "--remove-orphans")
                    with contextlib.suppress(subprocess.CalledProcessError):
                        images.run("docker", "rmi", "--no-prune", *(f"{address}/{name}:{TAG}" for name in images.IMAGES))
    print("\nphase times:")
    for name, seconds in timings:
        print(f"  {name:40} {seconds:6.0f} s")
    print(f"storage driver: {docker.driver} {' '.join(docker.flags)}; daemon started here: {docker.started_here}")
    print("image sizes: " + ", ".join(f"{name} {int(size) / 1e6:.0f} MB" for name, size in sizes.items()))
    print("docker-test: all steps passed")


def run_stack(stack: Stack, ports: dict[str, int], run_id: str) -> None:
    with phase("stack up (pulled from the registry)"):
        stack.compose("pull")
        read_cap = stack.up()
    print(f"root read cap from the archiver's log: {read_cap}")
    with phase("records in, read back"):
        sent = send_records(ports["http"], ports["tcp"], f"{run_id}-a")
        stack.flush()
        wait_read(ports["gateway"], read_cap, sent)
    with phase("read with a storage node stopped"):
        stack.compose("stop", "storage3")
        wait_read(ports["gateway"], read_cap, sent)
    with phase("stack down and up again"):
        stack.compose("down")
        again = stack.up()
        assert again == read_cap, f"the root changed across a restart: {read_cap} then {again}"
    with phase("read after the restart, and write more"):
        wait_read(ports["gateway"], read_cap, sent)
        more = send_records(ports["http"], ports["tcp"], f"{run_id}-b")
        stack.flush()
        wait_read(ports["gateway"], read_cap, sent | more)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: the stack, the registry, the daemon


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main()
