"""The TCP JSON-lines source, other senders' captured bodies, and the application handlers."""

from __future__ import annotations

import gzip
import logging
import socket
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from archiver.client import ArchiveHandler, FormattingHTTPHandler
from conftest import Sink, cat_json, named_logger, send_tcp, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stdlib HTTPHandler


def tcp_address(sink: Sink) -> tuple[str, int]:
    host, port = orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"][len("tcp://"):].rsplit(":", 1)
    return host, int(port)


def test_tcp_json_lines_streams_and_rejects(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, "--tcp-port", "0", env={"ARCHIVER_TCP_STREAM_FIELD": "PROGRAM"})
    lines = [orjson.dumps({"MESSAGE": f"m{n}", "PROGRAM": "billing" if n % 2 else "../escape", "n": n}) for n in range(1000)]
    lines.insert(500, b"not json at all")
    lines.insert(10, b"[1, 2, 3]")
    payload = b"\n".join(lines)  # the last line has no newline: it still counts at close
    host, port = tcp_address(sink)
    send_tcp(host, port, payload, piece=7777)  # split anywhere, mid-line included
    assert sink.stop() == 0
    records = cat_json(sink.data_dir)
    by_stream: dict[str, list[dict]] = {}
    for record in records:
        by_stream.setdefault(record["stream"], []).append(record)
    assert sorted(r["fields"]["n"] for r in by_stream["billing"]) == list(range(1, 1000, 2))
    assert sorted(r["fields"]["n"] for r in by_stream["tcp"]) == list(range(0, 1000, 2))  # invalid name: default
    assert {r["source"] for r in by_stream["tcp"]} == {"tcp"}
    assert sorted(r["fields"]["raw"] for r in by_stream["_rejected"]) == ["[1, 2, 3]", "not json at all"]


@pytest.mark.parametrize(
    ("name", "body", "headers", "check"),
    [
        (
            "logstash-async",  # python-logstash-async HttpTransport: a JSON array of events
            orjson.dumps([{"@timestamp": "2026-11-23T20:49:17.123Z", "@version": "1", "host": "web01", "level": "ERROR",
                           "logsource": "web01", "message": "payment failed", "pid": 42, "program": "shop.py",
                           "type": "python-logstash", "logger_name": "shop.payments", "thread_name": "MainThread",
                           "extra": {"order": 17}}]),
            {"Content-Type": "application/json"},
            {"message": "payment failed", "level": "ERROR", "logger": "shop.payments", "ts": "2026-11-23T20:49:17.123000Z"},
        ),
        (
            "gelf",  # graypy GELFHTTPHandler: zlib labelled gzip,deflate
            zlib.compress(orjson.dumps({"version": "1.1", "host": "web01", "short_message": "disk full",
                                        "full_message": "disk full\nTraceback...", "timestamp": 1795467684.25,
                                        "level": 2, "_logger_name": "ops.disk", "_pid": 7})),
            {"Content-Encoding": "gzip,deflate"},
            {"message": "disk full", "level": "CRITICAL", "logger": "ops.disk", "ts": "2026-11-23T21:01:24.250000Z"},
        ),
        (
            "splunk",  # splunk_handler: concatenated objects, no separator
            b'{"time": 1795467684, "event": {"message": "a"}, "host": "h"}{"time": 1795467685, "event": {"message": "b"}, "host": "h"}',
            {"Content-Type": "application/json"},
            {"ts": "2026-11-23T21:01:24.000000Z", "message": "a"},
        ),
    ],
)
def test_other_senders_unchanged(start_sink, name: str, body: bytes, headers: dict, check: dict) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    response = requests.post(f"{sink.url}/{name}", data=body, headers=headers, timeout=10)
    assert response.status_code == 200 and response.json()["rejected"] == 0
    assert sink.stop() == 0
    first = cat_json(sink.data_dir)[0]
    assert {key: first[key] for key in check} == check




def test_archive_handler_batches_and_renders(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    handler = ArchiveHandler(f"{sink.url}/apps", batch_size=100, flush_interval=0.1)
    logger = named_logger("app.orders", handler)
    for n in range(1000):
        logger.info("order %s for %r", n, {"sku": n % 7}, extra={"request_id": f"r{n}"})
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("failed with %s", "zero", stack_info=True)
    handler.close()
    assert handler.sent == 1001 and handler.dropped == 0
    assert sink.stop() == 0
    records = cat_json(sink.data_dir, "--stream", "apps")
    assert len(records) == 1001
    assert records[3]["message"] == "order 3 for {'sku': 3}" and records[3]["fields"]["request_id"] == "r3"
    failed = records[-1]
    assert failed["message"] == "failed with zero" and failed["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in failed["fields"]["exc_text"]
    assert failed["fields"]["stack_info"].startswith("Stack (most recent call last):")


def test_archive_handler_waits_at_most_block_timeout_for_a_dead_sink_then_counts_drops() -> None:
    handler = ArchiveHandler("http://127.0.0.1:9/nowhere", queue_size=100, flush_interval=60, timeout=0.5,
                             block_timeout=0.5)
    logger = named_logger("app.blocked", handler)
    for n in range(10_000):  # were emit to wait on the dead sink for each record, this would hang (pytest-timeout)
        logger.warning("record %d", n)
    handler.close()
    assert handler.dropped >= 9_900 and handler.sent == 0


def test_archive_handler_buffers_on_disk_across_an_outage_and_a_restart(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    buffer_dir = tmp_path / "buffer"
    down = ArchiveHandler("http://127.0.0.1:9/app", buffer_dir=buffer_dir, batch_size=10, flush_interval=0.05, timeout=0.5)
    logger = named_logger("app.outage", down)
    for n in range(25):
        logger.error("while down %d", n)
    down.close()  # the application exits during the outage
    assert sum(len(p.read_bytes().splitlines()) for p in buffer_dir.glob("*.ndjson")) == 25
    sink = start_sink()
    back = ArchiveHandler(f"{sink.url}/app", buffer_dir=buffer_dir, flush_interval=0.05)  # the application restarts
    named_logger("app.outage", back).error("after restart")
    wait_until(lambda: not list(buffer_dir.glob("*.ndjson")), "the buffer to be sent", timeout=30)
    back.close()
    assert sink.stop() == 0
    messages = sorted(r["message"] for r in cat_json(sink.data_dir))
    assert messages == sorted([f"while down {n}" for n in range(25)] + ["after restart"])


def test_formatting_http_handler_sends_the_rendered_message(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    handler = FormattingHTTPHandler(urlsplit(sink.url).netloc, "/fmt", timeout=2)
    logger = named_logger("app.fmt", handler)
    logger.info("at %s", object.__new__(type("Custom", (), {"__repr__": lambda self: "<custom>"})))
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("lookup failed")
    assert sink.stop() == 0
    first, second = cat_json(sink.data_dir)
    assert first["message"] == "at <custom>"  # rendered in the application: no literal_eval needed
    assert "KeyError: 'k'" in second["fields"]["exc_text"]
    silent = socket.socket()  # accepts, never answers: the stdlib handler would hang (pytest-timeout)
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    hung = FormattingHTTPHandler(f"127.0.0.1:{silent.getsockname()[1]}", "/x", timeout=0.5)
    errors: list[logging.LogRecord] = []
    hung.handleError = errors.append  # type: ignore[method-assign]
    named_logger("app.hung", hung).error("into a sink that never answers")
    silent.close()
    assert len(errors) == 1  # gave up after its timeout


def test_gzip_ndjson_from_a_handler_batch(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    body = gzip.compress(b"\n".join(orjson.dumps({"message": f"z{n}"}) for n in range(100)))
    assert requests.post(f"{sink.url}/z", data=body, timeout=10).json() == {"accepted": 100, "rejected": 0}
    assert sink.stop() == 0
    assert len(cat_json(sink.data_dir)) == 100
