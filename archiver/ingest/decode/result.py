"""What decoding one body gives back: records, rejected parts, or an error for the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archiver.format.record import Rejected


class DecodeError(ValueError):
    """The body as a whole cannot be decoded; ``str(err)`` says why, for the client."""


class BodyTooLarge(DecodeError):
    """The body decompresses to more than the configured limit."""


@dataclass
class Decoded:
    """The outcome of decoding one request body or query string."""

    kind: str  # SOURCE_FORM or SOURCE_JSON: how the client should be answered
    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
