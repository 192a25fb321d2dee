"""Decoding what clients send into canonical records. Pure functions: no I/O, no clock.

A body is sniffed, never trusted from its headers: gzip and zlib by magic bytes, then JSON
(object, array, NDJSON, concatenated objects) by its first byte, else form-urlencoded as
``logging.handlers.HTTPHandler`` sends it. Message rebuilding follows
shared/reference/clients.md. Nothing the client sent is dropped: every original field stays
in the record's ``fields``; what cannot be decoded is returned as :class:`Rejected` with its raw
bytes so the caller can archive it in the ``_rejected`` stream.
"""

from __future__ import annotations

import ast
import json
from base64 import b64encode
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, Iterator
from urllib.parse import unquote_plus

import orjson

from .units import format_ts

REJECTED_STREAM = "_rejected"
SOURCE_FORM = "httphandler"
SOURCE_JSON = "json"
SOURCE_TCP = "tcp"

_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# HTTPHandler's repr of a tuple of literals is short; a long one is hostile or useless.
MAX_ARGS_CHARS = 64 * 1024
MAX_FORMAT_WIDTH = 10_000
MAX_FORM_FIELDS = 10_000
_FORMAT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)
_INT = re.compile(r"-?[0-9]{1,19}")
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+(?:e[-+][0-9]+)?")
_INT64 = 2**63
# What a typed form value can start with; any other text is left as it is without a regex.
_TYPED_STARTS = frozenset("-0123456789NTF")
# repr() of a tuple of plain strings (no quote of their own kind, no backslash: the text is the
# value), ints and None/True/False: most of HTTPHandler's args, read without ast.literal_eval.
# Nor a raw LF, CR, NUL or lone surrogate: literal_eval refuses them in a string, so it decides.
_NOT_PLAIN = r"\\\n\r\x00\ud800-\udfff"
_PLAIN_ATOM = rf"""'[^'{_NOT_PLAIN}]*'|"[^"{_NOT_PLAIN}]*"|-?(?:0|[1-9][0-9]{{0,17}})|None|True|False"""
_PLAIN_ARGS = re.compile(rf"\((?:{_PLAIN_ATOM}),\)|\((?:{_PLAIN_ATOM})(?:, (?:{_PLAIN_ATOM}))+\)")
_ATOM = re.compile(_PLAIN_ATOM)
_CONSTANTS = {"None": None, "True": True, "False": False}
# orjson turns integers beyond 64 bits into floats; such bodies go through the stdlib parser,
# which keeps them exact. NaN/Infinity literals stay as their text.
# Found by mapping digits to "1" and all else to " ": ten times faster than a regex.
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_TWENTY_DIGITS = b"1" * 20
_STDLIB_JSON = json.JSONDecoder(parse_constant=str)

# Python logging names, syslog severities and common aliases, upper-cased.
_LEVEL_ALIASES = {
    "WARN": "WARNING",
    "FATAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "EMERG": "CRITICAL",
    "EMERGENCY": "CRITICAL",
    "ALERT": "CRITICAL",
    "PANIC": "CRITICAL",
    "ERR": "ERROR",
    "NOTICE": "INFO",
    "INFORMATIONAL": "INFO",
    "TRACE": "DEBUG",
}
_PYTHON_LEVELS = {0: "NOTSET", 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
_SYSLOG_SEVERITIES = ["CRITICAL", "CRITICAL", "CRITICAL", "ERROR", "WARNING", "INFO", "INFO", "DEBUG"]

_TIME_KEYS = ("created", "@timestamp", "timestamp", "time", "ts", "ISODATE", "DATE")
# syslog's BSD timestamp, as syslog-ng's DATE macro gives it: no year, no zone.
_SYSLOG_DATE = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})")
_MONTHS = {name: n for n, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_LEVEL_KEYS = ("levelname", "level", "severity", "PRIORITY", "priority", "levelno")
_LOGGER_KEYS = ("logger", "logger_name", "name", "PROGRAM", "program", "_logger_name")
# "event": Splunk HEC's field (splunk_handler), a string or an object holding "message".
_MESSAGE_KEYS = ("message", "MESSAGE", "short_message", "full_message", "log", "event")
# Epoch numbers above these are taken as milliseconds, microseconds, nanoseconds.
_EPOCH_SCALES = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))


class DecodeError(ValueError):
    """The body as a whole cannot be decoded; ``str(err)`` says why, for the client."""


class BodyTooLarge(DecodeError):
    """The body decompresses to more than the configured limit."""


@dataclass(frozen=True)
class Rejected:
    """Bytes that could not become a record, and why."""

    reason: str
    raw: bytes


@dataclass
class Decoded:
    """The outcome of decoding one request body or query string."""

    kind: str  # SOURCE_FORM or SOURCE_JSON: how the client should be answered
    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


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


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo gzip or zlib, recognised by magic bytes; raw deflate only when the header says so.

    GELF clients send zlib labelled ``gzip,deflate``, so the label only breaks ties.
    """
    label = (content_encoding or "").lower()
    if body[:2] == b"\x1f\x8b":
        return _inflate(body, 31, max_bytes, "gzip")
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        try:
            return _inflate(body, 15, max_bytes, "zlib")
        except BodyTooLarge:
            raise
        except DecodeError:
            if "deflate" in label or "gzip" in label:
                raise
            return body  # a plain body that happens to start like a zlib header
    if label.strip() == "deflate":
        return _inflate(body, -15, max_bytes, "deflate")
    return body


def _inflate(body: bytes, wbits: int, max_bytes: int, name: str) -> bytes:
    out = bytearray()
    data = body
    while data:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as err:
            raise DecodeError(f"corrupt {name} body: {err}") from None
        if len(out) > max_bytes:
            raise BodyTooLarge(f"{name} body decompresses to more than {max_bytes} bytes")
        if not inflater.eof:
            raise DecodeError(f"truncated {name} body: the compressed stream ends early")
        # gzip allows concatenated members; anything after a zlib stream is an error.
        data = inflater.unused_data if wbits == 31 else b""
        if not wbits == 31 and inflater.unused_data:
            raise DecodeError(f"corrupt {name} body: trailing bytes after the stream")
    return bytes(out)


def decode_body(body: bytes, ctx: Context) -> Decoded:
    """Decode an already-decompressed request body into records and rejected parts."""
    head = body.lstrip()[:1]
    if not head:
        raise DecodeError("empty body: send a urlencoded record or JSON")
    if head in (b"{", b"["):
        return _decode_json(body, ctx)
    return Decoded(SOURCE_FORM, [form_record(_parse_form(body), ctx)])


def decode_query(query: str, ctx: Context) -> Decoded:
    """HTTPHandler's GET mode: the urlencoded record is the query string."""
    if not query:
        raise DecodeError("GET needs a urlencoded record in the query string")
    return Decoded(SOURCE_FORM, [form_record(_parse_form(query.encode("latin-1")), ctx)])


def _parse_form(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError(f"form body is not valid UTF-8 (byte {err.start})") from None
    text = text.strip()
    if not text:
        raise DecodeError("form body has no fields")
    fields = text.split("&")
    if len(fields) > MAX_FORM_FIELDS:
        raise DecodeError(f"malformed form body: more than {MAX_FORM_FIELDS} fields")
    # parse_qsl(keep_blank_values=True, strict_parsing=True), at half its cost: HTTPHandler's
    # bodies are most of what a sink reads, and most of their values need no unquoting.
    pairs = []
    try:
        for item in fields:
            key, equals, value = item.partition("=")
            if not equals:
                raise DecodeError(f"malformed form body: bad query field: {item[:100]!r}")
            if "%" in key or "+" in key:
                key = unquote_plus(key, errors="strict")
            if "%" in value or "+" in value:
                value = unquote_plus(value, errors="strict")
            pairs.append((key, value))
    except UnicodeDecodeError:
        raise DecodeError("form field is not valid UTF-8 after percent-decoding") from None
    return pairs


def form_record(pairs: list[tuple[str, str]], ctx: Context) -> dict[str, Any]:
    """A canonical record from HTTPHandler's urlencoded ``LogRecord.__dict__``. A key sent more
    than once (``a=1&a=2``, never from HTTPHandler) keeps every value, as a list in order."""
    fields = {key: typed_value(value) for key, value in pairs}
    if len(fields) != len(pairs):
        fields = _grouped(pairs)
    raw = dict(pairs)
    if "message" in raw:
        message: str | None = raw["message"]
    elif "msg" in raw:
        message = rebuild_message(raw["msg"], raw.get("args", "()"))
    else:
        message = None
    return _canonical(fields, message, SOURCE_FORM, ctx, texts=raw)


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields with each repeated key's typed values gathered in a list."""
    values: dict[str, list[Any]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(typed_value(value))
    return {key: found[0] if len(found) == 1 else found for key, found in values.items()}


def typed_value(text: str) -> Any:
    """Type a form value only where the text comes back unchanged: ``"None"`` -> null,
    ``"True"``/``"False"`` -> booleans, canonical ints and floats -> numbers; else the text."""
    if text[:1] not in _TYPED_STARTS:
        return text
    if text == "None":
        return None
    if text == "True":
        return True
    if text == "False":
        return False
    if _INT.fullmatch(text):
        number = int(text)
        if str(number) == text and -_INT64 <= number < _INT64:
            return number
    elif _FLOAT.fullmatch(text):
        real = float(text)
        if repr(real) == text:
            return real
    return text


def rebuild_message(msg: str, args: str) -> str:
    """``msg % literal_eval(args)`` as ``LogRecord.getMessage`` did, or ``msg`` when that fails.

    The raw ``args`` always stay in the record's fields, so nothing is lost on failure.
    """
    if len(args) > MAX_ARGS_CHARS:
        return msg
    try:
        values = literal_args(args)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return msg
    if not values:
        return msg
    if not _format_is_bounded(msg):
        return msg
    try:
        return msg % values
    except Exception:  # any exception a custom __mod__ could raise: keep the raw text
        return msg


def literal_args(args: str) -> Any:
    """``ast.literal_eval(args)``, with the plain tuples HTTPHandler mostly sends read by a
    regex at a fifth of the cost."""
    if _PLAIN_ARGS.fullmatch(args) is None:
        return ast.literal_eval(args)
    return tuple(_plain_atom(atom) for atom in _ATOM.findall(args))


def _plain_atom(atom: str) -> Any:
    if atom[0] in "'\"":
        return atom[1:-1]
    if atom in _CONSTANTS:
        return _CONSTANTS[atom]
    return int(atom)


def _format_is_bounded(msg: str) -> bool:
    """False for ``%*d`` and widths such as ``%999999999s`` that would allocate gigabytes."""
    for width, precision in _FORMAT_SPEC.findall(msg):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_FORMAT_WIDTH):
                return False
    return True


def encode_record(record: dict[str, Any]) -> bytes:
    """One segment line: compact JSON and a newline."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # integers beyond 64 bits or lone surrogates, which orjson refuses
        return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


@dataclass(frozen=True)
class Lines:
    """Encoded records of one stream, ready to append, with the statistics a sealed segment
    keeps (level counts, earliest and latest ``ts``). Cheap to send between processes."""

    data: bytes
    count: int
    levels: dict[str, int]
    first_ts: str | None
    last_ts: str | None


def encode_lines(records: list[dict[str, Any]]) -> Lines:
    """Segment lines for canonical records, counted as they are encoded."""
    stamps = [record["ts"] for record in records]
    levels = Counter([record["level"] or "NOTSET" for record in records])
    return Lines(b"".join(map(encode_record, records)), len(records), dict(levels),
                 min(stamps, default=None), max(stamps, default=None))


def _has_big_int(data: bytes) -> bool:
    """Whether ``data`` holds a run of 20 digits (an integer orjson would turn into a float)."""
    return _TWENTY_DIGITS in data.translate(_DIGITS_AS_ONES)


def _loads(data: bytes, big_ints: bool = True) -> Any:
    """Parse one JSON value; ``big_ints=False`` when the caller knows there are none."""
    if big_ints and _has_big_int(data):
        text = data.decode("utf-8")
        value, end = _STDLIB_JSON.raw_decode(text, len(text) - len(text.lstrip()))
        if text[end:].strip():
            raise ValueError(f"unexpected content after the JSON value at char {end}")
        return value
    return orjson.loads(data)


def _decode_json(body: bytes, ctx: Context) -> Decoded:
    try:
        document = _loads(body)
    except (ValueError, RecursionError):
        return _decode_json_lines(body, ctx)
    decoded = Decoded(SOURCE_JSON)
    if isinstance(document, dict):
        decoded.records.append(json_record(document, ctx))
    elif isinstance(document, list):
        _add_elements(decoded, document, ctx)
    else:
        raise DecodeError("JSON body must be an object, an array of objects, or NDJSON")
    return decoded


def _add_elements(decoded: Decoded, elements: Iterable[Any], ctx: Context) -> None:
    """Objects become records; any other JSON value is rejected with its bytes."""
    records = decoded.records
    for element in elements:
        if type(element) is dict:
            records.append(json_record(element, ctx))
        else:
            raw = encode_record(element)[:-1]
            decoded.rejected.append(Rejected("batch element is not a JSON object", raw))


def _decode_json_lines(body: bytes, ctx: Context) -> Decoded:
    """NDJSON, or JSON objects concatenated with or without separators (splunk_handler)."""
    decoded = Decoded(SOURCE_JSON)
    lines = body.splitlines()
    big_ints = _has_big_int(body)  # one scan of the body, not one per line
    values = None if big_ints else _loads_each(lines)
    if values is not None:
        _add_elements(decoded, values, ctx)
    else:
        for line in lines:
            if line.strip():
                _add_elements(decoded, _split_concatenated(line, decoded, big_ints), ctx)
    if not decoded.records:
        first = decoded.rejected[0].reason if decoded.rejected else "no JSON value"
        raise DecodeError(f"invalid JSON: {first}")
    return decoded


def _loads_each(lines: list[bytes]) -> list[Any] | None:
    """Every line parsed by orjson in one C-level loop, or None when any line (a blank one
    included) needs the careful path. The same per-line parse either way, only cheaper."""
    try:
        return list(map(orjson.loads, lines))
    except (ValueError, RecursionError):
        return None


def _split_concatenated(line: bytes, decoded: Decoded, big_ints: bool) -> Iterator[Any]:
    try:
        value = _loads(line, big_ints)
    except (ValueError, RecursionError):
        pass
    else:
        yield value
        return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        decoded.rejected.append(Rejected(f"line is not valid UTF-8 (byte {err.start})", line))
        return
    position = len(text) - len(text.lstrip())
    while position < len(text):
        try:
            value, end = _STDLIB_JSON.raw_decode(text, position)
        except (ValueError, RecursionError) as err:
            reason = f"invalid JSON: {err}" if isinstance(err, ValueError) else "JSON nested too deep"
            decoded.rejected.append(Rejected(reason, text[position:].encode()))
            return
        yield value
        position = end
        while position < len(text) and text[position] in " \t\r,":
            position += 1


def decode_lines(data: bytes, ctx: Context) -> Decoded:
    """Whole lines from the TCP source: each JSON object a record, any other line rejected."""
    decoded = Decoded(SOURCE_TCP)
    lines = data.splitlines()
    big_ints = _has_big_int(data)
    values = None if big_ints else _loads_each(lines)
    for n, line in enumerate(lines):
        if values is not None:
            value = values[n]
        elif not line.strip():
            continue
        else:
            try:
                value = _loads(line, big_ints)
            except (ValueError, RecursionError) as err:
                reason = f"invalid JSON: {err}" if isinstance(err, ValueError) else "JSON nested too deep"
                decoded.rejected.append(Rejected(reason, line))
                continue
        if type(value) is dict:
            decoded.records.append(json_record(value, ctx, SOURCE_TCP))
        else:
            decoded.rejected.append(Rejected("line is not a JSON object", line))
    return decoded


def json_record(obj: dict[str, Any], ctx: Context, source: str = SOURCE_JSON) -> dict[str, Any]:
    """A canonical record from one JSON object (python-logstash, GELF, syslog-ng, ...)."""
    roles = _roles(tuple(obj))
    message = _first(obj, roles.message)
    if type(message) is dict and type(message.get("message")) is str:
        message = message["message"]
    if message is None and roles.msg:
        args = obj.get("args")
        message = str(obj["msg"]) if args is None else rebuild_message(str(obj["msg"]), str(args))
    if message is not None and type(message) is not str:
        message = encode_record(message)[:-1].decode()
    return _canonical(obj, message, source, ctx, roles)


@dataclass(frozen=True, slots=True)
class _Roles:
    """The keys of one record shape that can give its message, logger, level and time, in
    priority order. Records from one client share a shape, so this is worked out once per shape
    (the hot path of bulk ingest: it saves a dozen lookups a record)."""

    message: tuple[str, ...]
    msg: bool
    logger: tuple[str, ...]
    level: tuple[str, ...]
    time: tuple[str, ...]


@lru_cache(maxsize=1024)
def _roles(keys: tuple[str, ...]) -> _Roles:
    present = frozenset(keys)

    def having(candidates: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(key for key in candidates if key in present)

    return _Roles(having(_MESSAGE_KEYS), "msg" in present, having(_LOGGER_KEYS), having(_LEVEL_KEYS), having(_TIME_KEYS))


def _first(fields: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = fields[key]
        if value is not None and value != "":
            return value
    return None


def _canonical(
    fields: dict[str, Any], message: str | None, source: str, ctx: Context, roles: _Roles | None = None,
    texts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``texts``: a form's values as sent, for the logger name (a logger named "None" or "42"
    is not null or a number)."""
    if roles is None:
        roles = _roles(tuple(fields))
    logger = _first(texts if texts is not None else fields, roles.logger) if roles.logger else None
    level = _first(fields, roles.level) if roles.level else None
    return {
        "ts": _event_time(fields, ctx.received, roles.time) if roles.time else ctx.received_ts,
        "level": None if level is None else normalize_level(level),
        "logger": None if logger is None else str(logger),
        "message": message,
        "stream": ctx.stream,
        "source": source,
        "peer": ctx.peer,
        "received": ctx.received_ts,
        "fields": fields,
    }


def event_time(fields: dict[str, Any], received: float) -> str:
    """The first parseable of created / @timestamp / timestamp / time / ts, else receive time."""
    return _event_time(fields, received, _TIME_KEYS)


def _event_time(fields: dict[str, Any], received: float, keys: tuple[str, ...]) -> str:
    for key in keys:
        value = fields.get(key)
        if value is None or isinstance(value, bool):
            continue
        moment = _parse_syslog_date(value, received) if key == "DATE" else _parse_moment(value)
        if moment is not None:
            return moment
    return format_ts(received)


def _parse_syslog_date(value: Any, received: float) -> str | None:
    """``Jan  2 03:04:05`` in the sink's local time zone, in the year that puts it at most a day
    after the receive time (so late December read in January lands in the year before)."""
    return _syslog_date(str(value).strip(), int(received))


@lru_cache(maxsize=4096)
def _syslog_date(value: str, received: int) -> str | None:
    match = _SYSLOG_DATE.fullmatch(value)
    if match is None or match.group(1) not in _MONTHS:
        return None
    month, day, hour, minute, second = _MONTHS[match.group(1)], *map(int, match.groups()[1:])
    year = time.localtime(received).tm_year
    for candidate in (year, year - 1):
        try:
            moment = time.mktime((candidate, month, day, hour, minute, second, 0, 0, -1))
        except (OverflowError, ValueError):
            return None
        if moment <= received + 86400:
            return format_ts(moment)
    return None


def _parse_moment(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return _parse_iso(value)
    if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        return None
    for threshold, scale in _EPOCH_SCALES:
        if abs(value) >= threshold:
            value = value / scale
            break
    try:
        return format_ts(value)
    except (OverflowError, OSError, ValueError):
        return None


def _parse_iso(text: str) -> str | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return format_ts(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def normalize_level(value: Any) -> str | None:
    """One vocabulary for levels: Python names; syslog severities 0-7 and names mapped onto them."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _level_name(value) if len(value) <= 64 else value.strip().upper()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if 0 <= value < len(_SYSLOG_SEVERITIES):
            return _SYSLOG_SEVERITIES[value]
        return _PYTHON_LEVELS.get(value, f"Level {value}")
    return str(value)


@lru_cache(maxsize=1024)
def _level_name(value: str) -> str | None:
    """Level texts repeat on every record: each is worked out once."""
    text = value.strip().upper()
    if _INTEGER_TEXT.fullmatch(text):
        return normalize_level(int(text))
    return _LEVEL_ALIASES.get(text, text) or None


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
    rejected_ctx = Context(REJECTED_STREAM, ctx.peer, ctx.received)
    record = _canonical({}, f"rejected: {item.reason}", source, rejected_ctx)
    record["level"] = "ERROR"
    record["logger"] = "archiver.rejected"
    record["fields"] = fields
    return record
