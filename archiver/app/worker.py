"""A worker of a sink with ``server.workers`` > 1 (started by its primary, archiver/app/group.py):
the ingest side of the sink (HTTP, TCP, decoding, its own segment writer) on the primary's
ports, without the manifest, the uploader or the pid lock.

A 200 means what it means in one process (the writer acks after the fsync policy's commit). A
sealed segment's manifest row goes to the primary before the open file is unlinked. /_status,
/_metrics, /_admin/flush, /_durable and /_admin/import are answered by the primary, for the
whole sink. SIGTERM (from the primary at its stop, or a terminal's SIGINT) and the end of stdin
(the primary is gone) stop the worker as a sink stops: stop accepting, finish requests, seal;
exit 1 if a seal failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import sys
from pathlib import Path

import orjson
from aiohttp import web

from archiver.app.errors import ServiceError
from archiver.app.group import WorkerSpec
from archiver.app.internal import InternalServer, Peer, json_response
from archiver.app.logs import configure_logging
from archiver.app.metrics import SinkMetrics
from archiver.app.service import (
    raise_open_files_limit,
    seal_everything,
    stop_signals,
    ingest_app,
    listen,
    make_writer,
    start_decoding,
)
from archiver.format.layout import DataDir
from archiver.format.manifest import SegmentRow
from archiver.spool.writer import SegmentWriter

log = logging.getLogger("archiver")


def main() -> None:
    """The worker process's entry point: its WorkerSpec is pickled on stdin."""
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)
    configure_logging(spec.config.log_level, spec.config.log_format)
    try:
        asyncio.run(_serve(spec))
    except ServiceError as err:
        log.error("worker %d: %s", spec.worker, err)
        sys.exit(1)


async def _serve(spec: WorkerSpec) -> None:
    config = spec.config
    raise_open_files_limit(config.server.max_connections)
    data = DataDir(Path(spec.data_dir), spec.worker)
    primary = Peer(spec.primary, spec.token)

    def add_row(row: SegmentRow) -> None:
        primary.json_blocking("POST", "/sealed", {"worker": spec.worker, "row": dataclasses.asdict(row)})

    with stop_signals() as stop:
        _stop_at_end_of_stdin(stop)
        async with contextlib.AsyncExitStack() as lifecycle:
            lifecycle.push_async_callback(primary.close)
            writer = make_writer(config, data, spec.sink_id, add_row, spool_limit=spec.spool_limit)
            await writer.start()
            lifecycle.push_async_callback(seal_everything, writer)
            decoder, counters, rules = await start_decoding(config, lifecycle)
            metrics = SinkMetrics(data, writer, counters, decoder)
            server = _local_api(spec, writer, metrics)
            await server.start()
            lifecycle.push_async_callback(server.close)

            async def relay_import(request: web.Request) -> web.Response:
                query = "?position" if "position" in request.query else ""
                return await primary.forward("POST", "/import" + query, await request.read())

            app = ingest_app(
                config, data, spec.sink_id, writer, decoder, counters, rules, lifecycle,
                info=lambda: primary.json_blocking("GET", "/info"),
                flush=lambda: primary.json("POST", "/flush"),
                metrics=lambda: primary.call("GET", "/metrics"),
                figures=lambda: primary.json("GET", "/figures"),
                durable=lambda: primary.json("GET", "/durable"),
                relay_import=relay_import,
            )
            await listen(config, app, writer, decoder, counters, rules, lifecycle)
            await primary.json("POST", "/register", {"worker": spec.worker, "url": server.url})
            log.info("worker %d serving", spec.worker)
            await stop.wait()
            log.info("worker %d stopping: finishing in-flight requests", spec.worker)


def _local_api(spec: WorkerSpec, writer: SegmentWriter, metrics: SinkMetrics) -> InternalServer:
    """What the primary asks of this worker: its figures and durable watermark, a flush, spool
    space back when the uploader pruned one of its sealed segments, and a larger share of the
    spool as the backlog of an earlier run drains."""

    async def figures(request: web.Request) -> web.Response:
        return json_response(metrics.figures(spec.worker))

    async def durable(request: web.Request) -> web.Response:
        return json_response(writer.durable_watermark())

    async def flush(request: web.Request) -> web.Response:
        return json_response([failed.describe() for failed in await writer.flush()])

    async def release(request: web.Request) -> web.Response:
        writer.release(int(orjson.loads(await request.read())["bytes"]))
        return json_response({})

    async def limit(request: web.Request) -> web.Response:
        writer.spool_limit = max(writer.spool_limit, int(orjson.loads(await request.read())["bytes"]))
        return json_response({})

    return InternalServer(spec.token, {"GET /figures": figures, "GET /durable": durable, "POST /flush": flush,
                                       "POST /release": release, "POST /limit": limit})


def _stop_at_end_of_stdin(stop: asyncio.Event) -> None:
    """The primary holds the other end of stdin: when it is gone, so is the sink."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not os.read(fd, 4096):
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)
