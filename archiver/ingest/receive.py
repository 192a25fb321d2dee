"""One ingest request, whichever HTTP server parsed it: limits, auth, decoding, the durable
append, refusals kept in _rejected, counters and the drain.

Two servers feed it: the hot path's httptools protocol (hotpath.py), which takes the ingest
routes of a new connection, and the aiohttp application (http.py), which serves every other
route and ingest requests on connections it was handed. Both answer through ``Receiver``, so
each contract of docs/http.md has one implementation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Protocol

import orjson

from archiver.format.record import REJECTED_STREAM, SOURCE_JSON, Context, Rejected, rejected_record, valid_stream_name
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import HTTP, IngestCounters
from archiver.ingest.decode.result import BodyTooLarge, DecodeError
from archiver.ingest.decoder import Decoder, decode_request, is_heavy
from archiver.ingest.rules import NO_RULES, RuleSet
from archiver.spool.writer import SegmentWriter

log = logging.getLogger(__name__)
DEFAULT_STREAM = "default"
OVERSIZE_PREFIX = 64 * 1024  # bytes of a body over server.max_body_bytes kept in _rejected
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
UNAUTHENTICATED = "error: authentication required (a bearer token or Basic credentials)\n"


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 16 * 1024**2
    max_decoded_bytes: int = 64 * 1024**2
    retry_after: float = 5.0


class BodyCut(Exception):
    """The body ended early: the client hung up or broke the framing."""


class Body(Protocol):
    """A request body as it arrives; ``chunks`` raises BodyCut when it ends early."""

    @property
    def content_length(self) -> int | None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class Incoming:
    """What the ingest of a request needs from it; ``path`` is percent-decoded, without the
    leading slash; ``headers`` answers lower-case names."""

    method: str
    path: str
    query: str
    remote: str | None
    headers: Mapping[str, str]
    body: Body


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)


def is_ingest_route(method: str, path: str, query: str) -> bool:
    """``POST /<stream>`` and ``GET /<stream>?<query>``; everything else (reserved ``/_``
    paths, the status page, other methods) is the aiohttp application's."""
    if path.startswith("_"):
        return False
    return method == "POST" or (method == "GET" and bool(query))


class _Refused(Exception):
    """A request answered with an error status; the reason goes to the client and _rejected."""

    def __init__(
        self, status: int, kind: str, reason: str, raw: bytes = b"", fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind  # one of counters.REJECT_REASONS
        self.reason = reason
        self.raw = raw
        self.fields = fields or {}  # more for the _rejected record: an oversize body's length and hash


class Receiver:
    """The ingest side of one sink's HTTP source, shared by both servers."""

    def __init__(self, writer: SegmentWriter, limits: HttpLimits, auth: Authenticator, decoder: Decoder,
                 counters: IngestCounters, rules: RuleSet = NO_RULES) -> None:
        self.writer = writer
        self.rules = rules
        self.limits = limits
        self.auth = auth
        self.decoder = decoder
        self.counters = counters
        self.in_flight = 0  # ingest requests whose handling has started and not answered
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False  # set by drain(): every answer closes its connection
        self.on_drained: list[Callable[[], None]] = []  # called when drain() ends, either way

    def unauthenticated(self, header: str | None) -> Answer | None:
        """A 401 when ``[auth]`` has credentials and ``header`` matches none, else None."""
        if not self.auth.enabled or self.auth.allows(header):
            return None
        self.counters.responses[401] += 1
        return Answer(401, UNAUTHENTICATED.encode(), headers={"WWW-Authenticate": 'Basic realm="archiver"'})

    async def receive(self, request: Incoming) -> Answer:
        """The answer to an ingest request, sent only after its records (or its refusal) are durable."""
        return await self._handle(request, self._ingest)

    async def refuse(self, request: Incoming, reason: str) -> Answer:
        """A 400 for a request the sink cannot serve where it arrived, kept in _rejected with its
        body like every other refusal."""
        async def refused(request: Incoming, ctx: Context) -> Answer:
            raise _Refused(400, "misrouted", reason, await _read_body(request.body, self.limits.max_body_bytes))
        return await self._handle(request, refused)

    async def _handle(self, request: Incoming, serve: Callable[[Incoming, Context], Awaitable[Answer]]) -> Answer:
        ctx = Context(request.path or DEFAULT_STREAM, request.remote, time.time())
        arrived = time.monotonic()
        self.in_flight += 1
        self.idle.clear()
        try:
            answer = await serve(request, ctx)
        except _Refused as refused:
            answer = await self._refuse(request, ctx, refused)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        self.counters.responses[answer.status] += 1
        if answer.status != 503:  # every other answer of an ingest request follows a durable append
            self.counters.observe_ack(time.monotonic() - arrived)
        return answer

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until no ingest request is in progress; True if none is. From
        now on every answer closes its connection; at the end, ``on_drained`` is called."""
        self.stopping = True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            for callback in self.on_drained:
                callback()
        return True

    async def _ingest(self, request: Incoming, ctx: Context) -> Answer:
        limits, writer = self.limits, self.writer
        if writer.over_limit():
            raise _Refused(503, "spool_full", f"spool is full ({writer.spool_bytes} bytes): retry later")
        if request.method == "GET":
            raw = request.query.encode("latin-1")
        else:
            raw = await _read_body(request.body, limits.max_body_bytes)
        if not valid_stream_name(ctx.stream):
            raise _Refused(
                400,
                "bad_stream",
                f"invalid stream name {ctx.stream[:80]!r}: use 1-64 of [A-Za-z0-9._-], "
                "not starting with '_' or '.'",
                raw,
            )
        encoding = request.headers.get("content-encoding")
        try:
            batch = await self.decoder.run(
                is_heavy(raw, encoding), decode_request, request.method, raw, encoding, limits.max_decoded_bytes, ctx,
                self.rules,
            )
        except BodyTooLarge as err:
            raise _Refused(413, "too_large", str(err), raw) from None
        except DecodeError as err:
            raise _Refused(400, "undecodable", str(err), raw) from None
        except Exception as err:  # a decoding bug must not lose the bytes: keep them, say so
            log.exception("decoding a %d-byte body failed", len(raw))
            raise _Refused(400, "decoder_failed", f"the body could not be decoded ({type(err).__name__})", raw) from None
        meta = _request_meta(request, ctx)
        rejected = [rejected_record(item, ctx, batch.kind, meta) for item in batch.rejected]
        try:
            for stream, lines in batch.streams.items():
                writer.write_lines(stream, lines)
            writer.write_records(REJECTED_STREAM, rejected)
            await writer.commit()
        except OSError as err:
            return self._spool_error(err)
        self.counters.received(HTTP, ctx.stream, 0, len(raw))
        for stream, lines in batch.streams.items():
            self.counters.received(HTTP, stream, lines.count, 0)
        self.counters.reject(HTTP, "record", len(rejected))
        self.counters.drop(HTTP, batch.dropped)
        if batch.kind == SOURCE_JSON:
            counts = {"accepted": batch.count, "rejected": len(rejected)}
            if batch.dropped:
                counts["dropped"] = sum(batch.dropped.values())
            return Answer(200, orjson.dumps(counts), JSON)
        return Answer(200, b"ok\n")

    async def _refuse(self, request: Incoming, ctx: Context, refused: _Refused) -> Answer:
        headers = {}
        if refused.status == 503:
            headers["Retry-After"] = self._retry_after()
        else:
            meta = {**_request_meta(request, ctx), **refused.fields}
            (kept,) = self.rules.redact_rejected([Rejected(refused.reason, refused.raw)])
            record = rejected_record(kept, ctx, "http", meta)
            try:
                self.writer.write_records(REJECTED_STREAM, [record])
                await self.writer.commit()
            except OSError as err:
                return self._spool_error(err)
        self.counters.reject(HTTP, refused.kind)
        return Answer(refused.status, f"error: {refused.reason}\n".encode(), headers=headers)

    def _spool_error(self, err: OSError) -> Answer:
        reason = f"error: the spool could not store the records ({err.strerror}); retry later\n"
        return Answer(503, reason.encode(), headers={"Retry-After": self._retry_after()})

    def _retry_after(self) -> str:
        return str(max(1, round(self.limits.retry_after)))


async def _read_body(body: Body, limit: int) -> bytes:
    declared = body.content_length
    if declared is not None and declared > limit:
        reason = f"body of {declared} bytes is over the limit of {limit} bytes (server.max_body_bytes)"
        raise await _oversize(body, b"", reason)
    data = bytearray()
    try:
        async for chunk in body.chunks():
            data += chunk
            if len(data) > limit:
                raise await _oversize(body, data, f"body is over the limit of {limit} bytes (server.max_body_bytes)")
    except BodyCut as err:
        raise _Refused(400, "incomplete", f"incomplete body: {err}", bytes(data)) from None
    return bytes(data)


async def _oversize(body: Body, head: bytes | bytearray, reason: str) -> _Refused:
    """A 413 that still says what was sent: the body's first OVERSIZE_PREFIX bytes, its length
    and sha256. The rest is read as it arrives, hashed and discarded, never held whole."""
    digest = hashlib.sha256(head)
    prefix = bytearray(head[:OVERSIZE_PREFIX])
    length = len(head)
    complete = True
    try:
        async for chunk in body.chunks():
            digest.update(chunk)
            length += len(chunk)
            if len(prefix) < OVERSIZE_PREFIX:
                prefix += chunk[: OVERSIZE_PREFIX - len(prefix)]
    except BodyCut:  # the client hung up: say how much arrived
        complete = False
    fields = {"body_bytes": length, "body_sha256": digest.hexdigest(), "body_complete": complete}
    return _Refused(413, "too_large", reason, bytes(prefix), fields)


def _request_meta(request: Incoming, ctx: Context) -> dict[str, Any]:
    return {
        "target_stream": ctx.stream[:200],
        "method": request.method,
        "content_type": request.headers.get("content-type"),
        "content_encoding": request.headers.get("content-encoding"),
    }
