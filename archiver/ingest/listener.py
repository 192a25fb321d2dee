"""The HTTP listener: an aiohttp site that holds a bounded number of connections, each
served first by the hot path (hotpath.py), which hands aiohttp the routes it does not serve.

aiohttp's TCPSite accepts every connection the kernel offers. When clients arrive faster than
the sink answers (a burst, a slow disk), each waiting connection costs the sink memory (about
12 KB) and a descriptor, and a few thousand of them slow every other request, so the backlog
feeds itself until the descriptors run out (bench/memory.py showed 20,000 connections and
360 MB). At ``max_connections`` this site stops accepting instead: new clients wait in the
kernel's listen queue, which costs the sink nothing, and are taken as others finish.
Running out of descriptors is survived the same way, with one log line, not one per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time

from aiohttp import web

from archiver.ingest.hotpath import HotPath
from archiver.ingest.http import RECEIVER_KEY

log = logging.getLogger(__name__)

# How often a full listener looks again for a free slot.
FULL_PAUSE = 0.005
# After the process runs out of descriptors (or the kernel of buffers), how long to wait.
EXHAUSTED_PAUSE = 0.5
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN}


class _Listening(asyncio.AbstractServer):
    """What aiohttp's runner expects of a site's server: its sockets, and close()."""

    def __init__(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self.sockets = (sock,)
        self._task = task

    def close(self) -> None:
        self._task.cancel()
        self.sockets[0].close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._task.get_loop()

    def is_serving(self) -> bool:
        return not self._task.done()

    async def start_serving(self) -> None:
        """Serving starts with the site."""

    async def serve_forever(self) -> None:
        await self._task

    async def wait_closed(self) -> None:
        await asyncio.gather(self._task, return_exceptions=True)


class BoundedSite(web.BaseSite):
    """A TCP site with at most ``max_connections`` connections open (or being set up), for
    an app of http.create_app run by http.make_runner with the same ``max_line_bytes``.
    ``reuse_port`` lets several processes listen on the port (the kernel spreads connections)."""

    __slots__ = ("_host", "_port", "_max_connections", "_max_line_bytes", "_opening", "_tasks", "_last_warning",
                 "_reuse_port")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, max_connections: int, max_line_bytes: int,
        ssl_context: ssl.SSLContext | None = None, backlog: int = 1024, reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._max_line_bytes = max_line_bytes
        self._opening = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family, backlog=self._backlog,
                                    reuse_port=self._reuse_port)
        sock.setblocking(False)
        self._server = _Listening(sock, asyncio.create_task(self._accept(sock)))

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None and isinstance(self._runner, web.AppRunner)
        hot = HotPath(self._runner.app[RECEIVER_KEY], server, self._max_line_bytes)
        while True:
            while len(server.connections) + len(hot.connections) + self._opening >= self._max_connections:
                await asyncio.sleep(FULL_PAUSE)
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as err:
                if err.errno in _GONE:
                    continue
                if err.errno not in _EXHAUSTED:
                    raise
                self._warn(f"cannot accept connections: {err.strerror}; retrying")
                await asyncio.sleep(EXHAUSTED_PAUSE)
                continue
            self._opening += 1
            task = asyncio.create_task(self._connect(conn, hot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, hot: HotPath) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(hot, conn, ssl=self._ssl_context)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as err:
            log.debug("connection set-up failed: %s", err)
            conn.close()
        finally:
            self._opening -= 1

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning(message)
