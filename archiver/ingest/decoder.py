"""Decoding off the event loop: request bodies and TCP lines become encoded segment lines.

Decoding is Python CPU work, so in one process it gets one core however many threads there
are. Large inputs (bulk NDJSON, compressed bodies, TCP reads) therefore go to worker
processes, which send back encoded lines per stream (bytes and a few counts: cheap to pass
between processes), and the loop only appends them. Small inputs, such as HTTPHandler's one
record, are decoded inline: a round trip to another process would cost more than the work.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable

from ..records import (
    Context,
    Lines,
    Rejected,
    decode_body,
    decode_lines,
    decode_query,
    decompress,
    encode_lines,
    valid_stream_name,
)

log = logging.getLogger(__name__)

# Inputs at least this big (or compressed: they may inflate to megabytes) leave the loop.
OFFLOAD_BYTES = 64 * 1024
_COMPRESSED_MAGIC = (b"\x1f", b"\x78")
PARENT_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Batch:
    """One request body or TCP read, decoded: encoded lines per stream, and what was rejected."""

    kind: str
    streams: dict[str, Lines]
    rejected: list[Rejected]

    @property
    def count(self) -> int:
        return sum(lines.count for lines in self.streams.values())


def decode_request(method: str, raw: bytes, encoding: str | None, max_decoded: int, ctx: Context) -> Batch:
    """An HTTP request's records: the query string for GET, else the (decompressed) body."""
    if method == "GET":
        decoded = decode_query(raw.decode("latin-1"), ctx)
    else:
        decoded = decode_body(decompress(raw, encoding, max_decoded), ctx)
    streams = {ctx.stream: encode_lines(decoded.records)} if decoded.records else {}
    return Batch(decoded.kind, streams, decoded.rejected)


def decode_tcp(data: bytes, ctx: Context, stream_field: str) -> Batch:
    """Whole TCP lines; each record goes to the stream named by its ``stream_field`` field
    when that is a valid stream name, else to the listener's stream."""
    decoded = decode_lines(data, ctx)
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for record in decoded.records:
        if stream_field:
            value = record["fields"].get(stream_field)
            if isinstance(value, str) and valid_stream_name(value):
                record["stream"] = value
        by_stream.setdefault(record["stream"], []).append(record)
    return Batch(decoded.kind, {stream: encode_lines(records) for stream, records in by_stream.items()},
                 decoded.rejected)


def is_heavy(raw: bytes, content_encoding: str | None) -> bool:
    """Whether decoding ``raw`` is worth sending to a worker."""
    return len(raw) >= OFFLOAD_BYTES or bool(content_encoding) or raw[:1] in _COMPRESSED_MAGIC


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; the sink, not its workers, decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    """A worker holds both ends of its job queue, so a sink killed with SIGKILL would leave it
    waiting for ever: it leaves once it has been handed to another parent."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


class Decoder:
    """Runs the decode functions above: light inputs inline, heavy ones on ``workers``
    processes, or on a thread when ``workers`` is 0."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the workers now, so the first bulk request does not wait for them."""
        if self.workers > 0:
            self._pool = self._new_pool()
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self._pool, int) for _ in range(self.workers)))

    async def run(self, heavy: bool, decode: Callable[..., Batch], *args: Any) -> Batch:
        if not heavy:
            return decode(*args)
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None:
            return await loop.run_in_executor(None, decode, *args)
        try:
            return await loop.run_in_executor(pool, decode, *args)
        except BrokenProcessPool:
            # A worker died (the OOM killer, a signal) and took every job in flight with it:
            # this input may be innocent, so it gets one more try on fresh workers.
            self._replace(pool)
            return await loop.run_in_executor(self._pool, decode, *args)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            log.warning("a decode worker died; starting new workers")
            self.restarts += 1
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the sink has threads (fsync, seal, uploader) a fork would copy mid-flight.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init)
