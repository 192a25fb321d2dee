"""Decoding off the event loop: request bodies and TCP lines become encoded segment lines.

Decoding is Python CPU work, so in one process it gets one core however many threads there
are. Large inputs (bulk NDJSON, compressed bodies, TCP reads) therefore go to worker
processes, which send back encoded lines per stream (bytes and a few counts: cheap to pass
between processes), and the loop only appends them. Small inputs, such as HTTPHandler's one
record, are decoded inline: a round trip to another process would cost more than the work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from archiver.format.record import Context, Lines, Rejected, encode_lines, valid_stream_name
from archiver.ingest.decode.jsonbody import decode_lines
from archiver.ingest.decode.sniff import decode_body, decode_query, decompress
from archiver.ingest.rules import NO_RULES, RuleSet
from archiver.ingest.workers import PoolClosed, WorkerDied, WorkerPool

# Inputs at least this big (or compressed: they may inflate to megabytes) leave the loop.
OFFLOAD_BYTES = 64 * 1024
_COMPRESSED_MAGIC = (b"\x1f", b"\x78")


@dataclass(frozen=True)
class Batch:
    """One request body or TCP read, decoded: encoded lines per stream, what was rejected, and
    how many records each rule dropped (by its label)."""

    kind: str
    streams: dict[str, Lines]
    rejected: list[Rejected]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(lines.count for lines in self.streams.values())


def decode_request(
    method: str, raw: bytes, encoding: str | None, max_decoded: int, ctx: Context, rules: RuleSet = NO_RULES
) -> Batch:
    """An HTTP request's records: the query string for GET, else the (decompressed) body."""
    if method == "GET":
        decoded = decode_query(raw.decode("latin-1"), ctx)
    else:
        decoded = decode_body(decompress(raw, encoding, max_decoded), ctx)
    if not rules:
        streams = {ctx.stream: encode_lines(decoded.records)} if decoded.records else {}
        return Batch(decoded.kind, streams, decoded.rejected)
    return _ruled(decoded.kind, decoded.records, decoded.rejected, "http", rules)


def decode_tcp(data: bytes, ctx: Context, stream_field: str, rules: RuleSet = NO_RULES) -> Batch:
    """Whole TCP lines; each record goes to the stream named by its ``stream_field`` field
    when that is a valid stream name, else to the listener's stream (then rules may route it)."""
    decoded = decode_lines(data, ctx)
    if stream_field:
        for record in decoded.records:
            value = record["fields"].get(stream_field)
            if isinstance(value, str) and valid_stream_name(value):
                record["stream"] = value
    return _ruled(decoded.kind, decoded.records, decoded.rejected, "tcp", rules)


def _ruled(kind: str, records: list[dict[str, Any]], rejected: list[Rejected], source: str, rules: RuleSet) -> Batch:
    """Records through ``rules`` (where decoding ran: a worker for large inputs), grouped by
    the stream each ends in; rejected bytes redacted."""
    dropped: dict[str, int] = {}
    if rules:
        records, dropped = rules.apply_batch(records, source)
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_stream.setdefault(record["stream"], []).append(record)
    return Batch(kind, {stream: encode_lines(lines) for stream, lines in by_stream.items()},
                 rules.redact_rejected(rejected), dropped)


def is_heavy(raw: bytes, content_encoding: str | None) -> bool:
    """Whether decoding ``raw`` is worth sending to a worker."""
    return len(raw) >= OFFLOAD_BYTES or bool(content_encoding) or raw[:1] in _COMPRESSED_MAGIC


class Decoder:
    """Runs the decode functions above: light inputs inline, heavy ones on ``workers``
    processes, or on a thread when ``workers`` is 0."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = WorkerPool(workers) if workers > 0 else None

    @property
    def restarts(self) -> int:
        return self._pool.restarts if self._pool else 0

    def pids(self) -> list[int]:
        return self._pool.pids() if self._pool else []

    async def start(self) -> None:
        """Start the workers now, so the first bulk request does not wait for them."""
        if self._pool is not None:
            await self._pool.start()

    async def run(self, heavy: bool, decode: Callable[..., Any], *args: Any) -> Any:
        if not heavy:
            return decode(*args)
        if self._pool is not None:
            try:
                try:
                    return await self._pool.call(decode, *args)
                except WorkerDied:
                    # A worker died (the OOM killer, a signal) and took every call in flight with it:
                    # this input may be innocent, so it gets one more try on a fresh worker.
                    return await self._pool.call(decode, *args)
            except PoolClosed:
                pass  # input still in hand at stop is decoded here, not mistaken for undecodable
        return await asyncio.get_running_loop().run_in_executor(None, decode, *args)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the workers once they have answered what they hold, killing any still busy
        after ``timeout`` seconds (that input is then decoded on a thread)."""
        if self._pool is not None:
            await self._pool.close(timeout)
