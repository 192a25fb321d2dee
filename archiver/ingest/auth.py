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
        accepted += ["Basic " + base64.b64encode(entry.encode()).decode("ascii") for entry in basic]
        self._accepted = [value.encode() for value in accepted]

    @property
    def enabled(self) -> bool:
        return bool(self._accepted)

    def allows(self, header: str | None) -> bool:
        """Every candidate is compared, match or not, so timing says nothing about which."""
        offered = (header or "").encode()
        found = False
        for candidate in self._accepted:
            found |= hmac.compare_digest(offered, candidate)
        return found
