"""The running sink: pid lock, sink identity, segment writer, HTTP server, signals, shutdown.

Stop order on SIGTERM/SIGINT: stop accepting, let in-flight requests finish (each acks only
after its durable append), seal every open segment, remove sink.json and the pid file, exit 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .config import Config
from .ingest.http import HttpLimits, create_app, make_runner
from .layout import DataDir
from .manifest import Manifest
from .rotation import RotationPolicy
from .segments import SegmentWriter
from .units import format_ts

log = logging.getLogger("archiver")


class StartupError(RuntimeError):
    """The sink cannot start; the message says why and what to do."""


class PidLock:
    """An flock on ``DATA/sink.pid``: held for the sink's life, released by the kernel on any exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"another archiver (pid {holder}) is serving data dir {self.path.parent}; "
                "stop it first or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


def sink_identity(data_dir: Path, configured: str) -> str:
    """The sink id stored in the manifest; chosen on first start (config, else host + random)."""
    manifest = Manifest(data_dir)
    try:
        stored = manifest.get_meta("sink_id")
        if stored and configured and stored != configured:
            raise StartupError(
                f"data dir {data_dir} belongs to sink {stored!r}, but the config says {configured!r}"
            )
        if stored:
            return stored
        host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "sink"
        chosen = configured or f"{host}.{secrets.token_hex(3)}"
        manifest.set_meta("sink_id", chosen)
        return chosen
    finally:
        manifest.close()


def prepare_data_dir(path: Path) -> DataDir:
    """Create the data dir 0700: it holds every record and (from #4) the grid's write caps."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return DataDir(path)


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)


async def serve(config: Config) -> None:
    """Run the sink until SIGTERM or SIGINT. Raises StartupError when it cannot start."""
    data = prepare_data_dir(config.data_dir.resolve())
    lock = PidLock(data.pid_file)
    lock.acquire()
    try:
        await _serve_locked(config, data)
    finally:
        data.sink_file.unlink(missing_ok=True)
        lock.release()


async def _serve_locked(config: Config, data: DataDir) -> None:
    sink_id = sink_identity(data.root, config.sink_id)
    writer = SegmentWriter(
        data,
        sink_id,
        RotationPolicy(config.segments.max_bytes, config.segments.max_records, config.segments.max_age),
        fsync=config.spool.fsync,
        fsync_interval=config.spool.fsync_interval,
        compression=config.segments.compression,
        compression_level=config.segments.compression_level,
        spool_limit=config.spool.max_bytes,
    )
    await writer.start()
    info: dict[str, Any] = {"pid": os.getpid(), "sink_id": sink_id, "started": format_ts(time.time())}
    limits = HttpLimits(config.server.max_body_bytes, config.server.max_decoded_bytes, config.spool.retry_after)
    runner = make_runner(
        create_app(writer, limits, lambda: info),
        max_line_bytes=config.server.max_line_bytes,
        shutdown_timeout=config.server.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True, backlog=1024)
        try:
            await site.start()
        except OSError as err:
            raise StartupError(
                f"cannot listen on {config.server.host}:{config.server.port}: {err.strerror}"
            ) from None
        host, port = runner.addresses[0][:2]
        info["http"] = f"http://{host}:{port}"
        _write_json_atomically(
            data.sink_file, {**info, "tcp": None, "data_dir": str(data.root)}
        )
        log.info("archiver %s listening on %s (data dir %s)", sink_id, info["http"], data.root)
        await _wait_for_stop_signal()
        log.info("stopping: finishing in-flight requests")
    finally:
        await runner.cleanup()
        log.info("sealing open segments")
        await writer.close()
    log.info("stopped")


async def _wait_for_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
