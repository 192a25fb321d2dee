"""Client authentication for the HTTP source: bearer tokens and Basic credentials (what
``HTTPHandler(credentials=(user, password))`` sends), compared in constant time."""

from __future__ import annotations

import base64
import hmac
from typing import Iterable


class Authenticator:
    """Accepts an ``Authorization`` header equal to one of the configured ones."""

    def __init__(self, tokens: Iterable[str] = (), basic: Iterable[str] = ()) -> None:
        accepted = [f"Bearer {token}" for token in tokens]
        accepted += ["Basic " + base64.b64encode(_as_bytes(entry)).decode("ascii") for entry in basic]
        self._accepted = [_as_bytes(value) for value in accepted]

    @property
    def enabled(self) -> bool:
        return bool(self._accepted)

    def allows(self, header: str | None) -> bool:
        """Every candidate is compared, match or not, so timing says nothing about which."""
        offered = _as_bytes(header or "")
        found = False
        for candidate in self._accepted:
            found |= hmac.compare_digest(offered, candidate)
        return found


def _as_bytes(text: str) -> bytes:
    """The bytes behind ``text``. aiohttp decodes header values, and Python the environment,
    as UTF-8 with ``surrogateescape``: a value that is not UTF-8 holds lone surrogates, which a
    plain ``encode()`` refuses (a 500 instead of a 401). Escaped ones turn back into the bytes
    sent; any other lone surrogate is kept as UTF-8-like bytes that match no credential."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
