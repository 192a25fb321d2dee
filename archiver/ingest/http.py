"""The HTTP source: an aiohttp application that acks only after a durable append. The listener
(listener.py) serves the ingest routes of its connections on the hot path (hotpath.py) and
hands this app everything else; both answer an ingest request through receive.Receiver.

Routes (the HTTP contract of docs/http.md):
  POST /              -> stream "default";  POST /<stream>  -> that stream
  GET  /<stream>?...  -> HTTPHandler's GET mode;  GET / without a query -> a status page
  GET  /_health, /_status, /_metrics, /_durable;  any other /_... -> 404
  GET  /_web/...      -> the archive browser, when the sink mounts one (browsers asking for
                         HTML at / are sent there)
Nothing slow happens before the answer: decoding is CPU only (big bodies on worker processes,
see decoder.py), the append is a write to the page cache, and the only wait is the shared
fsync of the segment writer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.client_exceptions import ClientPayloadError

from archiver import __version__
from archiver.ingest.auth import Authenticator
from archiver.ingest.counters import IngestCounters
from archiver.ingest.decoder import Decoder
from archiver.ingest.receive import Answer, BodyCut, HttpLimits, Incoming, Receiver
from archiver.ingest.rules import NO_RULES, RuleSet
from archiver.ingest.import_route import IMPORTS_KEY, import_batch
from archiver.spool.imports import ImportSpool
from archiver.spool.writer import SegmentWriter

log = logging.getLogger(__name__)
WRITER_KEY = web.AppKey("writer", SegmentWriter)
SITE_KEY = web.AppKey("site", str)  # where a mounted site lives, for browsers that ask for /
LOOPBACK_PEERS = ("127.0.0.1", "::1")


class _State:
    """Per-app counters and settings, kept off module globals so several apps can coexist."""

    def __init__(
        self,
        info: Callable[[], dict[str, Any]],
        flush: Callable[[], Awaitable[dict[str, Any]]] | None,
        metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None,
        admin_token: str,
        admin_trust_loopback: bool,
        receiver: Receiver,
        figures: Callable[[], Awaitable[dict[str, Any]]] | None,
    ) -> None:
        self.receiver = receiver
        self.figures = figures
        self.counters = receiver.counters
        self.decoder = receiver.decoder
        self.info = info
        self.flush = flush
        self.metrics = metrics
        self.admin = Authenticator(tokens=[admin_token] if admin_token else [])
        self.admin_trust_loopback = admin_trust_loopback


STATE_KEY = web.AppKey("state", _State)
RECEIVER_KEY = web.AppKey("receiver", Receiver)


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
    figures: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    durable: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    relay_import: Callable[[web.Request], Awaitable[web.Response]] | None = None,
) -> web.Application:
    """The ingest application over ``writer``. ``info`` adds sink facts to /_status (it may
    block: it runs on a worker thread); ``flush`` serves /_admin/flush to ``admin_token``
    and to loopback peers unless ``admin_trust_loopback`` is false (behind a local proxy
    every peer is loopback); ``metrics`` renders /_metrics (its body and content type);
    ``auth``, when it has credentials, guards every route but /_health; ``decoder`` decodes
    large bodies (by default on a thread); ``counters`` may be shared with the TCP source;
    ``site`` (a reserved ``/_`` prefix, an application) is served there, behind ``auth``, and
    without credentials to loopback peers only (it reads every stream);
    ``rules`` run on every decoded record and redact what goes to _rejected; ``figures``
    replaces the writer's, counters' and decoder's part of /_status (local_figures) when the
    sink runs several workers and they are summed, as ``durable`` replaces the writer's
    /_durable; ``relay_import`` answers /_admin/import where another process writes the
    imports (the primary of several workers)."""
    limits = limits or HttpLimits()
    receiver = Receiver(writer, limits, auth or Authenticator(), decoder or Decoder(0), counters or IngestCounters(),
                        rules)
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[_authenticate])
    app[WRITER_KEY] = writer
    app[RECEIVER_KEY] = receiver
    app[STATE_KEY] = _State(info, flush, metrics, admin_token, admin_trust_loopback, receiver, figures)
    app.router.add_post("/_admin/flush", _admin_flush)
    if imports is not None:
        app[IMPORTS_KEY] = imports
        app.router.add_post("/_admin/import", _admin_import)
    elif relay_import is not None:
        app.router.add_post("/_admin/import", _relayed(relay_import))
    app.router.add_get("/_durable", _durable_route(durable))
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
    refusal = None if exempt else state.receiver.unauthenticated(header) or _site_refusal(request, state)
    response = _response(refusal) if refusal else await handler(request)
    if state.receiver.stopping:
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


def _durable_route(durable: Callable[[], Awaitable[list[dict[str, Any]]]] | None) -> Any:
    async def durable_watermark(request: web.Request) -> web.Response:
        """How far each open segment is fsynced: `archiver cat --follow` shows records up to there."""
        marks = await durable() if durable else request.app[WRITER_KEY].durable_watermark()
        return web.json_response({"open": marks})

    return durable_watermark


async def _status(request: web.Request) -> web.Response:
    document = await _status_document(request.app)
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def local_figures(writer: SegmentWriter, counters: IngestCounters, decoder: Decoder) -> dict[str, Any]:
    """This process's part of /_status: its writer, counters and decoder."""
    return {
        **writer.status(),
        **counters.status(),
        "decode_workers": {"configured": decoder.workers, "restarts": decoder.restarts},
    }


async def _status_document(app: web.Application) -> dict[str, Any]:
    state: _State = app[STATE_KEY]
    figures = await state.figures() if state.figures else local_figures(app[WRITER_KEY], state.counters, state.decoder)
    info = await asyncio.get_running_loop().run_in_executor(None, state.info)
    return {"version": __version__, **figures, **info}


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


def _relayed(relay: Callable[[web.Request], Awaitable[web.Response]]) -> Any:
    async def relay_import(request: web.Request) -> web.Response:
        _admin_state(request)
        return await relay(request)

    return relay_import


def _admin_state(request: web.Request) -> _State:
    state: _State = request.app[STATE_KEY]
    if not _admin_allowed(request, state):
        where = "is for localhost, or " if state.admin_trust_loopback else ""
        raise web.HTTPForbidden(text=f"error: /_admin {where}needs admin.token as a Bearer token\n")
    return state


def _admin_allowed(request: web.Request, state: _State) -> bool:
    loopback = state.admin_trust_loopback and request.remote in LOOPBACK_PEERS
    return loopback or state.admin.allows(request.headers.get("Authorization"))


def _site_refusal(request: web.Request, state: _State) -> Answer | None:
    """A 403 for a request to the mounted site from beyond loopback while ``[auth]`` has no
    credentials: the site reads the whole archive, which ingest alone never gives away."""
    routed_to_site = len(request.match_info.apps) > 1  # the site is the one sub-application
    if not routed_to_site or state.receiver.auth.enabled or request.remote in LOOPBACK_PEERS:
        return None
    return Answer(403, f"error: {request.app[SITE_KEY]}/ answers only localhost while [auth] has no credentials: set [auth] "
                       f"tokens or basic, which its readers then send\n".encode())


async def _reserved(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"error: {request.path} is not a known reserved path\n")


async def _receive(request: web.Request) -> web.Response:
    if request.method == "GET" and not request.rel_url.raw_query_string:
        if request.match_info["stream"] == "":
            if SITE_KEY in request.app and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther(request.app[SITE_KEY] + "/")
            return await _status_page(request.app)
    incoming = Incoming(request.method, request.match_info["stream"], request.rel_url.raw_query_string,
                        request.remote, request.headers, _AiohttpBody(request))
    return _response(await request.app[RECEIVER_KEY].receive(incoming))


class _AiohttpBody:
    """An aiohttp request's body as receive.Body."""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    @property
    def content_length(self) -> int | None:
        return self._request.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._request.content.iter_any():
                yield chunk
        except (ClientPayloadError, ConnectionError) as err:  # cut short, or the client hung up
            raise BodyCut(str(err) or type(err).__name__) from None


def _response(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type,
                                                                          **answer.headers})


async def drain(app: web.Application, timeout: float) -> bool:
    """Wait up to ``timeout`` until no ingest request is in progress; True if none is. The
    listener is stopped first, so bodies still arriving are read to the end and answered
    (aiohttp's own shutdown stops reading at once and cancels them after its timeout). From
    now on every answer closes its connection, so a keep-alive client starts at most one more
    request on it rather than going on for the whole drain."""
    return await app[RECEIVER_KEY].drain(timeout)


async def _status_page(app: web.Application) -> web.Response:
    status = await _status_document(app)
    lines = [f"archiver {status['version']}: an archiving log sink", ""]
    lines.append(f"spool: {status['spool_bytes']} of {status['spool_limit']} bytes, fsync={status['fsync']}")
    for stream, segment in status["open"].items():
        lines.append(f"open   {stream:<24} {segment['segment']}  {segment['records']} records")
    lines.append("")
    lines.append("send: curl -X POST -d abc=def http://HOST:PORT/STREAM    details: GET /_status")
    return web.Response(text="\n".join(lines) + "\n")
