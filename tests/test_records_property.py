"""Property: any LogRecord HTTPHandler can send round-trips urlencode -> decode with the same
message and no field lost."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.records import Context, decode_body, decode_query
from archiver.units import format_ts

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
