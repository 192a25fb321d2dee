"""Real clients' fields: graypy's GELF over HTTP, python-logstash-async and rsyslog over the TCP
source, HTTPHandler with an exception, and curl, sent to one running sink (docs/records.md)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import graypy
import orjson
import pytest
from logstash_async.handler import AsynchronousLogstashHandler

from archiver.read.reader import Filters, data_dir_archive, existing_data_dir

from conftest import ROOT, Sink, archiver_cli, cat_json, stop_process
from test_syslog_ng import free_port, send_lines

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # HTTPHandler, graypy

CONFIG = ROOT / "config" / "rsyslog" / "archiver.conf"
UNPACKED = ROOT / ".cache" / "rsyslog"  # where make test unpacks Debian's rsyslog


def rsyslogd_command() -> list[str]:
    """rsyslogd unpacked by make test (with its module directory), else one on PATH."""
    unpacked = UNPACKED / "usr" / "sbin" / "rsyslogd"
    if unpacked.exists():
        [modules] = (UNPACKED / "usr" / "lib").glob("*/rsyslog")
        return [str(unpacked), "-M", str(modules)]
    binary = shutil.which("rsyslogd")
    if binary is None:  # never a skip: make test unpacks it
        pytest.fail("rsyslogd is required (make test unpacks Debian's rsyslog into .cache/rsyslog)")
    return [binary]




def log_with(name: str, handler: logging.Handler) -> logging.Logger:
    """The logger ``name`` (its exact name is what the sink must find) with only ``handler``."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [handler]
    return logger


def send_graypy(url: str) -> None:
    host, port = urlsplit(url).hostname, urlsplit(url).port
    log_with("app.gelf", graypy.GELFHTTPHandler(host, port, path="/gelf")).warning("gelf says %s", "hi")
    custom = graypy.GELFHTTPHandler(host, port, path="/gelf", facility="billing")
    log_with("app.gelf.custom", custom).warning("gelf with a facility of its own")


def send_logstash(tcp_port: int) -> None:
    handler = AsynchronousLogstashHandler("127.0.0.1", tcp_port, database_path=None)
    log_with("app.logstash", handler).error("logstash says %s", "hi")
    handler.close()  # the worker sends what is queued before it stops


def send_httphandler(url: str) -> None:
    handler = logging.handlers.HTTPHandler(urlsplit(url).netloc, "/app", method="POST")
    try:
        1 / 0
    except ZeroDivisionError:
        log_with("app.http", handler).exception("failed")


def open_records(data_dir: Path) -> list[dict[str, Any]]:
    """What ``cat --json --include-open`` prints, read in this process (cheaper to poll)."""
    with data_dir_archive(existing_data_dir(data_dir)) as archive:
        return [orjson.loads(line) for line in b"".join(archive.json_chunks(Filters(), True)).splitlines()]


def wait_for(data_dir: Path, want: dict[str, int], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = open_records(data_dir)
        counts = Counter(r["stream"] for r in records)
        if all(counts[stream] >= n for stream, n in want.items()) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sink, list[dict[str, Any]]]]:
    """One sink and everything each client sent to it."""
    tmp_path = tmp_path_factory.mktemp("clients")
    sink = Sink(tmp_path / "data", ["--tcp-port", "0"]).start()
    rsyslog = None
    try:
        tcp_port = int(orjson.loads((sink.data_dir / "sink.json").read_bytes())["tcp"].rsplit(":", 1)[1])
        in_port = free_port()
        env = {**os.environ, "RS_IN_PORT": str(in_port), "RS_TCP_PORT": str(tcp_port), "RS_WORK": str(tmp_path)}
        with open(tmp_path / "rsyslogd.log", "wb") as log:
            rsyslog = subprocess.Popen(
                [*rsyslogd_command(), "-n", "-f", str(CONFIG), "-i", str(tmp_path / "rsyslogd.pid")],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        send_lines(in_port, [b"<11>Dec  2 05:00:00 web01 myapp[42]: hello from rsyslog"])
        send_graypy(sink.url)
        send_logstash(tcp_port)
        send_httphandler(sink.url)
        subprocess.run(["curl", "-sS", "--max-time", "10", "-X", "POST", "-d", "abc=def", sink.url], check=True,
                       capture_output=True)
        records = wait_for(sink.data_dir, {"gelf": 2, "tcp": 2, "app": 1, "default": 1})
        yield sink, records
    finally:
        if rsyslog is not None:
            stop_process(rsyslog)
        if sink.proc is not None and sink.proc.poll() is None:
            sink.stop()


def one(records: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    [record] = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    return record


def test_graypy_logger_name_comes_from_facility_or_logger(sent) -> None:  # type: ignore[no-untyped-def]
    sink, records = sent
    gelf = one(records, stream="gelf", message="gelf says hi")
    assert gelf["logger"] == "app.gelf" and gelf["level"] == "WARNING"
    custom = one(records, stream="gelf", message="gelf with a facility of its own")
    assert custom["logger"] == "app.gelf.custom" and custom["fields"]["facility"] == "billing"
    found = cat_json(sink.data_dir, "--include-open", "--logger", "app.gelf*")
    assert sorted(r["message"] for r in found) == ["gelf says hi", "gelf with a facility of its own"]


def test_logstash_async_logger_name_comes_from_extra(sent) -> None:  # type: ignore[no-untyped-def]
    _, records = sent
    record = one(records, stream="tcp", message="logstash says hi")
    assert record["logger"] == "app.logstash" and record["level"] == "ERROR"
    assert record["fields"]["extra"]["logger_name"] == "app.logstash"


def test_rsyslog_message_loses_the_space_after_the_tag(sent) -> None:  # type: ignore[no-untyped-def]
    _, records = sent
    record = one(records, stream="tcp", logger="myapp")
    assert record["message"] == "hello from rsyslog" and record["level"] == "ERROR"
    assert record["fields"]["MESSAGE"] == " hello from rsyslog" and record["fields"]["HOST"] == "web01"


def test_classic_view_shows_curl_fields_and_httphandler_exception(sent) -> None:  # type: ignore[no-untyped-def]
    sink, _ = sent
    classic = archiver_cli("cat", "--include-open", "--data-dir", str(sink.data_dir)).stdout.decode().splitlines()
    assert any(line.endswith(f" {'-':>40} - abc=def") for line in classic), classic
    failed = next(n for n, line in enumerate(classic) if line.endswith(f" {'app.http':>40} ERROR failed"))
    assert classic[failed + 1] == "ZeroDivisionError: division by zero"
