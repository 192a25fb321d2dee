"""HTTPHandler's urlencoded ``LogRecord.__dict__``: the form parser, typed values, and the
message rebuilt from ``msg`` and ``args`` as ``LogRecord.getMessage`` does (docs/records.md)."""

from __future__ import annotations

import ast
import re
from typing import Any
from urllib.parse import unquote_plus

from archiver.format.record import SOURCE_FORM, Context
from archiver.ingest.decode.canonical import canonical_record
from archiver.ingest.decode.result import DecodeError

# HTTPHandler's repr of a tuple of literals is short; a long one is hostile or useless.
MAX_ARGS_CHARS = 64 * 1024
MAX_FORMAT_WIDTH = 10_000
MAX_FORM_FIELDS = 10_000
_FORMAT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)
_INT = re.compile(r"-?[0-9]{1,19}")
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


def parse_form(body: bytes) -> list[tuple[str, str]]:
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
    return canonical_record(fields, message, SOURCE_FORM, ctx, texts=raw)


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
