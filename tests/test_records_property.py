"""Property: any LogRecord HTTPHandler can send round-trips urlencode -> decode with the same
message and no field lost."""

from __future__ import annotations

import ast
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.common.units import format_ts
from archiver.format.record import Context
from archiver.ingest.decode.form import literal_args, parse_form
from archiver.ingest.decode.result import DecodeError
from archiver.ingest.decode.sniff import decode_body, decode_query

# Lone surrogates cannot be urlencoded, so HTTPHandler itself cannot send them.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.lists(inner, max_size=3)
    | st.dictionaries(texts.filter(lambda t: len(t) <= 5), inner, max_size=3),
    max_leaves=6,
)
pieces = st.sampled_from(["%s", "%r", "%d", "%5.2f", "%%", "%x", "%(a)s", "%-8s", "100%", " "]) | st.text(
    alphabet=st.characters(exclude_characters="%", exclude_categories=("Cs",)), max_size=12
)
messages = st.lists(pieces, max_size=6).map("".join)
extras = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
        lambda k: k not in logging.LogRecord("n", 0, "", 0, "", (), None).__dict__ and k != "message"
    ),
    texts | st.integers() | st.none(),
    max_size=3,
)


def _record(msg: str, args: tuple[Any, ...], extra: dict[str, Any], name: str) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, "/app/mod.py", 12, msg, args, None)
    record.__dict__.update(extra)
    return record


def _text(value: Any) -> str:
    return "None" if value is None else str(value)


def _expected_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        return str(record.msg)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(literals, max_size=4).map(tuple), extras, texts.filter(lambda t: 0 < len(t) <= 20))
def test_httphandler_records_round_trip(msg: str, args: tuple[Any, ...], extra: dict[str, Any], name: str) -> None:
    record = _record(msg, args, extra, name)
    body = urlencode(record.__dict__)
    ctx = Context("app", "127.0.0.1", 1_800_000_000.0)
    for decoded in (decode_body(body.encode(), ctx), decode_query(body, ctx)):
        [canonical] = decoded.records
        assert decoded.rejected == []
        assert canonical["message"] == _expected_message(record)
        assert canonical["logger"] == name
        assert canonical["level"] == "WARNING"
        assert canonical["ts"] == format_ts(record.created)
        fields = canonical["fields"]
        assert set(fields) == set(record.__dict__)
        for key, value in record.__dict__.items():
            assert _text(fields[key]) == _text(value), key


plain_values = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | texts
# Quoted text repr() never writes: any text, lone surrogates included, or any text with one of
# the characters repr() escapes spliced in raw, where the regex path must agree with literal_eval.
escaped_by_repr = st.sampled_from("'\"\\\r\n\x00\ud800\udfff")
raw_texts = st.text(max_size=8) | st.builds(
    lambda head, raw, tail: head + raw + tail, st.text(max_size=4), escaped_by_repr, st.text(max_size=4)
)
raw_atoms = st.builds(lambda quote, text: quote + text + quote, st.sampled_from("'\""), raw_texts) | st.sampled_from(
    ["0", "-7", "None"]
)
raw_tuples = st.lists(raw_atoms, min_size=1, max_size=3).map(
    lambda atoms: "(" + ", ".join(atoms) + ("," if len(atoms) == 1 else "") + ")"
)


@given(
    st.lists(plain_values, max_size=4).map(tuple)
    | raw_tuples
    | st.text(alphabet="(),' \"-0123456789NoneTruFalsx\\", max_size=14)
)
@settings(max_examples=500)
def test_literal_args_reads_as_literal_eval_does(value: Any) -> None:
    """The regex path for plain tuples gives literal_eval's answer, error for error."""
    args = repr(value) if isinstance(value, tuple) else value

    def outcome(read: Any) -> Any:
        try:
            return ("value", read(args))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            return ("error", type(err))

    assert outcome(literal_args) == outcome(ast.literal_eval)


form_texts = st.text(alphabet="ab=&%+2Ff0 é\x00", max_size=20) | st.lists(
    st.tuples(texts, texts), min_size=1, max_size=4
).map(urlencode)


@given(form_texts)
@settings(max_examples=500)
def test_form_parsing_matches_strict_parse_qsl(text: str) -> None:
    """The hand-rolled form parser answers as parse_qsl(strict) does: same pairs, or an error."""
    try:
        expected: Any = parse_qsl(text.strip(), keep_blank_values=True, strict_parsing=True, errors="strict")
    except ValueError:  # UnicodeDecodeError included
        expected = "error"
    try:
        got: Any = parse_form(text.encode())
    except DecodeError:
        got = "error"
    if expected == []:  # parse_qsl finds nothing in an empty body; the sink refuses it
        expected = "error"
    assert got == expected
