"""The search index of a segment: what lets a reader skip segments that cannot match, without
downloading them. Pure: building from a segment's lines, encoding, decoding, asking. No I/O.

A ``--grep`` query is a case-sensitive substring of the message, so the index holds every
trigram (3 consecutive bytes) of the UTF-8 messages: a message that contains the query
contains each of its trigrams, so the index can only say "maybe" too often, never "no" for a
segment that holds a match. Queries shorter than a trigram are not answered (the segment is
read). Trigrams are held exactly, grouped by their first two bytes: messages with UUIDs,
addresses and numbers fill few groups, densely, and compress to under a KiB. The index also
names the segment's loggers (up to ``LOGGERS_MAX``) and levels.

Encoding, version 1 (docs/format.md, "Search index")::

    b"ARCHIVER-INDEX" 0x01 | u32 big-endian length of the JSON header | JSON header | zlib(body)
    body = pairs (8,192 bytes: a bit for each first two bytes b0 b1) | 32 bytes a set pair

The header is ``{"levels": [...], "loggers": [...] or null, "grams": 3}``; ``null`` loggers
means too many to list (any logger may match). Bit ``n`` of a bitmap is bit ``n & 7`` of its
byte ``n >> 3``. Bit ``p = b0 << 8 | b1`` of ``pairs`` is set when a trigram starts with
those bytes; the set pairs' 32-byte bitmaps follow in order of ``p``, bit ``b2`` set when
the trigram ``b0 b1 b2`` occurs in some message.
"""

from __future__ import annotations

import fnmatch
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import numpy as np
import orjson

MAGIC = b"ARCHIVER-INDEX"
VERSION = 1
GRAM = 3
LOGGERS_MAX = 256
_PAIRS_BYTES = 8192
_CHUNK_BYTES = 32


class SearchIndexError(ValueError):
    """Bytes that are not a search index this version reads: the segment is read instead."""


# A batch with at least this much message text carries its trigrams as codes; a smaller one
# its text, folded into codes with others' once the builder holds FOLD_BYTES of it: each numpy
# call costs microseconds however little it is given, more than a single record's work.
CODES_FROM = 16 * 1024
FOLD_BYTES = 64 * 1024
# Codes a segment's parts may hold (4 bytes each) until it is sealed. They are not merged as
# they come, which would sort on the sink's event loop (200 ms for 4M codes); a segment whose
# messages have more distinct trigrams than that drops its parts and is indexed as it is sealed.
PARTS_MAX = 1 << 21


@dataclass(frozen=True)
class IndexPart:
    """What a batch of records adds to its segment's index, worked out where the records are
    encoded (a decode worker, for bulk input), so sealing need not parse the segment again:
    the batch's loggers (None when more than LOGGERS_MAX) and its messages' trigrams, as
    sorted codes or, for a small batch, as the messages' text."""

    loggers: frozenset[str] | None
    text: bytes = b""
    codes: bytes = b""


def index_part(records: list[dict[str, Any]]) -> IndexPart:
    """The index part of canonical ``records``."""
    names = frozenset([str(record.get("logger") or "") for record in records])
    loggers = None if len(names) > LOGGERS_MAX else names
    text = _messages(records)
    if len(text) >= CODES_FROM:
        return IndexPart(loggers, codes=trigram_codes(text).tobytes())
    return IndexPart(loggers, text=text)


def _messages(records: list[dict[str, Any]]) -> bytes:
    # Joined with a newline: the trigrams across two messages are extra "maybe"s, never a miss.
    return encode("\n".join(m for m in (record.get("message") for record in records) if isinstance(m, str)))


def trigram_codes(text: bytes) -> np.ndarray:
    """The distinct trigrams of ``text`` as sorted 24-bit codes: numpy sorts them at a few ns a
    byte, where a Python set cost more than the compression. (numpy is imported where it is
    used: readers, the CLI and a decode worker that is sent no bulk input never need it.)"""
    import numpy as np

    data = np.frombuffer(text, dtype=np.uint8).astype(np.uint32)
    return distinct(data[:-2] << 16 | data[1:-1] << 8 | data[2:])


def distinct(codes: np.ndarray) -> np.ndarray:
    """``codes`` sorted, each once: numpy's own unique is five times slower on varied codes."""
    import numpy as np

    codes = np.sort(codes)
    keep = np.empty(len(codes), dtype=np.bool_)
    keep[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    return codes[keep]


class IndexBuilder:
    """Collects a segment's trigrams, loggers and levels: from index parts as its batches are
    written, or from its lines as they are sealed."""

    def __init__(self) -> None:
        # Sorted codes per batch (the cost follows the segment's size: a table of every possible
        # trigram cost 10 ms a segment, however small), and text not yet folded into codes.
        self._grams: list[np.ndarray] = []
        self._held = 0
        self._text: list[bytes] = []
        self._text_bytes = 0
        self._loggers: set[str] | None = set()
        self._levels: set[str] = set()
        self.usable = True  # False once a line could not be read: no index beats a wrong one

    def add_block(self, block: bytes) -> None:
        """Index the whole JSON-record lines of ``block``."""
        if not self.usable:
            return
        lines = [line for line in block.split(b"\n") if line]
        try:
            records = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:  # lone surrogates, which only the json module reads
            try:
                records = list(map(json.loads, lines))
            except ValueError:
                self.usable = False
                return
        try:
            self.add_records(records)
        except (AttributeError, TypeError):  # a line that is JSON but not a record
            self.usable = False

    def add_part(self, part: IndexPart, levels: Iterable[str]) -> bool:
        """Index a batch from its index part and the levels it holds; False once the parts
        hold PARTS_MAX codes: the builder is then to be dropped."""
        self._levels.update(levels)
        self._add_loggers(part.loggers)
        if part.codes:
            import numpy as np

            self._add_codes(np.frombuffer(part.codes, dtype=np.uint32))
        if part.text:
            self._add_text(part.text)
        return self._held < PARTS_MAX

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Index records parsed from a segment's lines."""
        self._levels.update(str(record.get("level") or "NOTSET") for record in records)
        self._add_loggers({str(record.get("logger") or "") for record in records})
        self._add_text(_messages(records))

    def _add_loggers(self, loggers: Iterable[str] | None) -> None:
        if self._loggers is None:
            return
        if loggers is None:
            self._loggers = None
            return
        self._loggers.update(loggers)
        if len(self._loggers) > LOGGERS_MAX:
            self._loggers = None

    def _add_text(self, text: bytes) -> None:
        self._text.append(text)
        self._text_bytes += len(text)
        if self._text_bytes >= FOLD_BYTES:
            self._fold()

    def _fold(self) -> None:
        if self._text:
            text = b"\n".join(self._text)
            self._text, self._text_bytes = [], 0
            self._add_codes(trigram_codes(text))

    def _add_codes(self, codes: np.ndarray) -> None:
        self._grams.append(codes)
        self._held += len(codes)

    def to_bytes(self) -> bytes | None:
        """The encoded index, or None when a line could not be read."""
        if not self.usable:
            return None
        import numpy as np

        self._fold()
        grams = distinct(np.concatenate(self._grams)) if self._grams else np.zeros(0, dtype=np.uint32)
        pairs, row_of = np.unique(grams >> 8, return_inverse=True)
        present = np.zeros(1 << 16, dtype=np.bool_)
        present[pairs] = True
        chunks = np.zeros((len(pairs), 256), dtype=np.bool_)
        chunks[row_of, grams & 0xFF] = True
        body = (np.packbits(present, bitorder="little").tobytes()
                + np.packbits(chunks, axis=1, bitorder="little").tobytes())
        header = orjson.dumps({
            "grams": GRAM, "levels": sorted(self._levels),
            "loggers": None if self._loggers is None else sorted(self._loggers),
        })
        return MAGIC + bytes([VERSION]) + len(header).to_bytes(4, "big") + header + zlib.compress(body, 6)


def encode(text: str) -> bytes:
    """UTF-8, lone surrogates included: a substring's bytes stay a substring of the text's."""
    return text.encode("utf-8", "surrogatepass")


def build(lines: Iterable[bytes]) -> bytes | None:
    """The index of a segment's JSON lines (sealing feeds blocks to an IndexBuilder instead)."""
    builder = IndexBuilder()
    builder.add_block(b"".join(lines))
    return builder.to_bytes()


@dataclass
class SearchIndex:
    """A decoded index; its trigrams are inflated on the first substring query."""

    levels: frozenset[str]
    loggers: frozenset[str] | None
    packed: bytes
    body: bytes | None = None

    @classmethod
    def parse(cls, data: bytes) -> "SearchIndex":
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 5:
            raise SearchIndexError("not an archiver search index")
        version = data[len(MAGIC)]
        if version != VERSION:
            raise SearchIndexError(f"search index version {version}; this archiver reads version {VERSION}")
        start = len(MAGIC) + 5
        end = start + int.from_bytes(data[len(MAGIC) + 1:start], "big")
        try:
            header: dict[str, Any] = orjson.loads(data[start:end])
        except orjson.JSONDecodeError as err:
            raise SearchIndexError(f"unreadable search index header: {err}") from None
        if header.get("grams") != GRAM:
            raise SearchIndexError(f"search index of {header.get('grams')}-grams; this archiver reads {GRAM}-grams")
        loggers = header.get("loggers")
        return cls(frozenset(header.get("levels") or ()), None if loggers is None else frozenset(loggers),
                   data[end:])

    def may_contain(self, text: str) -> bool:
        """False only when no message of the segment contains ``text``."""
        query = encode(text)
        if len(query) < GRAM:
            return True
        if self.body is None:
            self.body = zlib.decompress(self.packed)
        return all(self._has(*query[i:i + GRAM]) for i in range(len(query) - GRAM + 1))

    def _has(self, b0: int, b1: int, b2: int) -> bool:
        assert self.body is not None
        pair = b0 << 8 | b1
        byte, bit = pair >> 3, pair & 7
        if not self.body[byte] >> bit & 1:
            return False
        rank = int.from_bytes(self.body[:byte], "big").bit_count() + (self.body[byte] & ((1 << bit) - 1)).bit_count()
        chunk = _PAIRS_BYTES + rank * _CHUNK_BYTES
        return bool(self.body[chunk + (b2 >> 3)] >> (b2 & 7) & 1)

    def may_have_logger(self, pattern: str) -> bool:
        """False only when no logger of the segment matches the fnmatch ``pattern``."""
        return self.loggers is None or any(fnmatch.fnmatchcase(name, pattern) for name in self.loggers)
