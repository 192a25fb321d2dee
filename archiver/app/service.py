"""The running sink: pid lock, sink identity, segment writer, HTTP server, signals, shutdown.

Stop order on SIGTERM/SIGINT, the start order reversed: stop accepting, let in-flight TCP lines
and HTTP requests finish (each acks only after its durable append), seal every open segment,
let the upload jobs finish and publish, stop the embedded grid, remove sink.json and the pid
file. Exit 0 only when every step succeeded; a segment left unsealed is named, with its path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import resource
import secrets
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
from aiohttp import web

from archiver.app.config import Config
from archiver.app.errors import ServiceError, StartupError
from archiver.app.grid import GridError, LocalGrid
from archiver.app.group import Group
from archiver.app.heap import TRIM_PERIOD, trim
from archiver.app.metrics import SinkMetrics, local_only_seconds, local_only_since
from archiver.common.failpoints import failpoint
from archiver.common.redaction import redact
from archiver.common.units import format_ts
from archiver.format.layout import WORKERS_MAX, DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.format.store_layout import DIR_ENTRIES_MAX
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import IngestCounters
from archiver.ingest.decoder import Decoder
from archiver.ingest.http import HttpLimits, create_app, drain, make_runner
from archiver.ingest.listener import BoundedSite
from archiver.ingest.rules import RuleSet
from archiver.ingest.tcp import TcpSettings, TcpSource
from archiver.read.reader import data_dir_archive
from archiver.ship.leases import LeaseRenewer, LeaseSettings, lease_summary
from archiver.ship.readback import LAST_RUN, ReadBack
from archiver.ship.scheduler import Jobs
from archiver.ship.uploader import Uploader, UploadSettings
from archiver.spool.rotation import RotationPolicy
from archiver.spool.sealer import FailedSeal
from archiver.spool.imports import ImportSpool
from archiver.spool.writer import SegmentWriter
from archiver.store import GridStatus, Store, Stored, names_root, open_store, public_url
from archiver.store.base import LeaseRenewal
from archiver.web.site import PREFIX, create_site

log = logging.getLogger("archiver")
EMBEDDED = "embedded"
# Descriptors the sink needs besides its HTTP connections: segments, manifest, grid, TCP clients.
FILES_BESIDES_CONNECTIONS = 256


class UnsealedSegments(ServiceError):
    """Segments that could not be sealed at stop. Their records are durable in the open spool
    and are sealed at the next start, but no reader sees them until then."""

    def __init__(self, failures: list[FailedSeal]) -> None:
        self.failures = failures
        where = "; ".join(f"{f.segment.stream}/{f.segment.id} in {f.segment.path} ({f.error})" for f in failures)
        super().__init__(
            f"{len(failures)} segment(s) could not be sealed at stop; their records are durable and are "
            f"sealed at the next start, but no reader sees them until then: {where}"
        )


class PidLock:
    """An flock on ``DATA/sink.pid``: held for the sink's life, released by the kernel on any exit.
    Workers inherit its file (``fileno``), so the data dir stays locked until the last process
    of the sink has exited: a new sink never recovers the spool of a worker still answering."""

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
                f"another archiver (pid {holder}, or one of its workers) is serving data dir {self.path.parent}; "
                "stop it first or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

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
    """Create the data dir 0700: it holds every record and the grid's write caps."""
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
    raise_open_files_limit(config.server.max_connections)
    lock = PidLock(data.pid_file)
    lock.acquire()
    try:
        await _serve_locked(config, data, lock)
    finally:
        data.sink_file.unlink(missing_ok=True)
        lock.release()


def raise_open_files_limit(max_connections: int) -> None:
    """Connections, segments, the manifest and the grid's sockets all need descriptors; many
    systems start processes with a soft limit of 1024 and allow far more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, max_connections + FILES_BESIDES_CONNECTIONS)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft != resource.RLIM_INFINITY and soft < max_connections + FILES_BESIDES_CONNECTIONS:
        log.warning("server.max_connections = %d leaves too few of the %d open files allowed (ulimit -n)",
                    max_connections, soft)


async def _serve_locked(config: Config, data: DataDir, lock: PidLock) -> None:
    sink_id = sink_identity(data.root, config.sink_id)
    loop = asyncio.get_running_loop()
    with stop_signals() as stop:
        # Every component that starts pushes its stop; they unwind in reverse order whatever
        # fails, so a failing step (the HTTP runner's cleanup, the TCP drain) never skips sealing.
        async with contextlib.AsyncExitStack() as lifecycle:
            grid = None
            if config.store.url == EMBEDDED:
                grid = await loop.run_in_executor(None, start_embedded_grid, config, data)
                lifecycle.push_async_callback(loop.run_in_executor, None, grid.stop)  # lives and dies with the sink
            await _run(config, data, sink_id, grid, stop, lifecycle, lock)
    log.info("stopped")


async def _run(
    config: Config, data: DataDir, sink_id: str, grid: LocalGrid | None, stop: asyncio.Event,
    lifecycle: contextlib.AsyncExitStack, lock: PidLock,
) -> None:
    """Start every component, registering its stop on ``lifecycle``, and wait for ``stop``.
    ``lock``: the data dir's, which workers inherit."""
    loop = asyncio.get_running_loop()
    store_url = grid_store_url(grid) if grid else config.store.url
    uploader = jobs = leases = None
    group = Group(config, data, stop, lock.fileno()) if config.server.workers > 1 else None
    writer = make_writer(config, data, sink_id)
    if store_url:
        _refuse_second_root(store_url, data)
        if config.segments.max_age < 3600 / DIR_ENTRIES_MAX:
            log.warning("segments.max_age is %.3g s: a stream's hour directory in the store may pass %d entries, "
                        "which Tahoe rewrites whole on every change (docs/format.md, Small directories)",
                        config.segments.max_age, DIR_ENTRIES_MAX)
        release = group.release if group else lambda segment, size: writer.release(size)
        uploader = Uploader(
            data, sink_id, lambda: open_rooted_store(store_url, data, grid), _upload_settings(config),
            on_pruned=lambda segment, size: _call_soon(loop, release, segment, size),
        )
        lifecycle.callback(uploader.close)
        leases = LeaseRenewer(
            data, sink_id, uploader.store,
            LeaseSettings(config.retention.lease_renew_every, config.retention.lease_check_interval),
            stopping=uploader.stopping,
        )
        jobs = Jobs(
            uploader, upload_interval=config.uploader.interval, publish_delay=config.uploader.publish_delay,
            verify_interval=config.uploader.verify_interval, prune_interval=config.uploader.prune_interval,
            leases=leases, read_back=_read_back(config, data, uploader),
        )
        lifecycle.push_async_callback(loop.run_in_executor, None, jobs.shutdown)  # after sealing: publishes it
        writer.on_sealed = jobs.wake_upload
    await writer.start()
    if group is not None:
        await group.open(writer)
        lifecycle.push_async_exit(group.stopped)  # after this process has sealed; the workers seal meanwhile
    lifecycle.push_async_callback(seal_everything, writer)
    imports = ImportSpool(writer, data.root)  # archiver import's batches, on this loop
    lifecycle.callback(imports.close)
    info: dict[str, Any] = {"pid": os.getpid(), "sink_id": sink_id, "started": format_ts(time.time())}

    async def flush() -> dict[str, Any]:
        failed = (await group.flush_workers() if group else []) + [seal.describe() for seal in await writer.flush()]
        if uploader is None:
            return {"uploaded": 0, "failed": 0, "backlog": 0, "store": None, "seal_failed": failed}
        result: dict[str, Any] = await loop.run_in_executor(None, uploader.upload_due, True)
        if uploader.unpublished:  # also what a scheduled run uploaded just before: flush means "findable now"
            try:
                await loop.run_in_executor(None, uploader.publish)
            except Exception as err:  # noqa: BLE001 - reported, retried by the publish job
                uploader.last_error = redact(f"publish: {type(err).__name__}: {err}")
        result["unpublished"] = uploader.unpublished
        result["seal_failed"] = failed
        return result

    decoder, counters, rules = await start_decoding(config, lifecycle)
    metrics = SinkMetrics(data, writer, counters, decoder, uploader=uploader, jobs=jobs,
                          shares_happy=config.store.shares_happy, others=group.others if group else None)

    def status() -> dict[str, Any]:
        return sink_status(info, data, uploader, store_url, leases)

    if group is not None:
        group.serve(status, flush, metrics, imports)
    app = ingest_app(config, data, sink_id, writer, decoder, counters, rules, lifecycle, info=status, flush=flush,
                     metrics=metrics.scrape, imports=imports, figures=group.figures if group else None,
                     durable=group.durable if group else None)
    info.update(await listen(config, app, writer, decoder, counters, rules, lifecycle))
    if group is not None:
        lifecycle.callback(group.signal)  # first of all: the workers drain and seal alongside this process
        info["worker_pids"] = await group.spawn(sink_id, info)
    _write_json_atomically(data.sink_file, {"tcp": None, **info, "data_dir": str(data.root)})
    if jobs is not None:
        jobs.start()
    log.info("archiver %s listening on %s (data dir %s)", sink_id, info["http"], data.root)
    if uploader is not None:
        await loop.run_in_executor(None, _open_quietly, uploader)  # creates the root now, to show its read cap
        if grid is not None:
            _announce_embedded(grid, info["http"], data)
        else:
            _announce_root(data)  # a root not made yet (store down) shows in `archiver status` later
    trimming: asyncio.Task[None] = asyncio.create_task(_trim_heap())
    lifecycle.callback(trimming.cancel)
    await stop.wait()
    log.info("stopping: finishing in-flight requests")


def make_writer(
    config: Config, data: DataDir, sink_id: str, add_row: Callable[[SegmentRow], None] | None = None,
    spool_limit: int | None = None,
) -> SegmentWriter:
    """The segment writer of one worker (``data.worker``): with several, each takes its own
    sequence numbers and a share of spool.max_bytes (``spool_limit``; an equal one until the
    primary has counted the spool: group.spool_shares)."""
    workers = config.server.workers
    return SegmentWriter(
        data,
        sink_id,
        RotationPolicy(config.segments.max_bytes, config.segments.max_records, config.segments.max_age),
        fsync=config.spool.fsync,
        fsync_interval=config.spool.fsync_interval,
        compression=config.segments.compression,
        compression_level=config.segments.compression_level,
        spool_limit=config.spool.max_bytes // workers if spool_limit is None else spool_limit,
        seq_step=1 if workers == 1 else WORKERS_MAX,
        add_row=add_row,
    )


async def start_decoding(
    config: Config, lifecycle: contextlib.AsyncExitStack,
) -> tuple[Decoder, IngestCounters, RuleSet]:
    """The decoder (its worker processes), counters shared by the HTTP and TCP sources, and the rules."""
    decoder = Decoder(config.server.decode_workers)
    await decoder.start()
    lifecycle.push_async_callback(decoder.close)
    return decoder, IngestCounters(), RuleSet(config.rules)


def ingest_app(
    config: Config, data: DataDir, sink_id: str, writer: SegmentWriter, decoder: Decoder, counters: IngestCounters,
    rules: RuleSet, lifecycle: contextlib.AsyncExitStack, **served: Any,
) -> web.Application:
    """The HTTP application of one worker, with the archive browser; ``served`` are the routes
    that differ between the primary and the other workers (http.create_app's status, flush,
    metrics, imports and figures)."""
    archive = data_dir_archive(DataDir(data.root))  # the browser's, read-only like any reader's
    lifecycle.callback(archive.close)
    limits = HttpLimits(config.server.max_body_bytes, config.server.max_decoded_bytes, config.spool.retry_after)
    return create_app(
        writer, limits, admin_token=config.admin.token, admin_trust_loopback=config.admin.trust_loopback,
        auth=Authenticator(config.auth.tokens, config.auth.basic), decoder=decoder, counters=counters, rules=rules,
        site=(PREFIX, create_site(archive, title=sink_id)), **served,
    )


async def listen(
    config: Config, app: web.Application, writer: SegmentWriter, decoder: Decoder, counters: IngestCounters,
    rules: RuleSet, lifecycle: contextlib.AsyncExitStack,
) -> dict[str, str]:
    """Serve ``app`` on server.host:port, and TCP lines when enabled, registering their drains;
    the addresses as sink.json shows them. With several workers every one listens on the same
    ports (SO_REUSEPORT)."""
    reuse_port = config.server.workers > 1
    addresses = {}
    runner = make_runner(app, max_line_bytes=config.server.max_line_bytes)
    await runner.setup()
    lifecycle.push_async_callback(_cleanup_http, runner)
    tls = _tls_context(config)
    site = BoundedSite(runner, config.server.host, config.server.port,
                       max_connections=config.server.max_connections, max_line_bytes=config.server.max_line_bytes,
                       ssl_context=tls, reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as err:
        raise StartupError(f"cannot listen on {config.server.host}:{config.server.port}: {err.strerror}") from None
    lifecycle.push_async_callback(_drain_http, site, app, config.server.shutdown_timeout)
    host, port = runner.addresses[0][:2]
    addresses["http"] = f"{'https' if tls else 'http'}://{host}:{port}"
    if config.tcp.enabled:
        tcp = TcpSource(writer, TcpSettings(config.tcp.stream, config.tcp.stream_field, config.tcp.max_line_bytes), decoder,
                        counters, rules)
        try:
            tcp_host, tcp_port = await tcp.start(config.tcp.host, config.tcp.port, reuse_port=reuse_port)
        except OSError as err:
            raise StartupError(f"cannot listen on tcp {config.tcp.host}:{config.tcp.port}: {err.strerror}") from None
        lifecycle.push_async_callback(tcp.close, config.server.shutdown_timeout)
        addresses["tcp"] = f"tcp://{tcp_host}:{tcp_port}"
        log.info("tcp JSON lines on %s", addresses["tcp"])
    return addresses


async def _drain_http(site: BoundedSite, app: Any, timeout: float) -> None:
    """Stop accepting, then let requests in progress finish (each acks after its durable append)."""
    await site.stop()
    if not await drain(app, timeout):
        log.warning("requests still in progress after server.shutdown_timeout: cancelling them")


async def _cleanup_http(runner: Any) -> None:
    failpoint("http-cleanup")
    await runner.cleanup()


async def seal_everything(writer: SegmentWriter) -> None:
    log.info("sealing open segments")
    failures = await writer.close()
    if failures:
        raise UnsealedSegments(failures)


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise StartupError(f"cannot load server.tls_cert/tls_key: {err}") from None
    return context


def _open_quietly(uploader: Uploader) -> None:
    try:
        uploader.store()
    except Exception as err:  # noqa: BLE001 - the upload job retries and reports it
        log.warning("the store is not reachable yet: %s", redact(str(err)))


def _call_soon(loop: asyncio.AbstractEventLoop, func: Any, *args: Any) -> None:
    loop.call_soon_threadsafe(func, *args)


def _upload_settings(config: Config) -> UploadSettings:
    up = config.uploader
    return UploadSettings(
        interval=up.interval, backoff_base=up.backoff_base, backoff_max=up.backoff_max,
        keep_local=up.keep_local, shares_happy=config.store.shares_happy, repair=up.repair,
        freeze=up.freeze, freeze_after=up.freeze_after,
    )


def start_embedded_grid(config: Config, data: DataDir) -> LocalGrid:
    """The one-node grid under DATA/grid: created on first start, reused after."""
    grid_dir = data.root / "grid"
    tahoe = config.grid.tahoe or None
    try:
        if (grid_dir / LocalGrid.SPEC_FILE).exists():
            grid = LocalGrid(grid_dir, tahoe)
        else:
            log.info("creating the embedded Tahoe grid in %s", grid_dir)
            grid = LocalGrid.create(grid_dir, nodes=1, needed=1, happy=1, total=1, tahoe=tahoe)
        grid.start()
    except GridError as err:
        raise StartupError(f"the embedded grid cannot start: {err}") from None
    return grid


def grid_store_url(grid: LocalGrid) -> str:
    return "tahoe://" + grid.gateway_url.split("://", 1)[1]


def _refuse_second_root(url: str, data: DataDir) -> None:
    """A data dir whose root is known only by its read cap (a manifest rebuilt from it) given
    ``tahoe://HOST:PORT`` alone would start a second, unrelated root: refused at start."""
    if names_root(url):
        return
    manifest = Manifest(data.root)
    try:
        read_only = manifest.get_meta("root_read_cap") and not manifest.get_meta("root_write_cap")
    finally:
        manifest.close()
    if read_only:
        raise StartupError(
            "this data dir's archive root is known only by its read cap (a manifest rebuilt from it); "
            "give the root's write cap in store.url (tahoe://HOST:PORT/URI:DIR2:...) to add to it"
        )


def open_rooted_store(url: str, data: DataDir, grid: LocalGrid | None = None) -> Store:
    """The store at ``url``. A URL that names no root (``tahoe://HOST:PORT``) gets one on
    first use; the root's caps are kept in the manifest (root_write_cap, root_read_cap)."""
    manifest = Manifest(data.root)

    def keep(root: Stored) -> None:
        if root.write_cap:
            manifest.set_meta("root_write_cap", root.write_cap)
            if grid is not None:
                grid.add_alias("archive", root.write_cap)
        if root.read_cap:
            manifest.set_meta("root_read_cap", root.read_cap)

    try:
        store = open_store(url, root_cap=manifest.get_meta("root_write_cap"), make_root=True, on_root=keep)
        manifest.set_meta("store_url", store.location or url)
        return store
    finally:
        manifest.close()


def _read_back(config: Config, data: DataDir, uploader: Uploader) -> ReadBack | None:
    """The daily read back of one part of the archive; its problems show as the last error."""
    if config.uploader.read_back_days <= 0:
        return None
    return ReadBack(
        data, uploader.store, config.uploader.read_back_days, shares_happy=config.store.shares_happy,
        on_problem=lambda message: setattr(uploader, "last_error", message), stopping=uploader.stopping,
    )


def sink_status(
    info: dict[str, Any], data: DataDir, uploader: Uploader | None, store_url: str, leases: LeaseRenewer | None = None,
) -> dict[str, Any]:
    """What /_status and `archiver status` show beyond the writer's own figures. No write caps.
    ``leases`` is null until the store is open, and for stores that keep no leases."""
    manifest = Manifest(data.root, read_only=True)
    try:
        lease_status = None
        if leases is not None and uploader is not None and isinstance(uploader.opened, LeaseRenewal):
            lease_status = lease_summary(leases.targets(manifest), leases.settings.every, time.time())
        events = manifest.last_event()
        store: dict[str, Any] = {"url": public_url(store_url), "root_read_cap": manifest.get_meta("root_read_cap")}
        status = {
            **info,
            "streams": manifest.streams(),
            "segments": manifest.counts(),
            "backlog_bytes": manifest.backlog_bytes(),
            "last_upload": events["last_upload"],
            "last_error": (uploader.last_error if uploader else None) or events["last_error"],
            "local_only_oldest_seconds": round(local_only_seconds(local_only_since(data, manifest), time.time()), 3),
            "leases": lease_status,
            "read_back": orjson.loads(manifest.get_meta(LAST_RUN) or "null"),
        }
    finally:
        manifest.close()
    connected = None
    if uploader is not None and uploader.opened is not None:
        opened = uploader.opened
        connected = opened.servers_connected() if isinstance(opened, GridStatus) else None
    store["servers_connected"] = connected
    status["store"] = store
    return status


def _root_read_cap(data: DataDir) -> str | None:
    manifest = Manifest(data.root, read_only=True)
    try:
        return manifest.get_meta("root_read_cap")
    finally:
        manifest.close()


def _announce_root(data: DataDir) -> None:
    """The read cap a reader on another host needs, in the log of a sink run by a supervisor
    (systemd, a container), where its operator looks first. Stores without caps have none."""
    read_cap = _root_read_cap(data)
    if read_cap:
        log.info("root read cap: %s", read_cap)


def _announce_embedded(grid: LocalGrid, http: str, data: DataDir) -> None:
    read_cap = _root_read_cap(data)
    print(
        f"""
archiver is serving on {http}, uploading to the embedded Tahoe grid.
  grid web UI:    {grid.gateway_url}
  root read cap:  {read_cap or '(created with the first upload)'}
  send a record:  curl -X POST -d abc=def {http}/app
  from Python:    logging.handlers.HTTPHandler("{http.split('://', 1)[1]}", "/app", method="POST")
  read it back:   .venv/bin/archiver cat --data-dir {data.root} --include-open
""",
        flush=True,
    )


async def _trim_heap() -> None:
    """Every TRIM_PERIOD, give the heap's free pages back (see archiver/app/heap.py), on a worker
    thread: ctypes lets go of the GIL, so requests go on meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(TRIM_PERIOD)
        await loop.run_in_executor(None, trim)


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """SIGTERM and SIGINT set the event from the first moment: a stop asked for while the sink
    is still starting (a supervisor, a test that saw sink.json) is honoured once it has started,
    instead of killing it with the default action halfway."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
