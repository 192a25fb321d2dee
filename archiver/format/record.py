"""The canonical record: what one line of a segment is, and the few names both the write and
the read side need (stream names, the ``_rejected`` stream, sources, the encoder)."""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from archiver.common.units import format_ts
from archiver.format.search_index import IndexPart, index_part

REJECTED_STREAM = "_rejected"
SOURCE_FORM = "httphandler"
SOURCE_JSON = "json"
SOURCE_TCP = "tcp"
SOURCE_IMPORT = "import"
_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Rejected:
    """Bytes that could not become a record, and why."""

    reason: str
    raw: bytes


@dataclass(frozen=True)
class Context:
    """What the receiver knows about a request apart from its body."""

    stream: str
    peer: str | None
    received: float
    received_ts: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_ts", format_ts(self.received))  # once per request


def valid_stream_name(name: str) -> bool:
    """``[A-Za-z0-9._-]``, 1-64 chars, not starting with ``_`` or ``.``: safe as a directory name."""
    return _STREAM_NAME.fullmatch(name) is not None


def encode_record(record: dict[str, Any]) -> bytes:
    """One segment line: compact JSON and a newline."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # integers beyond 64 bits or lone surrogates, which orjson refuses
        return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


@dataclass(frozen=True)
class Lines:
    """Encoded records of one stream, ready to append, with the statistics a sealed segment
    keeps (level counts, earliest and latest ``ts``) and its search index's part (None when
    unknown: sealing then reads the lines for it). Cheap to send between processes."""

    data: bytes
    count: int
    levels: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    index: IndexPart | None = None


def encode_lines(records: list[dict[str, Any]]) -> Lines:
    """Segment lines for canonical records, counted as they are encoded."""
    stamps = [record["ts"] for record in records]
    levels = Counter([record["level"] or "NOTSET" for record in records])
    return Lines(b"".join(map(encode_record, records)), len(records), dict(levels),
                 min(stamps, default=None), max(stamps, default=None), index_part(records))


def rejected_record(item: Rejected, ctx: Context, source: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The ``_rejected`` stream's record for raw bytes that could not be archived as records.

    The raw bytes are kept exactly: as text when they are UTF-8, else base64.
    """
    try:
        raw: str = item.raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        raw = b64encode(item.raw).decode("ascii")
        encoding = "base64"
    fields = {"reason": item.reason, "raw": raw, "raw_encoding": encoding, "raw_bytes": len(item.raw)}
    fields.update(meta)
    return {
        "ts": ctx.received_ts, "level": "ERROR", "logger": "archiver.rejected", "message": f"rejected: {item.reason}",
        "stream": REJECTED_STREAM, "source": source, "peer": ctx.peer, "received": ctx.received_ts, "fields": fields,
    }
