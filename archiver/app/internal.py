"""How the primary and its workers talk (server.workers > 1): HTTP on 127.0.0.1, each side
on a port of its own chosen at start, every request carrying the run's random token. Loopback
HTTP rather than a Unix socket: a socket's path under a deep data dir can pass the 108 bytes
allowed, and aiohttp already serves and asks on both sides."""

from __future__ import annotations

import http.client
import secrets
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

TOKEN_HEADER = "X-Archiver-Worker-Token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_hex(16)


class InternalServer:
    """An internal API: ``routes`` maps "METHOD /path" to its handler."""

    def __init__(self, token: str, routes: dict[str, Handler]) -> None:
        self.token = token
        app = web.Application(middlewares=[self._check_token])
        for route, handler in routes.items():
            method, path = route.split(" ", 1)
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), self.token):
            raise web.HTTPForbidden()
        return await handler(request)

    async def start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        await self._runner.cleanup()


class Peer:
    """The other side's internal API at ``url``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[bytes, str]:
        """The answer's body and content type; raises on anything but 200."""
        data = None if body is None else orjson.dumps(body)
        async with self._client().request(method, self.url + path, data=data, headers={TOKEN_HEADER: self.token}) as answer:
            content = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{method} {path}: {answer.status} {content[:200]!r}")
            return content, answer.headers.get("Content-Type", "")

    async def forward(self, method: str, path: str, body: bytes) -> web.Response:
        """A client's request relayed as it is: the answer, whatever its status."""
        async with self._client().request(method, self.url + path, data=body, headers={TOKEN_HEADER: self.token}) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                headers={"Content-Type": answer.headers.get("Content-Type", "text/plain")})

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        content, _ = await self.call(method, path, body)
        return orjson.loads(content)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    def json_blocking(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        """For a thread that must wait for the answer (a seal waits for its manifest row)."""
        where = urlsplit(self.url)
        connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=timeout)
        try:
            connection.request(method, path, None if body is None else orjson.dumps(body), {TOKEN_HEADER: self.token})
            answer = connection.getresponse()
            content = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{method} {path}: {answer.status} {content[:200]!r}")
            return orjson.loads(content)
        finally:
            connection.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def json_response(document: Any) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type="application/json")
