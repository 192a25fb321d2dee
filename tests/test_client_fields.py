"""The mapping rules for real clients' fields (docs/records.md) and the classic view, as pure
functions; tests/test_real_clients.py sends the same with the real libraries."""

from __future__ import annotations

import logging
import logging.handlers
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.format.record import Context
from archiver.ingest.decode.form import form_record
from archiver.ingest.decode.jsonbody import json_record
from archiver.read.classic import classic_line, exception_named, fields_text

CTX = Context("app", "127.0.0.1", 1_795_467_684.0)
GELF = {"version": "1.1", "host": "web01", "short_message": "disk full", "level": 3}


@pytest.mark.parametrize(
    ("fields", "logger"),
    [
        ({**GELF, "facility": "app.db"}, "app.db"),  # graypy
        ({**GELF, "facility": "billing", "_logger": "app.db"}, "app.db"),  # graypy given a facility
        ({**GELF, "facility": "app.db", "_logger_name": "ops.disk"}, "ops.disk"),  # other GELF senders
        ({"MESSAGE": "m", "PROGRAM": "cron", "FACILITY": "user"}, "cron"),  # syslog-ng
        ({"message": "m", "facility": "user"}, None),  # a facility outside GELF is syslog's
        ({"short_message": "m", "facility": "app.db"}, None),  # no GELF version: not GELF
        ({"message": "m", "program": "-", "extra": {"logger_name": "app.db"}}, "app.db"),  # python-logstash-async
        ({"message": "m", "logger_name": "top", "extra": {"logger_name": "app.db"}}, "top"),
        ({"message": "m", "program": "shop.py", "extra": "text"}, "shop.py"),
        ({"message": "m", "program": "shop.py", "extra": {"logger_name": ""}}, "shop.py"),
    ],
)
def test_logger_name(fields: dict[str, Any], logger: str | None) -> None:
    assert json_record(fields, CTX)["logger"] == logger


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"MESSAGE": " hello", "PROGRAM": "myapp"}, "hello"),  # rsyslog: msg keeps the tag's space
        ({"MESSAGE": "  indented", "PROGRAM": "myapp"}, " indented"),  # only that one space goes
        ({"MESSAGE": " hello", "PROGRAM": "myapp", "LEGACY_MSGHDR": "myapp: "}, " hello"),  # syslog-ng split it
        ({"MESSAGE": " hello"}, " hello"),  # no syslog tag split off
        ({"message": " hello", "PROGRAM": "myapp"}, " hello"),
        ({"MESSAGE": None, "PROGRAM": None}, None),
    ],
)
def test_rsyslog_message(fields: dict[str, Any], message: str | None) -> None:
    assert json_record(fields, CTX)["message"] == message


keys = st.sampled_from(["facility", "FACILITY", "version", "host", "message", "MESSAGE", "PROGRAM", "level", "n"])


@settings(deadline=None)  # a loaded machine is no failure
@given(st.dictionaries(keys, st.text(max_size=5) | st.integers(), max_size=8))
def test_facility_is_a_logger_only_in_gelf(fields: dict[str, Any]) -> None:
    """Without GELF's version and short_message, no facility names the logger."""
    logger = json_record(fields, CTX)["logger"]
    assert logger is None or logger == str(fields.get("PROGRAM"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(deadline=None)  # a loaded machine is no failure
@given(st.dictionaries(keys, json_values, max_size=8))
def test_any_json_values_under_the_clients_keys_decode(fields: dict[str, Any]) -> None:
    """A null or a nested value where a client's mapping expects text (``"MESSAGE": null``)
    still gives a record: one bad line must not send its whole read to _rejected."""
    record = json_record(fields, CTX)
    assert record["message"] is None or type(record["message"]) is str


def raised(exc: BaseException) -> str:
    """HTTPHandler's ``exc_info`` for ``exc``, as it goes on the wire."""
    try:
        raise exc
    except BaseException as caught:
        handler = logging.handlers.HTTPHandler("unused", "/")
        record = logging.LogRecord("app", logging.ERROR, "f.py", 1, "failed", (), (type(caught), caught, caught.__traceback__))
        return dict(parse_qsl(urlencode(handler.mapLogRecord(record))))["exc_info"]


@settings(deadline=None)  # a loaded machine is no failure
@given(st.text(min_size=1))
def test_exception_named_reads_what_httphandler_sent(value: str) -> None:
    assert exception_named(raised(ValueError(value))) == f"ValueError: {value}"


def test_exception_named_other_shapes() -> None:
    import json

    assert exception_named(raised(ValueError())) == "ValueError"
    assert exception_named(raised(json.JSONDecodeError("Expecting value", "x", 0))) == (
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)")
    assert exception_named(raised(OSError(2, "gone"))) == "FileNotFoundError: 2, 'gone'"
    assert exception_named("None") is None and exception_named("(1, 2, 3)") is None


def test_classic_line_of_an_httphandler_exception() -> None:
    body = urlencode({"name": "app.http", "msg": "failed", "args": "()", "levelname": "ERROR", "exc_text": "None",
                      "exc_info": raised(ZeroDivisionError("division by zero")), "created": "1795467684.25"})
    record = form_record(parse_qsl(body), CTX)
    assert classic_line(record) == (
        f"2026-11-23 21:01:24 {'app.http':>40} ERROR failed\nZeroDivisionError: division by zero\n")
    formatted = {**record, "fields": {**record["fields"], "exc_text": "Traceback (most recent call last):\n  ...\n"}}
    assert classic_line(formatted).endswith("ERROR failed\nTraceback (most recent call last):\n  ...\n")


def test_classic_line_without_a_message_shows_the_fields() -> None:
    record = form_record(parse_qsl("abc=def"), CTX)
    assert classic_line(record) == f"2026-11-23 21:01:24 {'-':>40} - abc=def\n"
    assert fields_text({"a": "two words", "n": 3, "none": None, "d": {"k": [1]}}) == (
        'a="two words" n=3 none=null d={"k":[1]}')


values = st.text() | st.integers() | st.none()


@settings(deadline=None)  # a loaded machine is no failure
@given(st.dictionaries(st.text(max_size=5), values, min_size=1, max_size=5))
def test_classic_line_without_a_message_is_one_line(fields: dict[str, Any]) -> None:
    line = classic_line({"ts": "2026-11-23T21:01:24.000000Z", "message": None, "fields": fields})
    assert line.endswith("\n") and "\n" not in line[:-1]


@settings(deadline=None)  # a loaded machine is no failure
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), values, min_size=1, max_size=5))
def test_classic_line_without_a_message_names_every_field(fields: dict[str, Any]) -> None:
    line = classic_line({"ts": "2026-11-23T21:01:24.000000Z", "message": None, "fields": fields})
    assert all(f" {key}=" in line for key in fields)
