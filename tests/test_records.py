"""Decoding bodies into canonical records: every body shape, message rebuilding, typing, time."""

from __future__ import annotations

import gzip
import json
import zlib
from urllib.parse import urlencode

import pytest

from archiver.format.record import Context, Rejected, encode_record, rejected_record, valid_stream_name
from archiver.ingest.decode.form import rebuild_message, typed_value
from archiver.ingest.decode.jsonbody import json_record
from archiver.ingest.decode.levels import normalize_level
from archiver.ingest.decode.result import BodyTooLarge, DecodeError
from archiver.ingest.decode.sniff import decode_body, decode_query, decompress
from archiver.ingest.decode.times import event_time

CTX = Context("app", "127.0.0.1", 1795467684.5)
RECEIVED = "2026-11-23T21:01:24.500000Z"
# The exact capture of logger.error('x %s', 1, exc_info=True) from shared/reference/clients.md.
CAPTURED = (
    b"name=app&msg=x+%25s&args=%281%2C%29&levelname=ERROR&levelno=40&pathname=%2Ftmp%2Fcap%2Fclient4.py"
    b"&filename=client4.py&module=client4&exc_info=%28%3Cclass+%27ZeroDivisionError%27%3E%2C+"
    b"ZeroDivisionError%28%27division+by+zero%27%29%2C+%3Ctraceback+object+at+0x7fd3c8372d00%3E%29"
    b"&exc_text=None&stack_info=None&lineno=7&funcName=%3Cmodule%3E&created=1795467684.44171&msecs=441.0"
    b"&relativeCreated=19.762277603149414&thread=140547585743744&threadName=MainThread"
    b"&processName=MainProcess&process=19408&taskName=None"
)


def test_captured_httphandler_body() -> None:
    decoded = decode_body(CAPTURED, CTX)
    assert decoded.kind == "httphandler" and decoded.rejected == []
    [record] = decoded.records
    assert list(record) == ["ts", "level", "logger", "message", "stream", "source", "peer", "received", "fields"]
    assert record["message"] == "x 1"
    assert record["level"] == "ERROR" and record["logger"] == "app"
    assert record["ts"] == "2026-11-23T21:01:24.441710Z"
    assert record["received"] == RECEIVED
    assert record["stream"] == "app" and record["source"] == "httphandler" and record["peer"] == "127.0.0.1"
    fields = record["fields"]
    assert fields["levelno"] == 40 and fields["lineno"] == 7 and fields["created"] == 1795467684.44171
    assert fields["exc_text"] is None and fields["taskName"] is None
    assert fields["msg"] == "x %s" and fields["args"] == "(1,)"
    assert fields["exc_info"].startswith("(<class 'ZeroDivisionError'>")
    assert len(fields) == 21


def test_get_query_string_is_the_same_record() -> None:
    [from_get] = decode_query(CAPTURED.decode(), CTX).records
    [from_post] = decode_body(CAPTURED, CTX).records
    assert from_get == from_post


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("user %s logged in %d times", "('alice', 3)", "user alice logged in 3 times"),
        ("100%", "()", "100%"),  # no args: msg unchanged, so a lone % survives
        ("%(a)s and %(b)s", "{'a': 1, 'b': 'x'}", "1 and x"),  # a single dict arrives unwrapped
        ("%s", "{'a': 1}", "{'a': 1}"),
        ("value %s", "(nan,)", "value %s"),  # literal_eval fails: msg kept
        ("when %s", "(datetime.datetime(2020, 1, 1, 0, 0),)", "when %s"),
        ("%d", "('not a number',)", "%d"),  # % fails: msg kept
        ("%999999999s", "('x',)", "%999999999s"),  # width bomb refused
        ("%*d", "(5, 1)", "%*d"),
        ("%.999999999f", "(1.5,)", "%.999999999f"),
        ("%s", "(" * 10000 + ")" * 10000, "%s"),  # nesting bomb
        ("%s", "('" + "x" * 70000 + "',)", "%s"),  # over the args cap
        ("ünïcode %s ✓", "('名前',)", "ünïcode 名前 ✓"),
        # A raw CR, a NUL or a lone surrogate in a quoted arg: literal_eval refuses it, msg kept.
        ("%s", "('a\rb',)", "%s"),
        ("%s", '("a\x00b",)', "%s"),
        ("%s", "('\ud800',)", "%s"),
    ],
)
def test_rebuild_message(msg: str, args: str, expected: str) -> None:
    assert rebuild_message(msg, args) == expected


def test_args_with_a_raw_carriage_return_are_not_read() -> None:
    """Python source cannot hold a raw CR in a string, so literal_eval and the fast path refuse it."""
    [record] = decode_body(b"msg=%25s&args=%28%27a%0Db%27%2C%29", CTX).records
    assert record["message"] == "%s" and record["fields"]["args"] == "('a\rb',)"


def test_message_field_wins_over_msg_and_args() -> None:
    body = urlencode({"msg": "a %s", "args": "(1,)", "message": "formatted by the app"}).encode()
    [record] = decode_body(body, CTX).records
    assert record["message"] == "formatted by the app"


def test_failed_rebuild_keeps_raw_args() -> None:
    body = urlencode({"msg": "at %s", "args": "(Decimal('1.5'),)"}).encode()
    [record] = decode_body(body, CTX).records
    assert record["message"] == "at %s" and record["fields"]["args"] == "(Decimal('1.5'),)"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("None", None), ("True", True), ("False", False), ("40", 40), ("-3", -3), ("441.0", 441.0),
        ("1795467684.44171", 1795467684.44171), ("007", "007"), ("1e5", "1e5"), ("nan", "nan"),
        ("1.10", "1.10"), ("99999999999999999999", "99999999999999999999"), ("", ""), ("abc", "abc"),
    ],
)
def test_typed_value_only_where_lossless(text: str, value: object) -> None:
    assert typed_value(text) == value and type(typed_value(text)) is type(value)


def test_curl_form_example() -> None:
    [record] = decode_body(b"abc=def", CTX).records
    assert record["fields"] == {"abc": "def"} and record["message"] is None and record["ts"] == RECEIVED


def test_a_logger_named_like_a_literal_keeps_its_name() -> None:
    [record] = decode_body(b"name=None&msg=x", CTX).records
    assert record["logger"] == "None" and record["fields"]["name"] is None


def test_repeated_form_keys_keep_every_value() -> None:
    [record] = decode_body(b"a=1&b=x&a=2&a=None", CTX).records
    assert record["fields"] == {"a": [1, 2, None], "b": "x"}


def test_json_object() -> None:
    body = json.dumps({"@timestamp": "2026-01-02T03:04:05.5+01:00", "message": "hi", "level": "warn",
                       "logger": "svc", "extra": {"k": [1, 2]}}).encode()
    decoded = decode_body(body, CTX)
    assert decoded.kind == "json"
    [record] = decoded.records
    assert record["ts"] == "2026-01-02T02:04:05.500000Z"
    assert record["level"] == "WARNING" and record["logger"] == "svc" and record["message"] == "hi"
    assert record["fields"]["extra"] == {"k": [1, 2]} and record["source"] == "json"


def test_json_array_with_bad_elements_keeps_good_ones() -> None:
    decoded = decode_body(b'[{"message": "a"}, 3, "x", {"message": "b"}]', CTX)
    assert [r["message"] for r in decoded.records] == ["a", "b"]
    assert [r.raw for r in decoded.rejected] == [b"3", b'"x"']


def test_ndjson_and_concatenated_objects() -> None:
    body = b'{"message": "a"}\n\n{"message": "b"}\n{"message": "c"}{"message": "d"} {"message": "e"}\n'
    assert [r["message"] for r in decode_body(body, CTX).records] == list("abcde")


def test_ndjson_bad_line_is_rejected_raw() -> None:
    decoded = decode_body(b'{"message": "a"}\n{not json}\n{"message": "b"}', CTX)
    assert [r["message"] for r in decoded.records] == ["a", "b"]
    [bad] = decoded.rejected
    assert bad.raw == b"{not json}" and "invalid JSON" in bad.reason


def test_big_integers_stay_exact() -> None:
    [record] = decode_body(b'{"message": "m", "n": 123456789012345678901234567890}', CTX).records
    assert record["fields"]["n"] == 123456789012345678901234567890
    assert b"123456789012345678901234567890" in encode_record(record)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b"just some text", "malformed form body"),
        (b"a=1&b", "malformed form body"),
        (b"msg=caf\xe9", "not valid UTF-8"),
        (b"msg=%ff%fe", "not valid UTF-8"),
        (b'{"message": "unterminated', "invalid JSON"),
        (b'{"a": "\xff"}', "invalid JSON"),
        (b"[1, 2", "invalid JSON"),
        (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
    ],
)
def test_undecodable_bodies_raise_with_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_body(body, CTX)


def test_decompress_sniffs_magic_bytes_not_headers() -> None:
    plain = b'{"message": "x"}'
    assert decompress(gzip.compress(plain), None, 1000) == plain
    assert decompress(gzip.compress(plain), "deflate", 1000) == plain
    assert decompress(zlib.compress(plain), "gzip,deflate", 1000) == plain  # GELF's label
    assert decompress(zlib.compress(plain), None, 1000) == plain
    assert decompress(plain, "gzip", 1000) == plain
    assert decompress(gzip.compress(b"a") + gzip.compress(b"b"), None, 10) == b"ab"
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(plain) + raw.flush(), "deflate", 1000) == plain
    assert decompress(b"x=1", None, 1000) == b"x=1"  # form bodies that start with 'x'


def test_truncated_and_oversized_compressed_bodies() -> None:
    packed = gzip.compress(b"a" * 100_000)
    with pytest.raises(DecodeError, match="truncated gzip"):
        decompress(packed[: len(packed) // 2], None, 10**6)
    with pytest.raises(BodyTooLarge):
        decompress(packed, None, 50_000)
    with pytest.raises(DecodeError, match="corrupt"):
        decompress(b"\x1f\x8b" + b"\x00" * 20, None, 1000)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"created": 1795467684.44171}, "2026-11-23T21:01:24.441710Z"),
        ({"@timestamp": "2026-11-23T20:49:17.123Z"}, "2026-11-23T20:49:17.123000Z"),
        ({"timestamp": 1795467684}, "2026-11-23T21:01:24.000000Z"),  # GELF seconds
        ({"time": 1795467684123}, "2026-11-23T21:01:24.123000Z"),  # milliseconds
        ({"ts": "2026-11-23 20:49:17"}, "2026-11-23T20:49:17.000000Z"),  # no zone: UTC
        ({"created": "not a time", "ts": 1795467684}, "2026-11-23T21:01:24.000000Z"),
        ({"time": "garbage"}, RECEIVED),
        ({"time": True}, RECEIVED),
        ({"time": float("nan"), "ts": float("-inf")}, RECEIVED),
        ({"created": 10**400, "ts": 1795467684}, "2026-11-23T21:01:24.000000Z"),  # too large a number: the next key
        ({}, RECEIVED),
    ],
)
def test_event_time(fields: dict, expected: str) -> None:
    assert event_time(fields, CTX.received) == expected


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("info", "INFO"), ("warn", "WARNING"), ("err", "ERROR"), ("notice", "INFO"), ("emerg", "CRITICAL"),
        (40, "ERROR"), ("40", "ERROR"), (3, "ERROR"), (7, "DEBUG"), (25, "Level 25"), ("AUDIT", "AUDIT"),
        (None, None), ("", None),
    ],
)
def test_normalize_level(value: object, level: str | None) -> None:
    assert normalize_level(value) == level


@pytest.mark.parametrize("name", ["app", "a.b-c_d", "A1", "x" * 64])
def test_valid_stream_names(name: str) -> None:
    assert valid_stream_name(name)


@pytest.mark.parametrize("name", ["", "_rejected", ".hidden", "../etc", "a/b", "x" * 65, "sp ace", "é"])
def test_invalid_stream_names(name: str) -> None:
    assert not valid_stream_name(name)


def test_rejected_record_keeps_raw_bytes_exactly() -> None:
    binary = rejected_record(Rejected("bad", b"\x1f\x8b\xff"), CTX, "http", {"target_stream": "app"})
    assert binary["stream"] == "_rejected" and binary["fields"]["raw_encoding"] == "base64"
    assert binary["fields"]["raw"] == "H4v/" and binary["fields"]["target_stream"] == "app"
    text = rejected_record(Rejected("bad", "héllo".encode()), CTX, "http", {})
    assert text["fields"]["raw"] == "héllo" and text["message"] == "rejected: bad"


@pytest.mark.parametrize("value", ["--5", "²", "٣", "-", "99999999999999999999999"])
def test_odd_level_texts_never_raise(value: str) -> None:
    record = json_record({"message": "m", "level": value}, CTX)  # "--5".isdigit()-style traps
    assert record["level"] == value.upper() and record["fields"]["level"] == value
