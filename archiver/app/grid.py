"""A local Tahoe-LAFS grid: one introducer and N storage nodes on 127.0.0.1.

For development, tests and ``make run``. ``DIR/grid.json`` records the layout; each node lives
in ``DIR/<name>`` and runs as ``tahoe run --allow-stdin-close DIR/<name>``, in its own session
so it outlives the command that started it. Nodes are stopped by the PID this module recorded,
never by name; a PID is trusted only while /proc says it is still ``tahoe run`` on that dir.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from archiver.store import tahoe as tahoe_store
from archiver.store.tahoe import TahoeFS

TAHOE_VERSION = "1.20.0"
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral port range (32768 and up)
PID_FILE = "archiver-tahoe.pid"
# Nodes this process started, kept so they can be reaped (and are not reported as leaked).
_children: dict[int, subprocess.Popen[bytes]] = {}


class GridError(RuntimeError):
    """The grid cannot be created, started or reached; the message says what to do."""


def find_tahoe(configured: str | None = None) -> str:
    """The ``tahoe`` executable: config (grid.tahoe), then $ARCHIVER_TAHOE, then PATH, then the
    project's ``.venv-tahoe`` (beside the source tree or in the working directory). A named
    executable that is not there is an error, not a reason to look elsewhere."""
    for origin, named in (("grid.tahoe", configured), ("ARCHIVER_TAHOE", os.environ.get("ARCHIVER_TAHOE"))):
        if named:
            if os.access(named, os.X_OK) and Path(named).is_file():
                return named
            raise GridError(f"{origin} = {named} is not an executable file")
    candidates = [shutil.which("tahoe")]
    for base in (Path(__file__).resolve().parent.parent, Path.cwd()):
        candidates.append(str(base / ".venv-tahoe" / "bin" / "tahoe"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise GridError(
        f"tahoe not found: install tahoe-lafs=={TAHOE_VERSION} (make test does it into .venv-tahoe) "
        "or set grid.tahoe / ARCHIVER_TAHOE"
    )


def free_port(taken: set[int]) -> int:
    """A port below 32768 that nothing listens on now."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise GridError("no free port found below 32768")


@dataclass
class NodeSpec:
    name: str
    tub_port: int
    web_port: int | None = None


@dataclass
class GridSpec:
    needed: int
    happy: int
    total: int
    introducer: NodeSpec
    nodes: list[NodeSpec] = field(default_factory=list)


class LocalGrid:
    """An introducer plus storage nodes under one directory."""

    SPEC_FILE = "grid.json"

    def __init__(self, directory: Path | str, tahoe: str | None = None) -> None:
        self.dir = Path(directory).resolve()
        spec_path = self.dir / self.SPEC_FILE
        if not spec_path.exists():
            raise GridError(f"{self.dir} holds no grid: run `archiver grid create {self.dir}` first")
        raw = orjson.loads(spec_path.read_bytes())
        self.spec = GridSpec(
            raw["needed"], raw["happy"], raw["total"], NodeSpec(**raw["introducer"]),
            [NodeSpec(**node) for node in raw["nodes"]],
        )
        self._configured_tahoe = tahoe
        self._tahoe: str | None = None

    @property
    def tahoe(self) -> str:
        if self._tahoe is None:
            self._tahoe = find_tahoe(self._configured_tahoe)
        return self._tahoe

    @classmethod
    def create(
        cls,
        directory: Path | str,
        *,
        nodes: int = 1,
        needed: int | None = None,
        happy: int | None = None,
        total: int | None = None,
        tahoe: str | None = None,
        reserved_space: str = "50M",
    ) -> "LocalGrid":
        """Create (not start) an introducer and ``nodes`` storage nodes with K-of-N encoding."""
        total = total or nodes
        happy = happy or min(nodes, total)
        needed = needed or max(1, (total + 1) // 2)
        if not 1 <= needed <= happy <= total:
            raise GridError(f"need 1 <= needed ({needed}) <= happy ({happy}) <= total ({total})")
        if happy > nodes:
            raise GridError(f"happy ({happy}) > nodes ({nodes}): every upload would fail")
        root = Path(directory).resolve()
        if (root / cls.SPEC_FILE).exists():
            raise GridError(f"{root} already holds a grid")
        executable = find_tahoe(tahoe)
        root.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        intro = NodeSpec("introducer", free_port(taken))
        _run_tahoe(
            executable, "create-introducer", f"--port=tcp:{intro.tub_port}:interface=127.0.0.1",
            f"--location=tcp:127.0.0.1:{intro.tub_port}", str(root / intro.name),
        )
        specs = []
        for index in range(nodes):
            node = NodeSpec(f"storage{index}", free_port(taken), free_port(taken))
            _run_tahoe(
                executable, "create-node", f"--port=tcp:{node.tub_port}:interface=127.0.0.1",
                f"--location=tcp:127.0.0.1:{node.tub_port}", f"--webport=tcp:{node.web_port}:interface=127.0.0.1",
                f"--nickname={node.name}", f"--shares-needed={needed}", f"--shares-happy={happy}",
                f"--shares-total={total}", str(root / node.name),
            )
            config = root / node.name / "tahoe.cfg"
            config.write_text(config.read_text().replace("reserved_space = 1G", f"reserved_space = {reserved_space}"))
            specs.append(node)
        spec = GridSpec(needed, happy, total, intro, specs)
        (root / cls.SPEC_FILE).write_bytes(orjson.dumps(asdict(spec), option=orjson.OPT_INDENT_2))
        return cls(root, executable)

    # -- processes -------------------------------------------------------------------------

    def node_dir(self, name: str) -> Path:
        return self.dir / name

    def pid(self, name: str) -> int | None:
        """The PID of the node's ``tahoe run`` if it is running, else None."""
        try:
            pid = int((self.node_dir(name) / PID_FILE).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        if str(self.node_dir(name)).encode() in cmdline and b"run" in cmdline:
            return pid
        return None

    def start(self, timeout: float = 90.0) -> None:
        """Start whatever is not running, then wait until the gateway sees >= happy servers."""
        deadline = time.monotonic() + timeout
        self._start_node(self.spec.introducer.name)
        furl_file = self.node_dir("introducer") / "private" / "introducer.furl"
        _wait(lambda: furl_file.exists(), deadline, "the introducer did not write its furl", lambda: self._log_tail("introducer"))
        furl = furl_file.read_text().strip()
        for node in self.spec.nodes:
            introducers = self.node_dir(node.name) / "private" / "introducers.yaml"
            wanted = f"introducers:\n  default:\n    furl: {furl}\n"
            if not introducers.exists() or introducers.read_text() != wanted:
                introducers.write_text(wanted)
            self._start_node(node.name)
        self.wait_ready(deadline - time.monotonic())

    def wait_ready(self, timeout: float = 60.0, servers: int | None = None) -> None:
        """Wait until the gateway sees ``servers`` (default shares.happy) storage servers."""
        wanted = self.spec.happy if servers is None else servers
        deadline = time.monotonic() + timeout
        _wait(
            lambda: (self.servers_connected() or 0) >= wanted, deadline,
            f"the gateway does not see {wanted} storage server(s) connected", lambda: self._log_tail(self.gateway_node),
        )

    def _start_node(self, name: str) -> None:
        if self.pid(name) is not None:
            return
        node_dir = self.node_dir(name)
        with open(node_dir / "run.log", "ab") as log:
            process = subprocess.Popen(
                [self.tahoe, "run", "--allow-stdin-close", str(node_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _children[process.pid] = process
        (node_dir / PID_FILE).write_text(str(process.pid))

    def start_node(self, name: str, timeout: float = 60.0) -> None:
        self._start_node(name)
        self.wait_ready(timeout, servers=self.running_storage_nodes())

    def stop_node(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM by recorded PID, SIGKILL if it does not exit in time."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        child = _children.pop(pid, None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (child.poll() is not None) if child else self.pid(name) is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            if child:
                child.wait(10)
        (self.node_dir(name) / PID_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        for node in [*self.spec.nodes, self.spec.introducer]:
            self.stop_node(node.name)

    def running_storage_nodes(self) -> int:
        return sum(1 for node in self.spec.nodes if self.pid(node.name) is not None)

    # -- the gateway -----------------------------------------------------------------------

    @property
    def gateway_node(self) -> str:
        return self.spec.nodes[0].name

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.nodes[0].web_port}"

    def servers_connected(self) -> int | None:
        return tahoe_store.servers_connected(self.gateway_url)

    def create_root(self) -> TahoeFS:
        """A new empty directory on the grid, as a TahoeFS rooted at its write cap."""
        return tahoe_store.create_root(self.gateway_url)

    def add_alias(self, alias: str, cap: str) -> None:
        """Make ``tahoe -d DIR/<gateway> ls ALIAS:`` show the directory ``cap``."""
        aliases = self.node_dir(self.gateway_node) / "private" / "aliases"
        lines = aliases.read_text().splitlines() if aliases.exists() else []
        lines = [line for line in lines if line.split(":", 1)[0].strip() != alias]
        lines.append(f"{alias}: {cap}")
        aliases.write_text("\n".join(lines) + "\n")
        os.chmod(aliases, 0o600)

    def status(self) -> dict[str, Any]:
        """Nodes, PIDs, ports and the servers the gateway sees; no capabilities."""
        nodes = [
            {"name": n.name, "pid": self.pid(n.name), "tub_port": n.tub_port, "web_port": n.web_port}
            for n in [self.spec.introducer, *self.spec.nodes]
        ]
        return {
            "dir": str(self.dir),
            "encoding": {"needed": self.spec.needed, "happy": self.spec.happy, "total": self.spec.total},
            "gateway": self.gateway_url,
            "servers_connected": self.servers_connected(),
            "nodes": nodes,
        }

    def _log_tail(self, name: str) -> str:
        log = self.node_dir(name) / "run.log"
        return log.read_text(errors="replace")[-1500:] if log.exists() else ""


def _run_tahoe(tahoe: str, *args: str) -> None:
    result = subprocess.run([tahoe, *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise GridError(f"tahoe {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")


def _wait(ready: Callable[[], bool], deadline: float, what: str, log: Callable[[], str]) -> None:
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise GridError(f"{what} in time; last log lines:\n{log()}")
