"""Who may read the site `archiver web` serves. Without a token it binds loopback only, and
anyone on this host may read it; with one, every request must present the token, from
loopback too (``Authorization: Bearer <token>``, or Basic with the token as password, which a
browser asks for). The running sink guards the site with its own ``[auth]`` instead, and
without credentials answers loopback peers only (ingest/http.py)."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from aiohttp import web

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK


def token_guard(token: str) -> Any:
    """A middleware letting through only requests that carry ``token``."""
    expected = token.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not _presented(request.headers.get("Authorization", ""), expected):
            return web.Response(status=401, text="error: this archive needs its token\n",
                                headers={"WWW-Authenticate": 'Basic realm="archiver web"'})
        return await handler(request)

    return guard


def _presented(header: str, expected: bytes) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), expected)
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, expected)
    return False
