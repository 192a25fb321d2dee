"""Shared fixtures: real sink processes started on free ports and stopped by their own PID, and
the same HTTP application served inside the test process (``local_sink``) where no process
boundary matters."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Iterator, Mapping, TypeVar

import orjson
import psutil
import pytest
import requests

from archiver.app.config import Config, load_config
from archiver.app.metrics import SinkMetrics
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest
from archiver.format.record import Context, encode_record
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import IngestCounters
from archiver.ingest.decode.jsonbody import json_record
from archiver.ingest.decoder import Decoder
from archiver.ingest.http import HttpLimits, create_app, drain, make_runner
from archiver.ingest.listener import BoundedSite
from archiver.read.reader import Filters, data_dir_archive, existing_data_dir
from archiver.ship.publisher import PERIOD_SECONDS
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.rotation import RotationPolicy
from archiver.spool.writer import SegmentWriter
from archiver.store import Store
from archiver.web.site import PREFIX, create_site

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

if TYPE_CHECKING:
    from archiver.app.grid import LocalGrid


@dataclass
class Sink:
    """A real `archiver serve` process on a data dir."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, timeout: float = 60.0) -> "Sink":
        with open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "archiver", "serve", "--data-dir", str(self.data_dir), "--port", "0", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        sink_file = self.data_dir / "sink.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sink exited with {self.proc.returncode}: {self.log_text()}")
            try:
                info = orjson.loads(sink_file.read_bytes())
            except (FileNotFoundError, orjson.JSONDecodeError):
                info = {}
            if info.get("pid") == self.proc.pid:  # not a stale file left by a killed sink
                self.url = info["http"]
                return self
            time.sleep(0.05)
        raise TimeoutError(f"sink did not start: {self.log_text()}")

    def log_text(self) -> str:
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful stop that seals every open segment."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def post(self, path: str, data: bytes | str, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, data=data, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[list[Sink]]:
    """Every sink a test starts is stopped (then killed) by PID at teardown."""
    started: list[Sink] = []
    yield started
    for sink in started:
        if sink.proc is not None and sink.proc.poll() is None:
            try:
                sink.stop(timeout=30)
            except subprocess.TimeoutExpired:
                sink.kill()


@pytest.fixture
def start_sink(sinks: list[Sink], tmp_path: Path):  # type: ignore[no-untyped-def]
    def start(data_dir: Path | None = None, *args: str, env: dict[str, str] | None = None) -> Sink:
        sink = Sink(data_dir or tmp_path / "data", list(args), env or {})
        sinks.append(sink)
        return sink.start()

    return start


class LocalSink:
    """The sink's HTTP side as `archiver serve` builds it from a config (SegmentWriter, Decoder,
    Authenticator, SinkMetrics, the archive browser, create_app and make_runner), served on a real 127.0.0.1 socket by an event
    loop on a thread of the test process, so blocking clients (requests, HTTPHandler, raw
    sockets, curl) talk to it as to a process, without the start-up of one. Uploads, pid
    files, signals and the CLI are not part of it: those tests use ``start_sink``."""

    SINK_ID = "local"

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.data_dir = data_dir
        self.config = config
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-sink", daemon=True)
        self._stopped = False

    def start(self) -> "LocalSink":
        self._thread.start()
        self._run(self._start())
        return self

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> None:
        config = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SegmentWriter(
            DataDir(self.data_dir), self.SINK_ID,
            RotationPolicy(config.segments.max_bytes, config.segments.max_records, config.segments.max_age),
            fsync=config.spool.fsync, fsync_interval=config.spool.fsync_interval,
            compression=config.segments.compression, compression_level=config.segments.compression_level,
            spool_limit=config.spool.max_bytes,
        )
        await self.writer.start()
        self.decoder = Decoder(config.server.decode_workers)
        await self.decoder.start()
        self.counters = IngestCounters()
        self.metrics = SinkMetrics(DataDir(self.data_dir), self.writer, self.counters, self.decoder)
        self.app = create_app(
            self.writer, HttpLimits(config.server.max_body_bytes, config.server.max_decoded_bytes, config.spool.retry_after),
            lambda: {"sink_id": self.SINK_ID}, metrics=self.metrics.scrape, admin_token=config.admin.token,
            admin_trust_loopback=config.admin.trust_loopback,
            auth=Authenticator(config.auth.tokens, config.auth.basic), decoder=self.decoder, counters=self.counters,
            site=(PREFIX, create_site(data_dir_archive(DataDir(self.data_dir)))),
        )
        self._runner = make_runner(self.app, max_line_bytes=config.server.max_line_bytes)
        await self._runner.setup()
        self._site = BoundedSite(self._runner, "127.0.0.1", 0, max_connections=config.server.max_connections,
                                 max_line_bytes=config.server.max_line_bytes)
        await self._site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        """What SIGTERM does to the HTTP side: stop listening, finish requests in progress, seal
        every open segment (a seal that fails fails the test)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            failures = self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
        assert not failures, [failure.describe() for failure in failures]

    async def _stop(self) -> list[Any]:
        await self._site.stop()
        await drain(self.app, self.config.server.shutdown_timeout)
        await self._runner.cleanup()
        await self.decoder.close()
        return await self.writer.close()

    def post(self, path: str, data: bytes | str, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, data=data, timeout=30, **kwargs)  # type: ignore[arg-type]


StartLocal = Callable[..., LocalSink]


@pytest.fixture
def local_sink(tmp_path: Path) -> Iterator[StartLocal]:
    """``local_sink(env={...})`` starts a LocalSink on TMP/data configured as `archiver serve`
    would be by those ``ARCHIVER_*`` variables; each is stopped at teardown."""
    started: list[LocalSink] = []

    def start(env: Mapping[str, str] | None = None, data_dir: Path | None = None) -> LocalSink:
        sink = LocalSink(data_dir or tmp_path / "data", load_config(env=env or {}))
        started.append(sink)
        return sink.start()

    yield start
    for sink in started:
        sink.stop()


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 120) -> None:
    """Poll until ``predicate`` holds: a hang detector with a deadline, not a speed test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def send_tcp(host: str, port: int, payload: bytes, piece: int = 0) -> None:
    """Send ``payload`` (in pieces of ``piece`` bytes, when given), end the stream, and wait
    for the sink's clean close: it comes only once every line is durable and counted."""
    step = piece or max(len(payload), 1)
    with socket.create_connection((host, port), timeout=60) as conn:
        for start in range(0, len(payload), step):
            conn.sendall(payload[start : start + step])
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass


def peers_of(pid: int, port: int) -> list[tuple[str, int]]:
    """The remote addresses of the connections process ``pid`` holds on local ``port``."""
    return [c.raddr for c in psutil.Process(pid).net_connections("tcp") if c.laddr[1] == port and c.raddr]


def peak_rss_growth(action: Callable[[], None]) -> int:
    """How far this process's RSS rose above its starting point while ``action`` ran."""
    process = psutil.Process()
    start = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak - start


def low_port() -> int:
    """A free 127.0.0.1 port below 32768, outside the kernel's range for outgoing connections."""
    for port in random.sample(range(20000, 32768), 500):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def age_open_period(data_dir: Path) -> None:
    """As if the sink's open published period had begun an hour ago: its next publish closes it
    into a chain file, as the publisher does by the hour (or at PERIOD_MAX segments)."""
    with closing(Manifest(data_dir)) as manifest:
        manifest.set_meta("period_started", repr(time.time() - PERIOD_SECONDS))


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon the test started, then SIGKILL it if it has not stopped in 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def archiver_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver {' '.join(args)} failed: {result.stderr.decode()}")
    return result


def cat_json(data_dir: Path, *args: str) -> list[dict]:
    """Every record `archiver cat --json` gives back."""
    out = archiver_cli("cat", "--json", "--data-dir", str(data_dir), *args).stdout
    return [orjson.loads(line) for line in out.splitlines()]


def read_json(data_dir: Path, stream: str | None = None) -> list[dict]:
    """What ``cat_json(data_dir[, "--stream", stream])`` gives, read by the same reader in this
    process (a CLI process costs more than most in-process tests)."""
    with data_dir_archive(existing_data_dir(data_dir)) as archive:
        return [orjson.loads(line) for line in b"".join(archive.json_chunks(Filters(stream))).splitlines()]


# -- real Tahoe grids, one per shape for the whole session ------------------------------------


def _grid(tmp_path_factory: pytest.TempPathFactory, name: str, **shape: int) -> Iterator["LocalGrid"]:
    from archiver.app.grid import GridError, LocalGrid

    try:
        grid = LocalGrid.create(tmp_path_factory.mktemp(name), **shape)
    except GridError as err:  # never a skip: a missing tahoe fails the run (make test installs it)
        pytest.fail(f"a real Tahoe grid is required: {err}")
    try:
        grid.start()
        yield grid
    finally:
        grid.stop()


@pytest.fixture(scope="session")
def grid1(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalGrid"]:
    """One storage node, 1-of-1."""
    yield from _grid(tmp_path_factory, "grid1", nodes=1, needed=1, happy=1, total=1)


@pytest.fixture(scope="session")
def grid3(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalGrid"]:
    """Three storage nodes, 2-of-3, happy 3."""
    yield from _grid(tmp_path_factory, "grid3", nodes=3, needed=2, happy=3, total=3)


def named_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A fresh logger of its own, not propagating, at DEBUG, with ``handler``: one per test."""
    logger = logging.getLogger(f"{name}.{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (openssl), with the key
    usages Python 3.13's strict verification (VERIFY_X509_STRICT) requires."""
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=archiver test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "server.key"),
        "-out", str(d / "server.csr"))
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.cnf"), "-out", str(d / "server.pem"))
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def seal(data_dir: Path, streams: dict[str, int]) -> None:
    """Write and seal records with a real SegmentWriter: {stream: record count}."""
    data_dir.mkdir(exist_ok=True)

    async def main() -> None:
        writer = SegmentWriter(DataDir(data_dir), "sinkA", RotationPolicy(10**9, 10**9, 3600))
        await writer.start()
        for stream, count in streams.items():
            for n in range(count):
                record = json_record({"message": f"{stream}-{n}", "created": 1_795_467_684 + n}, Context(stream, None, 0))
                writer.write(stream, encode_record(record), 1)
        await writer.commit()
        await writer.close()

    asyncio.run(main())


def make_uploader(tmp_path: Path, store: Store, **settings: float) -> Uploader:
    """An Uploader of sink "sinkA" over TMP/data, into ``store``."""
    with closing(Manifest(tmp_path / "data")) as manifest:
        manifest.set_meta("sink_id", "sinkA")
    return Uploader(DataDir(tmp_path / "data"), "sinkA", lambda: store, UploadSettings(**settings))


def rows(tmp_path: Path) -> list:
    """The manifest's segments of TMP/data."""
    with closing(Manifest(tmp_path / "data")) as manifest:
        return list(manifest.segments())
