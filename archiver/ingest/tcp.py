"""The TCP source: newline-delimited JSON objects (syslog-ng network() with format-json,
rsyslog omfwd with a JSON template), one record a line.

Same records and durability as HTTP: at most a few reads are decoded ahead of the one being
appended and committed, in order, and no more is read until they are, so a slow disk or a full
spool slows the sender through TCP flow control instead of filling memory. A line that is not a
JSON object goes raw to ``_rejected``.

TCP has no acknowledgements: how a connection ends is the only answer a sender gets. The sink
closes a connection cleanly (FIN) only after it has read the sender's own end of stream and
made every line before it durable. Every other end is a reset (RST): a failed write; the sink
stopping before the sender's EOF had arrived; a stop that cannot finish within its timeout. At
a stop the sink reads what had arrived by then and nothing after. So a clean EOF tells a sender
that every line it sent is archived; a reset tells it that some may not be, and a sender that
sends them again may archive them twice.

Connections are read straight from their sockets, not through a read-ahead buffer: bytes the
sink has not asked for stay in the kernel, which discards them with the reset.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from dataclasses import dataclass

from archiver.format.record import REJECTED_STREAM, SOURCE_TCP, Context, Rejected, rejected_record
from archiver.ingest.counters import TCP, IngestCounters
from archiver.ingest.decoder import OFFLOAD_BYTES, Batch, Decoder, decode_tcp
from archiver.ingest.rules import NO_RULES, RuleSet
from archiver.spool.writer import SegmentWriter

log = logging.getLogger(__name__)
READ_SIZE = 256 * 1024
# Reads decoding (on the decode workers) while the one before them is appended and committed:
# the decoding of one connection's lines overlaps its fsyncs, and several workers share it.
AHEAD = 2
SPOOL_FULL_PAUSE = 0.5
# After accept() fails for want of descriptors or buffers, how long to wait before the next.
ACCEPT_PAUSE = 0.5
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class TcpSettings:
    stream: str = "tcp"
    stream_field: str = ""  # take each record's stream from this field when it is a valid name
    max_line_bytes: int = 1024 * 1024


class _Connection:
    """A sender's socket, and once the sink stops, how many of its bytes had arrived by then."""

    __slots__ = ("sock", "peer", "unread_at_stop")

    def __init__(self, sock: socket.socket, peer: str | None) -> None:
        self.sock = sock
        self.peer = peer
        self.unread_at_stop: int | None = None


class TcpSource:
    """One listener; ``start`` binds it, ``close`` stops accepting and ends open connections."""

    def __init__(
        self, writer: SegmentWriter, settings: TcpSettings, decoder: Decoder | None = None,
        counters: IngestCounters | None = None, rules: RuleSet = NO_RULES,
    ) -> None:
        """``counters`` may be shared with the HTTP source, so /_status counts both; ``rules``
        run on every decoded record and redact what goes to _rejected."""
        self.writer = writer
        self.rules = rules
        self.settings = settings
        self.decoder = decoder or Decoder(0)
        self.counters = counters or IngestCounters()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen; ``reuse_port`` lets the sink's other workers listen on the same port."""
        self._stopped = asyncio.get_running_loop().create_future()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=1024, reuse_port=reuse_port)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept(listener))
        address = listener.getsockname()
        return address[0], address[1]

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting and reading: each connection commits what it had read and what had
        arrived by now, then ends, cleanly if its sender's EOF was among it, else with a reset.
        Connections still committing after ``timeout`` seconds are reset. The segment writer
        and the decoder must stay open until this returns."""
        if self._stopped is None or self._stopped.done():
            return
        for conn in self._connections.values():
            conn.unread_at_stop = _unread(conn.sock)
        self._stopped.set_result(None)
        if self._accepting is not None:
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()  # the kernel resets connections it had not handed over yet
        if not self._connections:
            return
        _, late = await asyncio.wait(set(self._connections), timeout=timeout)
        if late:
            log.warning("%d tcp connection(s) still archiving after %g s: resetting them", len(late), timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _accept(self, listener: socket.socket) -> None:
        """Take connections until the sink stops. It accepts only when the listener is ready
        and never awaits with a connection in hand, so a stop cannot drop one unseen."""
        stopped = self._stopped_future()
        while not stopped.done():
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                await self._readable(listener)
                continue
            except ConnectionAbortedError:  # the client gave up before it was accepted
                continue
            except OSError as err:  # out of descriptors or buffers: wait for some to free
                log.warning("tcp: cannot accept connections: %s; retrying", err.strerror)
                await asyncio.wait([stopped], timeout=ACCEPT_PAUSE)
                continue
            sock.setblocking(False)
            conn = _Connection(sock, address[0] if address else None)
            task = asyncio.create_task(self._serve(conn))
            self._connections[task] = conn
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self._connections[task]

    async def _serve(self, conn: _Connection) -> None:
        finished = False
        try:
            finished = await self._receive(conn)
        except OSError as err:
            log.info("tcp connection from %s ended: %s", conn.peer, err)
        except Exception:  # noqa: BLE001 - the sender is told by the reset; the sink goes on
            log.exception("tcp connection from %s failed", conn.peer)
        finally:
            _end(conn.sock, clean=finished)

    async def _receive(self, conn: _Connection) -> bool:
        """Archive the connection's lines. True once the sender's EOF is read and every line
        before it is durable; False when the sink stops first."""
        pending = b""
        ahead: collections.deque[asyncio.Task[_Decoded]] = collections.deque()
        try:
            while True:
                chunk = await self._next_block(conn, ahead)
                if chunk is None:
                    if pending.strip():  # the rest of this line was never read: kept as it is
                        ahead.append(self._kept("line unfinished when the sink stopped", pending, "incomplete"))
                    await self._settle(ahead, conn.peer, every=True)
                    return False
                if not chunk:
                    if pending.strip():  # a last line without its newline is whole at EOF
                        ahead.append(asyncio.create_task(self._decode(pending + b"\n", conn.peer)))
                    await self._settle(ahead, conn.peer, every=True)
                    return True
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    ahead.append(asyncio.create_task(self._decode(data[:cut], conn.peer)))
                if len(pending) > self.settings.max_line_bytes:
                    ahead.append(self._kept("line longer than max_line_bytes", pending, "line_too_long"))
                    pending = b""
                if len(ahead) > AHEAD:
                    await self._settle(ahead, conn.peer)
        finally:
            for task in ahead:
                task.cancel()

    async def _next_block(self, conn: _Connection, ahead: collections.deque[asyncio.Task[_Decoded]]) -> bytes | None:
        """The sender's next bytes, b"" at its EOF; None once the sink has stopped and every
        byte that had arrived by then is read, unless the EOF had arrived too, or at once
        when it stops with the spool full. Before it waits (for bytes, or for spool space),
        the reads still ``ahead`` are made durable: a quiet sender's lines do not wait for
        more to follow."""
        while True:
            if self.writer.over_limit():  # leave the bytes unread: flow control holds the sender
                if conn.unread_at_stop is not None:
                    return None
                if ahead:
                    await self._settle(ahead, conn.peer, every=True)
                    continue
                await asyncio.wait([self._stopped_future()], timeout=SPOOL_FULL_PAUSE)
                continue
            if conn.unread_at_stop is not None:
                return _read_arrived(conn)
            try:
                return conn.sock.recv(READ_SIZE)
            except BlockingIOError:
                if ahead:
                    await self._settle(ahead, conn.peer, every=True)
                    continue
                await self._readable(conn.sock)

    async def _readable(self, sock: socket.socket) -> None:
        """Wait until ``sock`` has something to read (bytes, an EOF, a connection to accept),
        or the sink stops."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _resolve, ready)
        try:
            await asyncio.wait([ready, self._stopped_future()], return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(sock.fileno())

    def _stopped_future(self) -> asyncio.Future[None]:
        assert self._stopped is not None, "start() first"
        return self._stopped

    async def _decode(self, data: bytes, peer: str | None) -> _Decoded:
        ctx = Context(self.settings.stream, peer, time.time())
        try:
            batch = await self.decoder.run(
                len(data) >= OFFLOAD_BYTES, decode_tcp, data, ctx, self.settings.stream_field, self.rules
            )
        except Exception as err:  # a decoding bug must not lose the lines: keep them raw
            log.exception("decoding %d bytes from %s failed", len(data), peer)
            return _Decoded(self._rejected(f"could not be decoded ({type(err).__name__})", data), "decoder_failed",
                            len(data))
        return _Decoded(batch, "record", len(data))

    def _kept(self, reason: str, raw: bytes, counted_as: str) -> asyncio.Task[_Decoded]:
        """Bytes that are not lines to decode, queued in their place among the decoded ones."""
        async def kept() -> _Decoded:
            return _Decoded(self._rejected(reason, raw), counted_as, 0)

        return asyncio.create_task(kept())

    def _rejected(self, reason: str, raw: bytes) -> Batch:
        """Bytes kept in _rejected as they are, but for what the rules redact."""
        return Batch(SOURCE_TCP, {}, self.rules.redact_rejected([Rejected(reason, raw)]))

    async def _settle(self, ahead: collections.deque[asyncio.Task[_Decoded]], peer: str | None, *,
                      every: bool = False) -> None:
        """Append the oldest decoded read (all of them with ``every``) and the ones after it
        that are decoded already, in order, then commit them together."""
        settled: list[_Decoded] = []
        while ahead and (not settled or every or ahead[0].done()):
            decoded = await ahead[0]
            ahead.popleft()
            self._write(decoded.batch, peer)
            settled.append(decoded)
        if not settled:  # every read before was committed when it was settled
            return
        await self.writer.commit()
        for decoded in settled:
            for stream, lines in decoded.batch.streams.items():
                self.counters.received(TCP, stream, lines.count, 0)
            self.counters.reject(TCP, decoded.counted_as, len(decoded.batch.rejected))
            self.counters.drop(TCP, decoded.batch.dropped)
            if decoded.raw_bytes:
                self.counters.received(TCP, self.settings.stream, 0, decoded.raw_bytes)

    def _write(self, batch: Batch, peer: str | None) -> None:
        for stream, lines in batch.streams.items():
            self.writer.write_lines(stream, lines)
        ctx = Context(self.settings.stream, peer, time.time())
        meta = {"target_stream": self.settings.stream, "transport": "tcp"}
        self.writer.write_records(REJECTED_STREAM, [rejected_record(item, ctx, "tcp", meta) for item in batch.rejected])


@dataclass(frozen=True)
class _Decoded:
    """One read's batch, how its rejected bytes are counted, and its size as read."""

    batch: Batch
    counted_as: str
    raw_bytes: int


def _unread(sock: socket.socket) -> int:
    """Bytes that have arrived on ``sock`` and are not read yet (none once it is closed: a
    connection ending as the sink stops)."""
    if sock.fileno() < 0:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])
    except OSError:  # reset by the sender: reading will say so
        return 0


def _read_arrived(conn: _Connection) -> bytes | None:
    """After a stop: the next of the bytes that had arrived by then; once they are read, b"" if
    the sender's EOF follows, else None (whatever came later stays unread)."""
    assert conn.unread_at_stop is not None
    try:
        if conn.unread_at_stop == 0:
            return b"" if conn.sock.recv(1, socket.MSG_PEEK) == b"" else None
        chunk = conn.sock.recv(min(READ_SIZE, conn.unread_at_stop))
    except BlockingIOError:
        return None
    conn.unread_at_stop -= len(chunk)
    return chunk


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _end(conn: socket.socket, *, clean: bool) -> None:
    """Close ``conn``: a FIN when ``clean``, else a reset, so the sender cannot take it for one."""
    if not clean:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    conn.close()
