"""The HTTP source: an aiohttp application that acks only after a durable append.

Routes (the HTTP contract of docs/http.md):
  POST /              -> stream "default";  POST /<stream>  -> that stream
  GET  /<stream>?...  -> HTTPHandler's GET mode;  GET / without a query -> a status page
  GET  /_health, /_status, /_metrics;  any other /_... -> 404
  GET  /_web/...      -> the archive browser, when the sink mounts one (browsers asking for
                         HTML at / are sent there)
Nothing slow happens before the answer: decoding is CPU only (big bodies on worker processes,
see decoder.py), the append is a write to the page cache, and the only wait is the shared
fsync of the segment writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.client_exceptions import ClientPayloadError

from archiver import __version__
from archiver.format.record import (
    REJECTED_STREAM,
    SOURCE_JSON,
    Context,
    Rejected,
    rejected_record,
    valid_stream_name,
)
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import HTTP, IngestCounters
from archiver.ingest.decode.result import BodyTooLarge, DecodeError
from archiver.ingest.decoder import Decoder, decode_request, is_heavy
from archiver.ingest.rules import NO_RULES, RuleSet
from archiver.ingest.import_route import IMPORTS_KEY, import_batch
from archiver.spool.imports import ImportSpool
from archiver.spool.writer import SegmentWriter

log = logging.getLogger(__name__)
DEFAULT_STREAM = "default"
WRITER_KEY = web.AppKey("writer", SegmentWriter)
SITE_KEY = web.AppKey("site", str)  # where a mounted site lives, for browsers that ask for /
OVERSIZE_PREFIX = 64 * 1024  # bytes of a body over server.max_body_bytes kept in _rejected



@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 16 * 1024**2
    max_decoded_bytes: int = 64 * 1024**2
    retry_after: float = 5.0


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


class _State:
    """Per-app counters and settings, kept off module globals so several apps can coexist."""

    def __init__(
        self,
        limits: HttpLimits,
        info: Callable[[], dict[str, Any]],
        flush: Callable[[], Awaitable[dict[str, Any]]] | None,
        metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None,
        admin_token: str,
        auth: Authenticator,
        decoder: Decoder,
        admin_trust_loopback: bool,
        counters: IngestCounters,
        rules: RuleSet,
    ) -> None:
        self.limits = limits
        self.rules = rules
        self.decoder = decoder
        self.info = info
        self.flush = flush
        self.metrics = metrics
        self.admin = Authenticator(tokens=[admin_token] if admin_token else [])
        self.admin_trust_loopback = admin_trust_loopback
        self.auth = auth
        self.counters = counters
        self.in_flight = 0  # ingest requests whose handler has started and not answered
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False  # set by drain(): every response closes its connection


STATE_KEY = web.AppKey("state", _State)


def create_app(
    writer: SegmentWriter,
    limits: HttpLimits | None = None,
    info: Callable[[], dict[str, Any]] = dict,
    *,
    flush: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None = None,
    admin_token: str = "",
    admin_trust_loopback: bool = True,
    auth: Authenticator | None = None,
    decoder: Decoder | None = None,
    counters: IngestCounters | None = None,
    site: tuple[str, web.Application] | None = None,
    rules: RuleSet = NO_RULES,
    imports: ImportSpool | None = None,  # serves /_admin/import (archiver import) as flush serves /_admin/flush
) -> web.Application:
    """The ingest application over ``writer``. ``info`` adds sink facts to /_status (it may
    block: it runs on a worker thread); ``flush`` serves /_admin/flush to ``admin_token``
    and to loopback peers unless ``admin_trust_loopback`` is false (behind a local proxy
    every peer is loopback); ``metrics`` renders /_metrics (its body and content type);
    ``auth``, when it has credentials, guards every route but /_health; ``decoder`` decodes
    large bodies (by default on a thread); ``counters`` may be shared with the TCP source;
    ``site`` (a reserved ``/_`` prefix, an application) is served there, behind ``auth``;
    ``rules`` run on every decoded record and redact what goes to _rejected."""
    app = web.Application(client_max_size=(limits or HttpLimits()).max_body_bytes, middlewares=[_authenticate])
    app[WRITER_KEY] = writer
    app[STATE_KEY] = _State(limits or HttpLimits(), info, flush, metrics, admin_token, auth or Authenticator(),
                            decoder or Decoder(0), admin_trust_loopback, counters or IngestCounters(), rules)
    app.router.add_post("/_admin/flush", _admin_flush)
    if imports is not None:
        app[IMPORTS_KEY] = imports
        app.router.add_post("/_admin/import", _admin_import)
    app.router.add_get("/_health", _health)
    app.router.add_get("/_status", _status)
    app.router.add_get("/_metrics", _metrics)
    if site is not None:
        app[SITE_KEY] = site[0]
        app.add_subapp(*site)
    app.router.add_route("*", "/_{rest:.*}", _reserved)
    app.router.add_get("/{stream:.*}", _receive)
    app.router.add_post("/{stream:.*}", _receive)
    return app


@web.middleware
async def _authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
    state: _State = request.app[STATE_KEY]
    header = request.headers.get("Authorization")
    exempt = request.path == "/_health" or (request.path.startswith("/_admin/") and state.admin.allows(header))
    response: web.StreamResponse
    if state.auth.enabled and not exempt and not state.auth.allows(header):
        state.counters.responses[401] += 1
        response = web.Response(
            status=401, text="error: authentication required (a bearer token or Basic credentials)\n",
            headers={"WWW-Authenticate": 'Basic realm="archiver"'},
        )
    else:
        response = await handler(request)
    if state.stopping:
        response.force_close()
    return response


# After drain(): how long a request that began meanwhile (keep-alive) may take before aiohttp
# cancels it.
CANCEL_AFTER = 5.0


def make_runner(app: web.Application, *, max_line_bytes: int) -> web.AppRunner:
    """The runner for ``app``. HTTPHandler's GET mode needs long request lines; bodies are
    decompressed by records.decompress (magic bytes, size limit, truncation check), which
    aiohttp's own decompression would bypass."""
    return web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=CANCEL_AFTER,
        max_line_size=max_line_bytes,
        max_field_size=max_line_bytes,
        auto_decompress=False,
    )


async def _health(request: web.Request) -> web.Response:
    writer = request.app[WRITER_KEY]
    state = "overloaded" if writer.over_limit() else "ok"
    return web.json_response({"status": state}, status=503 if writer.over_limit() else 200)


async def _status(request: web.Request) -> web.Response:
    document = await _status_document(request.app)
    return web.Response(body=orjson.dumps(document), content_type="application/json")


async def _status_document(app: web.Application) -> dict[str, Any]:
    state: _State = app[STATE_KEY]
    info = await asyncio.get_running_loop().run_in_executor(None, state.info)
    return {
        "version": __version__,
        **app[WRITER_KEY].status(),
        **info,
        **state.counters.status(),
        "decode_workers": {"configured": state.decoder.workers, "restarts": state.decoder.restarts},
    }


async def _metrics(request: web.Request) -> web.Response:
    state: _State = request.app[STATE_KEY]
    if state.metrics is None:
        raise web.HTTPNotFound(text="error: this sink has no metrics\n")
    body, content_type = await state.metrics()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _admin_flush(request: web.Request) -> web.Response:
    """Seal every open segment and upload now; answers when done. Loopback or token only."""
    state = _admin_state(request)
    if state.flush is None:
        raise web.HTTPNotFound(text="error: this sink has no flush\n")
    result = await state.flush()
    return web.Response(body=orjson.dumps(result), content_type="application/json")


async def _admin_import(request: web.Request) -> web.Response:
    """``archiver import`` through the running sink (import_route.py). Loopback or token only."""
    _admin_state(request)
    return await import_batch(request)


def _admin_state(request: web.Request) -> _State:
    state: _State = request.app[STATE_KEY]
    if not _admin_allowed(request, state):
        where = "is for localhost, or " if state.admin_trust_loopback else ""
        raise web.HTTPForbidden(text=f"error: /_admin {where}needs admin.token as a Bearer token\n")
    return state


def _admin_allowed(request: web.Request, state: _State) -> bool:
    loopback = state.admin_trust_loopback and request.remote in ("127.0.0.1", "::1")
    return loopback or state.admin.allows(request.headers.get("Authorization"))


async def _reserved(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"error: {request.path} is not a known reserved path\n")


async def _receive(request: web.Request) -> web.Response:
    if request.method == "GET" and not request.rel_url.raw_query_string:
        if request.match_info["stream"] == "":
            if SITE_KEY in request.app and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther(request.app[SITE_KEY] + "/")
            return await _status_page(request.app)
    state: _State = request.app[STATE_KEY]
    writer = request.app[WRITER_KEY]
    stream = request.match_info["stream"] or DEFAULT_STREAM
    ctx = Context(stream, request.remote, time.time())
    arrived = time.monotonic()
    state.in_flight += 1
    state.idle.clear()
    try:
        response = await _ingest(request, writer, state, ctx)
    except _Refused as refused:
        response = await _refuse(request, writer, state, ctx, refused)
    finally:
        state.in_flight -= 1
        if not state.in_flight:
            state.idle.set()
    state.counters.responses[response.status] += 1
    if response.status != 503:  # every other answer of an ingest request follows a durable append
        state.counters.observe_ack(time.monotonic() - arrived)
    return response


async def drain(app: web.Application, timeout: float) -> bool:
    """Wait up to ``timeout`` until no ingest request is in progress; True if none is. The
    listener is stopped first, so bodies still arriving are read to the end and answered
    (aiohttp's own shutdown stops reading at once and cancels them after its timeout). From
    now on every answer closes its connection, so a keep-alive client starts at most one more
    request on it rather than going on for the whole drain."""
    state: _State = app[STATE_KEY]
    state.stopping = True
    try:
        await asyncio.wait_for(state.idle.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def _ingest(request: web.Request, writer: SegmentWriter, state: _State, ctx: Context) -> web.Response:
    limits = state.limits
    if writer.over_limit():
        raise _Refused(503, "spool_full", f"spool is full ({writer.spool_bytes} bytes): retry later")
    if request.method == "GET":
        raw = request.rel_url.raw_query_string.encode("latin-1")
    else:
        raw = await _read_body(request, limits.max_body_bytes)
    if not valid_stream_name(ctx.stream):
        raise _Refused(
            400,
            "bad_stream",
            f"invalid stream name {ctx.stream[:80]!r}: use 1-64 of [A-Za-z0-9._-], "
            "not starting with '_' or '.'",
            raw,
        )
    encoding = request.headers.get("Content-Encoding")
    try:
        batch = await state.decoder.run(
            is_heavy(raw, encoding), decode_request, request.method, raw, encoding, limits.max_decoded_bytes, ctx,
            state.rules,
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
        return _spool_error(state, err)
    state.counters.received(HTTP, ctx.stream, 0, len(raw))
    for stream, lines in batch.streams.items():
        state.counters.received(HTTP, stream, lines.count, 0)
    state.counters.reject(HTTP, "record", len(rejected))
    state.counters.drop(HTTP, batch.dropped)
    if batch.kind == SOURCE_JSON:
        counts = {"accepted": batch.count, "rejected": len(rejected)}
        if batch.dropped:
            counts["dropped"] = sum(batch.dropped.values())
        return web.Response(body=orjson.dumps(counts), content_type="application/json")
    return web.Response(text="ok\n")


async def _read_body(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        reason = f"body of {declared} bytes is over the limit of {limit} bytes (server.max_body_bytes)"
        raise await _oversize(request, b"", reason)
    body = bytearray()
    try:
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise await _oversize(request, body, f"body is over the limit of {limit} bytes (server.max_body_bytes)")
    except (ClientPayloadError, ConnectionError) as err:  # cut short, or the client hung up
        raise _Refused(400, "incomplete", f"incomplete body: {err or type(err).__name__}", bytes(body)) from None
    return bytes(body)


async def _oversize(request: web.Request, head: bytes | bytearray, reason: str) -> _Refused:
    """A 413 that still says what was sent: the body's first OVERSIZE_PREFIX bytes, its length
    and sha256. The rest is read as it arrives, hashed and discarded, never held whole."""
    digest = hashlib.sha256(head)
    prefix = bytearray(head[:OVERSIZE_PREFIX])
    length = len(head)
    complete = True
    try:
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
            if len(prefix) < OVERSIZE_PREFIX:
                prefix += chunk[: OVERSIZE_PREFIX - len(prefix)]
    except (ClientPayloadError, ConnectionError):  # the client hung up: say how much arrived
        complete = False
    fields = {"body_bytes": length, "body_sha256": digest.hexdigest(), "body_complete": complete}
    return _Refused(413, "too_large", reason, bytes(prefix), fields)


def _request_meta(request: web.Request, ctx: Context) -> dict[str, Any]:
    return {
        "target_stream": ctx.stream[:200],
        "method": request.method,
        "content_type": request.headers.get("Content-Type"),
        "content_encoding": request.headers.get("Content-Encoding"),
    }


async def _refuse(
    request: web.Request, writer: SegmentWriter, state: _State, ctx: Context, refused: _Refused
) -> web.Response:
    headers = {}
    if refused.status == 503:
        headers["Retry-After"] = str(max(1, round(state.limits.retry_after)))
    else:
        meta = {**_request_meta(request, ctx), **refused.fields}
        (kept,) = state.rules.redact_rejected([Rejected(refused.reason, refused.raw)])
        record = rejected_record(kept, ctx, "http", meta)
        try:
            writer.write_records(REJECTED_STREAM, [record])
            await writer.commit()
        except OSError as err:
            return _spool_error(state, err)
    state.counters.reject(HTTP, refused.kind)
    return web.Response(status=refused.status, text=f"error: {refused.reason}\n", headers=headers)


def _spool_error(state: _State, err: OSError) -> web.Response:
    retry = str(max(1, round(state.limits.retry_after)))
    return web.Response(
        status=503, text=f"error: the spool could not store the records ({err.strerror}); retry later\n",
        headers={"Retry-After": retry},
    )


async def _status_page(app: web.Application) -> web.Response:
    status = await _status_document(app)
    lines = [f"archiver {status['version']}: an archiving log sink", ""]
    lines.append(f"spool: {status['spool_bytes']} of {status['spool_limit']} bytes, fsync={status['fsync']}")
    for stream, segment in status["open"].items():
        lines.append(f"open   {stream:<24} {segment['segment']}  {segment['records']} records")
    lines.append("")
    lines.append("send: curl -X POST -d abc=def http://HOST:PORT/STREAM    details: GET /_status")
    return web.Response(text="\n".join(lines) + "\n")
