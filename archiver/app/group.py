"""The primary's side of ``server.workers`` > 1: it starts the other workers, is their one
manifest writer, and answers for the whole sink.

The primary is the process started: it holds the data-dir lock, runs the uploader and its jobs,
and is worker 0. Workers 1 to N-1 are processes of their own (archiver/app/worker.py) that
listen on the same HTTP and TCP ports (SO_REUSEPORT), each appending to its own open spool
(DATA/spool/wN/open) and sealing into the shared sealed spool. They are given their WorkerSpec
on stdin, which stays open: its end tells a worker that its primary is gone. Over the internal
API (archiver/app/internal.py):

  worker -> primary  POST /register  its internal address, once it listens
                     POST /sealed    a sealed segment's manifest row, entered before the worker
                                     unlinks the open file (as one process's sealer does)
                     GET  /info, /figures, /metrics, /durable; POST /flush, /import: what a
                                     client asked of that worker, answered for the whole sink
  primary -> worker  GET  /figures   its writer, counters, decoder and histograms, summed here
                     GET  /durable   how far its open segments are fsynced
                     POST /flush     seal its open segments now
                     POST /release   a sealed segment of its was pruned: spool space back
                     POST /limit     a larger share of spool.max_bytes (spool_shares)

A worker that exits while the sink serves stops the whole sink, which exits 1 naming it: its
acknowledged records are durable in its open spool and the next start seals them (the primary
recovers every worker's open spool before it starts them). A supervisor restarts the sink.
Workers inherit the data-dir lock's file: until the last of them has exited, no new sink
starts on the data dir (and recovers a spool a worker still writes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from archiver.app.config import Config
from archiver.app.errors import ServiceError, StartupError
from archiver.app.figures import counters_from_json, merge_writers
from archiver.app.internal import InternalServer, Peer, json_response, new_token
from archiver.app.metrics import SinkMetrics
from archiver.format.layout import DataDir
from archiver.format.manifest import Manifest, SegmentRow
from archiver.ingest.import_route import answer_import
from archiver.spool.imports import ImportSpool
from archiver.spool.writer import SegmentWriter

log = logging.getLogger(__name__)
WORKER_MAIN = "from archiver.app.worker import main; main()"


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told at start: the config with the ports the primary listens on."""

    config: Config
    worker: int
    data_dir: str
    sink_id: str
    primary: str
    token: str
    spool_limit: int  # its share of spool.max_bytes, raised by the primary as the backlog drains


def spool_shares(max_bytes: int, workers: int, backlog: int) -> tuple[int, int]:
    """``spool.max_bytes`` split over the workers: the primary's limit and each other worker's.
    The primary counts the backlog an earlier run left (sealed segments still to upload); every
    other worker gets an equal share of the room it leaves, the primary the rest, so the limits
    always sum to ``max_bytes`` and the spool never outgrows it."""
    share = max(0, max_bytes - backlog) // workers
    return max_bytes - (workers - 1) * share, share


@dataclasses.dataclass
class _Worker:
    process: asyncio.subprocess.Process
    registered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    peer: Peer | None = None


class Group:
    """The other workers of the sink, seen from the primary; ``stop`` is set when one dies."""

    def __init__(self, config: Config, data: DataDir, stop: asyncio.Event, lock_fd: int) -> None:
        self.config = config
        self.data = data
        self.stop = stop
        self.lock_fd = lock_fd  # the data-dir lock's file, which every worker holds open
        self.token = new_token()
        self._workers: dict[int, _Worker] = {}
        self._sealed_by: dict[str, int] = {}  # segments sealed by a worker this run, until pruned
        self._reported: set[int] = set()
        self._failures: list[str] = []
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backlog = 0  # bytes the primary counted when the workers started, not yet pruned
        self._share = 0  # each other worker's spool limit
        self._rows = ThreadPoolExecutor(1, thread_name_prefix="archiver-rows")
        self._manifest: Manifest | None = None
        self._server = InternalServer(self.token, {
            "POST /register": self._register, "POST /sealed": self._sealed, "GET /info": self._info,
            "GET /figures": self._figures, "GET /metrics": self._metrics, "POST /flush": self._flush,
            "GET /durable": self._durable, "POST /import": self._import,
        })
        self._writer: SegmentWriter | None = None
        self._status: Callable[[], dict[str, Any]] = dict
        self._flush_all: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self._sink_metrics: SinkMetrics | None = None
        self._imports: ImportSpool | None = None

    async def open(self, writer: SegmentWriter) -> None:
        """Start the internal API; ``writer`` is the primary's (its on_sealed hears of every row)."""
        self._writer = writer
        await self._server.start()

    def serve(self, status: Callable[[], dict[str, Any]], flush: Callable[[], Awaitable[dict[str, Any]]],
              metrics: SinkMetrics, imports: ImportSpool) -> None:
        """What the workers' /_status, /_admin/flush, /_metrics and /_admin/import are answered with."""
        self._status = status
        self._flush_all = flush
        self._sink_metrics = metrics
        self._imports = imports

    async def spawn(self, sink_id: str, addresses: dict[str, Any]) -> list[int]:
        """Start workers 1 to N-1 on the ports the primary listens on (``addresses``, as in
        sink.json) and wait until each listens; their pids."""
        config = self.config
        server = dataclasses.replace(config.server, port=_port(addresses["http"]))
        tcp = dataclasses.replace(config.tcp, port=_port(addresses["tcp"])) if config.tcp.enabled else config.tcp
        resolved = dataclasses.replace(config, server=server, tcp=tcp)
        assert self._writer is not None
        self._backlog = self._writer.spool_bytes
        self._writer.spool_limit, self._share = spool_shares(config.spool.max_bytes, config.server.workers, self._backlog)
        for index in range(1, config.server.workers):
            spec = WorkerSpec(resolved, index, str(self.data.root), sink_id, self._server.url, self.token, self._share)
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER_MAIN, stdin=asyncio.subprocess.PIPE,
                                                           pass_fds=(self.lock_fd,))
            assert process.stdin is not None
            process.stdin.write(pickle.dumps(spec))
            await process.stdin.drain()
            self._workers[index] = _Worker(process)
            self._keep(asyncio.create_task(self._watch(index, process)))
        for index, worker in self._workers.items():
            registered = asyncio.create_task(worker.registered.wait())
            await asyncio.wait([registered, asyncio.create_task(worker.process.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if not registered.done():
                registered.cancel()
                raise StartupError(f"worker {index} exited at start ({_exit(worker.process.returncode)}); "
                                   "its log lines above say why")
        log.info("%d workers serving: this process and pids %s", config.server.workers,
                 ", ".join(str(w.process.pid) for w in self._workers.values()))
        return [worker.process.pid for worker in self._workers.values()]

    def signal(self) -> None:
        """Ask every worker to stop: each drains and seals as the primary does."""
        self._stopping = True
        for worker in self._workers.values():
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def stopped(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        """An exit callback: wait for every worker to exit, then close the internal API. Raises
        ServiceError naming each worker that died or exited 1 (a segment it could not seal),
        after the message of a ServiceError already raised by the primary's own stop."""
        try:
            for index, worker in self._workers.items():
                code = await worker.process.wait()
                if code != 0 and index not in self._reported:
                    self._fail(index, worker.process, "at stop: a segment it could not seal stays in its open spool, "
                                                      "sealed at the next start")
        finally:
            await self._server.close()
            for worker in self._workers.values():
                if worker.peer is not None:
                    await worker.peer.close()
            await asyncio.get_running_loop().run_in_executor(self._rows, self._close_manifest)
            self._rows.shutdown()
        if self._failures:
            earlier = [str(exc)] if isinstance(exc, ServiceError) else []
            raise ServiceError("; ".join(earlier + self._failures))
        return False

    async def others(self) -> list[dict[str, Any]]:
        """Every other worker's figures (SinkMetrics.figures)."""
        peers = [worker.peer for worker in self._workers.values() if worker.peer is not None]
        return list(await asyncio.gather(*(peer.json("GET", "/figures") for peer in peers)))

    async def figures(self) -> dict[str, Any]:
        """The writer, counter and decoder part of /_status, summed over the workers, and
        ``workers``: each one's pid, records, spool bytes and spool limit."""
        assert self._sink_metrics is not None
        every = [self._sink_metrics.figures(0), *await self.others()]
        return {
            **merge_writers([figures["writer"] for figures in every]),
            **counters_from_json([figures["counters"] for figures in every]).status(),
            "decode_workers": {"configured": sum(figures["decode_workers"] for figures in every),
                               "restarts": sum(figures["decoder_restarts"] for figures in every)},
            "workers": [{"worker": figures["worker"], "pid": figures["pid"],
                         "records": sum(n for _, _, n in figures["counters"]["records"]),
                         "spool_bytes": figures["writer"]["spool_bytes"],
                         "spool_limit": figures["writer"]["spool_limit"]} for figures in every],
        }

    async def durable(self) -> list[dict[str, Any]]:
        """How far every worker's open segments are fsynced (GET /_durable for the whole sink)."""
        assert self._writer is not None
        peers = [worker.peer for worker in self._workers.values() if worker.peer is not None]
        answers = await asyncio.gather(*(peer.json("GET", "/durable") for peer in peers))
        return self._writer.durable_watermark() + [mark for answer in answers for mark in answer]

    async def flush_workers(self) -> list[dict[str, Any]]:
        """Seal every worker's open segments; the ones whose seal failed."""
        peers = [worker.peer for worker in self._workers.values() if worker.peer is not None]
        answers = await asyncio.gather(*(peer.json("POST", "/flush") for peer in peers))
        return [failed for answer in answers for failed in answer]

    def release(self, segment: str, size: int) -> None:
        """A sealed segment was pruned: its bytes go back to the spool share of whoever counts it."""
        assert self._writer is not None
        worker = self._workers.get(self._sealed_by.pop(segment, 0))
        if worker is None or worker.peer is None:
            self._writer.release(size)
            self._shrink_backlog(size)
        else:
            self._keep(asyncio.create_task(worker.peer.call("POST", "/release", {"bytes": size})))

    def _shrink_backlog(self, size: int) -> None:
        """The primary pruned a segment: the other workers' shares grow by what the backlog gave
        back (a share only grows, so a worker keeps the largest it was sent)."""
        if self._backlog == 0:
            return
        self._backlog = max(0, self._backlog - size)
        assert self._writer is not None
        primary, share = spool_shares(self.config.spool.max_bytes, self.config.server.workers, self._backlog)
        if share == self._share:
            return
        self._writer.spool_limit, self._share = primary, share
        for worker in self._workers.values():
            if worker.peer is not None:
                self._keep(asyncio.create_task(worker.peer.call("POST", "/limit", {"bytes": share})))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, index: int, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        if not self._stopping:
            self._fail(index, process, "while serving: stopping the sink; its open segments are sealed at the "
                                       "next start")
            self.stop.set()

    def _fail(self, index: int, process: asyncio.subprocess.Process, consequence: str) -> None:
        message = f"worker {index} (pid {process.pid}) exited with {_exit(process.returncode)} {consequence}"
        log.error("%s", message)
        self._reported.add(index)
        self._failures.append(message)

    # -- the internal API ---------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        document = orjson.loads(await request.read())
        worker = self._workers[document["worker"]]
        worker.peer = Peer(document["url"], self.token)
        worker.registered.set()
        return json_response({})

    async def _sealed(self, request: web.Request) -> web.Response:
        document = orjson.loads(await request.read())
        row = SegmentRow(**document["row"])
        await asyncio.get_running_loop().run_in_executor(self._rows, self._add_row, row)
        self._sealed_by[row.id] = document["worker"]
        assert self._writer is not None
        self._writer.on_sealed()
        return json_response({})

    def _add_row(self, row: SegmentRow) -> None:
        if self._manifest is None:
            self._manifest = Manifest(self.data.root)
        self._manifest.add_sealed(row)

    def _close_manifest(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None

    async def _info(self, request: web.Request) -> web.Response:
        return json_response(await asyncio.get_running_loop().run_in_executor(None, self._status))

    async def _figures(self, request: web.Request) -> web.Response:
        return json_response(await self.figures())

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self._sink_metrics is not None
        body, content_type = await self._sink_metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _durable(self, request: web.Request) -> web.Response:
        return json_response(await self.durable())

    async def _import(self, request: web.Request) -> web.Response:
        assert self._imports is not None
        return await answer_import(self._imports, await request.read(), "position" in request.query)

    async def _flush(self, request: web.Request) -> web.Response:
        assert self._flush_all is not None
        return json_response(await self._flush_all())


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _exit(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"status {code}"
