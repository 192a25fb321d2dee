"""The HTTP hot path: an asyncio Protocol over httptools (llhttp) for the ingest routes.

A record sent the HTTPHandler way costs a connection, a request and an answer; through
aiohttp most of that CPU was the framework's (request objects, routing, middleware, the
payload stream), more than the decoding and the append together (docs/benchmarks.md). This
protocol parses the request itself and gives ``Receiver`` the few things ingest needs. Every
connection starts here; at a request line for any other route (``/_...``, the status page,
other methods, or one too long to decide) the connection is handed, with the bytes it has
sent, to aiohttp's own protocol for the application, and stays there. So aiohttp keeps every
route but the ingest ones, and its parser judges whatever this one does not take.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from typing import AsyncIterator
from urllib.parse import unquote

import httptools
from aiohttp import web

from archiver.ingest.receive import Answer, BodyCut, Incoming, Receiver, is_ingest_route

log = logging.getLogger(__name__)
# A body buffered beyond this stops reading from the socket until ingest takes it.
HIGH_WATER = 256 * 1024
# Headers allowed after the request line: aiohttp's default.
MAX_HEADERS = 128
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# How long the rest of a body answered early (a 401, a 503) is read and dropped before the
# connection closes: closing with unread bytes resets it, and the client may lose the answer.
LINGER = 10.0
# The headers ingest reads; the others are parsed, counted and dropped.
KEPT_HEADERS = frozenset({b"content-type", b"content-encoding", b"content-length", b"authorization", b"expect"})
_STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}" for status in HTTPStatus}
MISROUTED = "send requests for other routes on a connection of their own"


class HeadRefused(ValueError):
    """A request line or header over the limits; its message is the 400's reason."""


class HotPath:
    """The connections of one listener: the protocol factory, their count for the listener's
    bound, and closing idle ones once the stop's drain ends (as aiohttp's cleanup does its own)."""

    def __init__(self, receiver: Receiver, server: web.Server, max_line_bytes: int) -> None:
        self.receiver = receiver
        self.server = server  # aiohttp's protocol factory, for connections handed over
        self.max_line_bytes = max_line_bytes
        self.connections: set[IngestProtocol] = set()
        receiver.on_drained.append(self.close_idle)

    def __call__(self) -> "IngestProtocol":
        return IngestProtocol(self)

    def close_idle(self) -> None:
        """Close every connection with no request started; the others close after their answer."""
        for connection in list(self.connections):
            connection.close_if_idle()


class _Body:
    """A request body as llhttp delivers it, with flow control: receive.Body."""

    def __init__(self, protocol: "IngestProtocol", content_length: int | None, expect_continue: bool) -> None:
        self.content_length = content_length
        self._protocol = protocol
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._cut: str | None = None
        self._expect_continue = expect_continue
        self._waiter: asyncio.Future[None] | None = None
        self._discard = False

    def discard(self) -> None:
        """Answered already: what is buffered or still arrives is dropped."""
        self._discard = True
        self._chunks.clear()
        self._buffered = 0
        self._protocol.resume_reading()

    def feed(self, data: bytes) -> None:
        if self._discard:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._protocol.pause_reading()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def cut(self, reason: str) -> None:
        if not self._done:
            self._cut = reason
            self._done = True
            self._wake()

    @property
    def complete(self) -> bool:
        return self._done and self._cut is None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._expect_continue and not self._done:
            self._expect_continue = False
            self._protocol.write(CONTINUE)
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER // 2:
                    self._protocol.resume_reading()
                yield chunk
            if self._done:
                if self._cut is not None:
                    raise BodyCut(self._cut)
                return
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None


class _Request:
    """A request being parsed or waiting its turn on the connection."""

    __slots__ = ("url", "route", "headers", "header_count", "open_line", "body", "body_fed", "keep_alive", "method",
                 "failure")

    def __init__(self, route: tuple[str, str] | None) -> None:
        self.url = bytearray()
        self.route = route  # (path, query) when read from the request line before parsing
        self.headers: dict[str, str] = {}
        self.header_count = 0
        self.open_line = 0  # bytes of the head line not yet ended
        self.body: _Body | None = None
        self.body_fed = False  # llhttp gave body bytes or ended a chunk during this read
        self.keep_alive = False
        self.method = ""
        self.failure: str | None = None  # the parser refused it: answered with a 400 in its turn


class IngestProtocol(asyncio.Protocol):
    """One connection: requests parsed by httptools, answered in order by ``Receiver``."""

    def __init__(self, hot: HotPath) -> None:
        self._hot = hot
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._head = bytearray()  # a new request's first bytes until its request line is whole
        self._route: tuple[str, str] | None = None  # the route _decided found, for the next request
        # Bytes of a request since its start, until its headers are parsed: an upgrade request
        # (Upgrade: h2c from curl --http2) goes to aiohttp whole, since llhttp stops at its body.
        self._request_bytes: bytearray | None = None
        self._upgrading = False
        self._lingering = False  # answered, closing once the rest of the body is read
        self._handover: bytearray | None = None  # bytes for aiohttp once the answers owed are sent
        self._broken = False  # unparseable input: the answer owed closes the connection
        self._parsing: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._remote: str | None = None
        self._paused = False
        self._closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self._hot.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._hot.connections.discard(self)
        for request in (self._parsing, *self._queue):
            if request is not None and request.body is not None:
                request.body.cut("the client closed the connection")

    def data_received(self, data: bytes) -> None:
        if self._handover is not None:
            self._handover += data
            return
        if self._broken:
            return
        if self._parsing is None:
            decided = self._decided(data)
            if decided is None:
                return
            data = decided
        elif self._request_bytes is not None:
            self._request_bytes += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as err:
            cause = err.__context__  # what a callback raised
            self._fail(str(cause) if isinstance(cause, HeadRefused) else f"bad request: {err}")
        else:
            self._count_open_line(data)

    def _count_open_line(self, data: bytes) -> None:
        """llhttp hands a header (or a chunked body's trailer) over only once it ends, buffering
        it until then: a line still open after this read is counted here, and refused once over
        the limit."""
        request = self._parsing
        if request is None:
            return
        if request.body is None:
            newline = data.rfind(b"\n")
            # The count is high only when this read also held the end of a previous request's
            # body: by the bytes of it after its last newline.
            request.open_line = request.open_line + len(data) if newline < 0 else len(data) - newline - 1
        elif request.body_fed:  # the line, if any, began in this read: counted from the next
            request.body_fed, request.open_line = False, 0
        else:
            request.open_line += len(data)
        if request.open_line > self._hot.max_line_bytes:
            self._fail("a header is longer than server.max_line_bytes")

    def _decided(self, data: bytes) -> bytes | None:
        """At a request's start: the bytes to parse here when the request is this protocol's,
        else None (its request line is not whole yet, or it went to aiohttp with every byte)."""
        searched = max(0, len(self._head) - 1)  # a \r\n may straddle two reads
        self._head += data
        end = self._head.find(b"\r\n", searched)
        if end < 0 and len(self._head) <= self._hot.max_line_bytes:
            return None
        head, self._head = bytes(self._head), bytearray()
        method, _, target = head[:end].partition(b" ")
        path, query = _route(target.rpartition(b" ")[0])
        if end < 0 or not path.startswith("/") or not is_ingest_route(method.decode("latin-1"), path[1:], query):
            self._hand_over(head)
            return None
        self._route = (path, query)
        self._request_bytes = bytearray(head)
        return head

    def _upgrade(self) -> None:
        """llhttp stopped after an upgrade request's headers: aiohttp gets the whole request."""
        data, self._request_bytes = self._request_bytes, None
        if not self._upgrading or data is None:  # pipelined: its first bytes are gone
            self._fail("protocol upgrades are not served on a pipelined request")
            return
        self._upgrading = False
        self._hand_over(bytes(data))

    def _hand_over(self, data: bytes) -> None:
        """The rest of this connection goes to aiohttp, starting with ``data``. Answers this
        protocol still owes go out first."""
        if self._queue or self._task is not None:
            self.pause_reading()
            self._handover = bytearray(data)
            return
        assert self._transport is not None
        self._hot.connections.discard(self)
        handler = self._hot.server()
        self._transport.set_protocol(handler)
        handler.connection_made(self._transport)
        if self._paused:
            self._transport.resume_reading()
        if data:
            handler.data_received(data)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._parsing = _Request(self._route)
        self._route = None

    def on_url(self, url: bytes) -> None:
        assert self._parsing is not None
        self._parsing.url += url
        if len(self._parsing.url) > self._hot.max_line_bytes:
            raise HeadRefused("the request line is too long (server.max_line_bytes)")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.header_count += 1
        if request.header_count > MAX_HEADERS:
            raise HeadRefused(f"too many headers (more than {MAX_HEADERS})")
        if len(name) + len(value) > self._hot.max_line_bytes:
            raise HeadRefused("a header is longer than server.max_line_bytes")
        name = name.lower()
        if name in KEPT_HEADERS:
            request.headers[name.decode("latin-1")] = value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        if self._parser.should_upgrade():
            self._upgrading = True
            return
        self._request_bytes = None
        request.method = self._parser.get_method().decode("latin-1")
        request.keep_alive = self._parser.should_keep_alive()
        length = request.headers.get("content-length")
        expect = request.headers.get("expect", "").lower() == "100-continue"
        request.body = _Body(self, int(length) if length and length.isdigit() else None, expect)
        self._enqueue(request)

    def on_body(self, data: bytes) -> None:
        assert self._parsing is not None and self._parsing.body is not None
        self._parsing.body_fed = True
        self._parsing.body.feed(data)

    def on_chunk_complete(self) -> None:
        assert self._parsing is not None
        self._parsing.body_fed = True

    def on_message_complete(self) -> None:
        assert self._parsing is not None
        if self._parsing.body is not None:  # None: an upgrade request, handed over whole
            self._parsing.body.finish()
        self._parsing = None
        if self._lingering:
            self._close()

    # answering

    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        """Answer the queued requests in order; a request for another route that arrived
        meanwhile is handed over once they are answered. After a parser error the last answer
        closes the connection."""
        receiver = self._hot.receiver
        try:
            while self._queue and not self._closed:
                request = self._queue[0]
                if request.failure is not None:
                    self._queue.popleft()
                    receiver.counters.responses[400] += 1
                    self._answer(Answer(400, f"error: {request.failure}\n".encode()), keep_alive=False)
                    break
                assert request.body is not None
                answer = await self._respond(request)
                self._queue.popleft()
                # A connection whose body was answered before it was read to its end closes, once
                # that end has arrived.
                complete = request.body.complete
                request.body.discard()
                last = self._broken and not self._queue
                self._answer(answer, request.keep_alive and complete and not receiver.stopping and not last,
                             linger=not complete and not self._broken)
        except Exception:
            log.exception("answering a request failed")
            self._answer(Answer(500, b"error: internal error\n"), keep_alive=False)
        finally:
            self._task = None
        if self._handover is not None and not self._closed:
            data, self._handover = self._handover, None
            self._hand_over(bytes(data))

    async def _respond(self, request: _Request) -> Answer:
        receiver = self._hot.receiver
        refusal = receiver.unauthenticated(request.headers.get("authorization"))
        if refusal is not None:
            return refusal
        assert request.body is not None
        path, query = request.route or _route(bytes(request.url))
        incoming = Incoming(request.method, path.removeprefix("/"), query, self._remote, request.headers, request.body)
        if path.startswith("/") and is_ingest_route(request.method, incoming.path, query):
            return await receiver.receive(incoming)
        # pipelined behind an ingest request: the bytes for aiohttp are already parsed
        return await receiver.refuse(incoming, MISROUTED)

    def _answer(self, answer: Answer, keep_alive: bool, linger: bool = False) -> None:
        if self._closed:
            return
        lines = [_STATUS_LINES[answer.status], f"Content-Type: {answer.content_type}",
                 f"Content-Length: {len(answer.body)}"]
        lines += [f"{name}: {value}" for name, value in answer.headers.items()]
        if not keep_alive:
            lines.append("Connection: close")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + answer.body)
        if linger:
            self._lingering = True
            asyncio.get_running_loop().call_later(LINGER, self._close)
        elif not keep_alive:
            self._close()

    def _fail(self, reason: str) -> None:
        """Input llhttp refuses; nothing more is read. The requests before it are answered in
        order, then a body being read is answered as cut (kept in _rejected as incomplete), or
        a request whose head broke gets the parser's 400; that last answer closes the connection."""
        self._broken = True
        self.pause_reading()
        request, self._parsing = self._parsing or _Request(None), None
        if request.body is None:
            request.failure = reason
            self._enqueue(request)
        else:
            request.body.cut(reason)
            if self._task is None and not self._queue:  # it was answered before its body ended
                self._close()

    def write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def close_if_idle(self) -> None:
        if self._task is None and not self._queue:
            self._close()

    def pause_reading(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Not while a hand-over waits: what arrives then is aiohttp's (data_received keeps it)."""
        if self._paused and self._transport is not None and not self._closed and self._handover is None:
            self._paused = False
            self._transport.resume_reading()


def _decoded_path(path: bytes) -> str:
    """The path as aiohttp's router matches it: percent-escapes decoded as UTF-8."""
    text = path.decode("latin-1")
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _route(target: bytes) -> tuple[str, str]:
    """The decoded path and the raw query of a request's target."""
    path, _, query = target.partition(b"#")[0].partition(b"?")
    return _decoded_path(path), query.decode("latin-1")

