"""ArchiveHandler against real sinks: bursts delivered whole, authentication and TLS, backoff
during an outage, drops after block_timeout and their report, the buffer_dir bound, a killed
application's buffer sent by the next, 413 splitting, the overflow policies, retrying from the
queue when there is no buffer dir, shutting down while the sender logs, flushing under steady
logging, and the sender's state machine."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest
import requests

from archiver.client import DROP_NEW, DROP_OLD, ArchiveHandler, SenderEvent, SenderState, render, transition
from conftest import cat_json, named_logger, wait_until

AUTH = {"ARCHIVER_AUTH_TOKENS": "t0ken", "ARCHIVER_AUTH_BASIC": "alice:s3crét"}  # non-ASCII: encoded as HTTPHandler does


def _messages(data_dir: Path, stream: str) -> list[str]:
    return [record["message"] for record in cat_json(data_dir, "--stream", stream)]


def _responses(url: str) -> dict[str, int]:
    """The sink's count of answers by status code (the AUTH token reads /_status)."""
    status = requests.get(f"{url}/_status", headers={"Authorization": "Bearer t0ken"}, timeout=10).json()
    return {"401": 0, **status["responses"]}


def _buffered_lines(buffer_dir: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in buffer_dir.glob("*.ndjson"))


def test_token_and_basic_credentials_get_every_record_archived(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, env=AUTH)
    handlers = {
        "token": ArchiveHandler(f"{sink.url}/token", token="t0ken", batch_size=50, flush_interval=0.05),
        "basic": ArchiveHandler(f"{sink.url}/basic", credentials=("alice", "s3crét"), batch_size=50, flush_interval=0.05),
    }
    for stream, handler in handlers.items():
        logger = named_logger(f"auth.{stream}", handler)
        for n in range(200):
            logger.info("%s %d", stream, n)
        handler.close()
        assert (handler.sent, handler.dropped, handler.refused) == (200, 0, 0)
    assert sink.stop() == 0
    for stream in handlers:
        assert _messages(sink.data_dir, stream) == [f"{stream} {n}" for n in range(200)]


def test_wrong_credentials_keep_the_records_and_say_so_once(start_sink, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, env=AUTH)
    buffer_dir = tmp_path / "buffer"
    wrong = ArchiveHandler(f"{sink.url}/app", token="guess", buffer_dir=buffer_dir, batch_size=5, flush_interval=0.05)
    logger = named_logger("auth.wrong", wrong)
    for n in range(20):
        logger.error("kept %d", n)
    wait_until(lambda: _responses(sink.url)["401"] >= 3, "several tries answered 401, with backoff between them")
    wrong.close()
    assert (wrong.sent, wrong.refused, wrong.dropped) == (0, 0, 0)  # not refused for good, not dropped
    assert _buffered_lines(buffer_dir) == 20
    assert capsys.readouterr().err.count("answered 401") == 1

    unbuffered = ArchiveHandler(f"{sink.url}/app", credentials=("alice", "guess"), flush_interval=0.05)
    named_logger("auth.unbuffered", unbuffered).error("nowhere to keep it")
    unbuffered.close()
    assert (unbuffered.sent, unbuffered.refused, unbuffered.dropped) == (0, 0, 1)  # counted at close, and said
    assert capsys.readouterr().err.count("answered 401") == 1

    right = ArchiveHandler(f"{sink.url}/app", token="t0ken", buffer_dir=buffer_dir, flush_interval=0.05)  # restarted, fixed
    right.close()
    assert right.sent == 20 and not list(buffer_dir.glob("*.ndjson"))
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "app") == [f"kept {n}" for n in range(20)]


def test_tls_with_secure_and_a_context(start_sink, tls_files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink(None, env={"ARCHIVER_SERVER_TLS_CERT": str(tls_files["cert"]),
                                 "ARCHIVER_SERVER_TLS_KEY": str(tls_files["key"]), **AUTH})
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    plain = sink.url.replace("https://", "http://")
    handler = ArchiveHandler(f"{plain}/tls", secure=True, context=context, credentials=("alice", "s3crét"), flush_interval=0.05)
    assert handler.url.startswith("https://")
    logger = named_logger("tls", handler)
    for n in range(10):
        logger.info("over tls %d", n)
    handler.close()
    assert handler.sent == 10
    assert context.cert_store_stats()["x509_ca"] == 1  # verified with the caller's trust alone
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "tls") == [f"over tls {n}" for n in range(10)]


def test_options_that_cannot_work_together_are_refused(tmp_path: Path) -> None:
    first = ArchiveHandler("http://127.0.0.1:9/app", buffer_dir=tmp_path)
    with pytest.raises(ValueError, match="in use"):  # both would send the same records
        ArchiveHandler("http://127.0.0.1:9/app", buffer_dir=tmp_path)
    first.close()
    ArchiveHandler("http://127.0.0.1:9/app", buffer_dir=tmp_path).close()  # free again once closed
    with pytest.raises(ValueError, match="context"):
        ArchiveHandler("http://127.0.0.1:9/app", context=ssl.create_default_context())
    with pytest.raises(ValueError, match="one"):
        ArchiveHandler("http://127.0.0.1:9/app", token="t", credentials=("u", "p"))


@pytest.fixture
def down_sink() -> Iterator[tuple[str, list[int]]]:
    """A sink that is down but countable: a socket that accepts each connection and closes it
    at once. Yields its URL and a one-element list holding how many connections it took."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    connections = [0]
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue
            connections[0] += 1

    thread = threading.Thread(target=accept)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/app", connections
    done.set()
    thread.join()
    server.close()


def _log_for(logger_name: str, handler: ArchiveHandler, seconds: float, burst: int, pause: float) -> int:
    """Log bursts of records for ``seconds``; the number logged."""
    logger = named_logger(logger_name, handler)
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(burst):
            logger.warning("record %d", count)
            count += 1
        time.sleep(pause)  # paces the load on purpose: bursts with gaps, as an application logs
    return count


# Backoff waits at least 0.05, 0.1, 0.2, 0.4, 0.8 s (half of 0.1 * 2**n): at most 6 tries in 2 s,
# then flush() and close() try once each. A retry per emit() would make thousands.
MAX_TRIES = 10


def test_an_outage_costs_a_few_tries_however_fast_records_come(down_sink) -> None:  # type: ignore[no-untyped-def]
    url, connections = down_sink
    # a queue that does not fill: every emit() finds a full batch waiting, and notifies
    handler = ArchiveHandler(url, batch_size=10, queue_size=100_000, flush_interval=0.05, timeout=1)
    logged = _log_for("outage.fast", handler, seconds=2, burst=100, pause=0.01)
    handler.close()
    assert 2 <= connections[0] <= MAX_TRIES
    assert handler.sent == 0 and handler.dropped == logged  # counted: nowhere to keep them at close


def test_an_outage_with_a_buffer_dir_spools_to_disk_between_tries(down_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, connections = down_sink
    buffer_dir = tmp_path / "buffer"
    handler = ArchiveHandler(url, batch_size=50, queue_size=200, flush_interval=0.05, buffer_dir=buffer_dir, timeout=1)
    logged = _log_for("outage.buffered", handler, seconds=2, burst=100, pause=0.05)  # ~10x what the queue holds
    handler.close()
    assert 2 <= connections[0] <= MAX_TRIES
    assert handler.dropped == 0 and _buffered_lines(buffer_dir) == logged


def test_overflow_policy_decides_which_records_a_full_queue_keeps(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    kept = {DROP_OLD: range(150, 200), DROP_NEW: range(50)}
    for overflow in kept:
        # batch_size above queue_size and a long flush_interval: nothing leaves before close()
        handler = ArchiveHandler(f"{sink.url}/{overflow}", overflow=overflow, queue_size=50, batch_size=100, flush_interval=60)
        logger = named_logger(f"overflow.{overflow}", handler)
        for n in range(200):
            logger.info("record %d", n)
        handler.close()
        assert (handler.sent, handler.dropped) == (50, 150)
    assert sink.stop() == 0
    for overflow, numbers in kept.items():
        assert _messages(sink.data_dir, overflow) == [f"record {n}" for n in numbers]


def test_without_a_buffer_dir_records_from_an_outage_arrive_once_the_sink_is_back(start_sink) -> None:  # type: ignore[no-untyped-def]
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]  # free again once closed: nothing listens there
    handler = ArchiveHandler(f"http://127.0.0.1:{port}/app", batch_size=10, flush_interval=0.05)
    logger = named_logger("outage.queued", handler)
    for n in range(30):
        logger.error("during the outage %d", n)
    wait_until(lambda: handler._failures >= 3, "a few refused tries")
    assert (handler.sent, handler.dropped) == (0, 0)
    sink = start_sink(None, "--port", str(port))
    deadline = time.monotonic() + 8
    while handler.sent < 30 and time.monotonic() < deadline:  # the backoff's own retry, no flush()
        time.sleep(0.05)
    assert handler.sent == 30
    handler.close()
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "app") == [f"during the outage {n}" for n in range(30)]


# Root at DEBUG with the handler on it, as an application debugging its own requests would be:
# the sender's urllib3 logs each connection and POST back into the handler. A timeout far above
# the test's bound, so a shutdown that waits it out is told apart from one that just works.
APP_LOGGING_AT_DEBUG = """
import logging, sys
from archiver.client import ArchiveHandler

class Reporting(ArchiveHandler):
    def close(self) -> None:
        super().close()
        print(self.sent, self.dropped, self.skipped)

root = logging.getLogger()
root.setLevel(logging.DEBUG)
root.addHandler(Reporting(sys.argv[1], timeout=60))
for n in range(5):
    logging.getLogger("app").info("record %d", n)
"""  # exits normally: logging.shutdown() flushes and closes the handler, holding its lock


def test_an_application_logging_at_debug_exits_with_every_record_sent(start_sink) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    # a hang detector, not a speed test: the deadlock this guards against lasts the handler's timeout
    app = subprocess.run([sys.executable, "-c", APP_LOGGING_AT_DEBUG, f"{sink.url}/app"], capture_output=True, timeout=30)
    assert (app.returncode, app.stderr) == (0, b"")
    sent, dropped, skipped = map(int, app.stdout.split())
    assert (sent, dropped) == (5, 0)
    assert skipped > 0  # the sender did log, and its records were set aside
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "app") == [f"record {n}" for n in range(5)]  # and none of urllib3's


@dataclass
class LocalSink:
    """A sink in this process: answers 200 to every POST, keeping the body, after running each
    of ``on_post``."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    on_post: list[Callable[[], None]] = field(default_factory=list)

    def messages(self) -> list[str]:
        return [orjson.loads(line)["message"] for body in self.bodies for line in body.splitlines()]


@pytest.fixture
def local_sink() -> Iterator[LocalSink]:
    sink = LocalSink()

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sink.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            for action in sink.on_post:
                action()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: nothing on stderr per request."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/app"
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield sink
    server.shutdown()
    thread.join()
    server.server_close()


def test_flush_under_steady_logging_waits_only_for_what_was_queued_before_it(local_sink: LocalSink) -> None:
    handler = ArchiveHandler(local_sink.url, flush_interval=60, timeout=60)
    logger = named_logger("steady", handler)
    # another thread logs while each batch is taken: however fast the sender, the queue is never empty
    local_sink.on_post.append(lambda: logger.info("logged while a batch was taken"))
    for n in range(5):
        logger.info("before %d", n)
    flusher = threading.Thread(target=handler.flush, daemon=True)
    flusher.start()
    flusher.join(30)  # a hang detector: waiting for an empty queue lasts the handler's timeout
    assert not flusher.is_alive()
    assert local_sink.messages()[:5] == [f"before {n}" for n in range(5)]
    handler.close()
    logged = 5 + len(local_sink.bodies)  # one more record per batch taken
    assert handler.sent == len(local_sink.messages())
    assert handler.sent + handler.dropped == logged  # close() counts what was logged after it


def _buffered_messages(buffer_dir: Path) -> list[str]:
    return [orjson.loads(line)["message"] for path in sorted(buffer_dir.glob("*.ndjson"))
            for line in path.read_bytes().splitlines()]


BURST = 100_000


@pytest.mark.parametrize("buffered", [False, True], ids=["queue", "buffer_dir"])
def test_a_burst_to_a_healthy_sink_is_delivered_whole(start_sink, tmp_path: Path, buffered: bool) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    handler = ArchiveHandler(f"{sink.url}/burst", buffer_dir=tmp_path / "buffer" if buffered else None)  # defaults
    logger = named_logger("burst", handler)
    for n in range(BURST):
        logger.info("record %d", n)
    wait_until(lambda: handler.sent == BURST or handler.dropped > 0, "the burst to be sent")
    handler.close()
    assert (handler.sent, handler.dropped, handler.refused) == (BURST, 0, 0)
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "burst") == [f"record {n}" for n in range(BURST)]


class _Recording(ArchiveHandler):
    """Keeps the sender's states in the order it took them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.states: list[SenderState] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _fire(self, event: SenderEvent) -> None:
        super()._fire(event)
        self.states.append(self.state)


def test_an_outage_past_block_timeout_drops_without_waiting_and_says_so_once(start_sink, capsys) -> None:  # type: ignore[no-untyped-def]
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]  # free again once closed: nothing listens there
    handler = _Recording(f"http://127.0.0.1:{port}/app", queue_size=100, batch_size=10, block_timeout=0.5, flush_interval=0.05)
    logger = named_logger("outage.block", handler)

    def log(first: int, count: int) -> None:
        for n in range(first, first + count):
            logger.info("record %d", n)

    # Waiting per call (block_timeout each) would take over ten minutes: a hang detector.
    during = threading.Thread(target=log, args=(0, 5_000))
    during.start()
    during.join(120)
    assert not during.is_alive()
    assert handler.sent == 0 and handler.dropped >= 5_000 - 100 - 10  # the queue (plus a batch put back) waits
    assert handler.state in (SenderState.OUTAGE_DROPPING, SenderState.OUTAGE_RETRYING)
    assert "dropped" not in capsys.readouterr().err  # the episode is not over

    sink = start_sink(None, "--port", str(port))
    wait_until(lambda: handler.sent + handler.dropped == 5_000, "the queue to be sent once the sink is back")
    err = ""
    while "dropped" not in err:  # reported once the sender falls idle
        err += capsys.readouterr().err
        time.sleep(0.02)
    dropped = handler.dropped
    assert err.count("--- Logging error ---") == 1 and f"dropped {dropped} records" in err and "block_timeout" in err

    log(5_000, 1_000)  # the sink answers again: a full queue waits, nothing is dropped
    handler.close()
    assert (handler.sent, handler.dropped) == (5_000 - dropped + 1_000, dropped)
    assert "dropped" not in capsys.readouterr().err
    assert sink.stop() == 0
    messages = _messages(sink.data_dir, "app")
    assert len(messages) == handler.sent and messages[-1_000:] == [f"record {n}" for n in range(5_000, 6_000)]
    assert messages[:100] == [f"record {n}" for n in range(100)]  # the oldest were kept, later ones dropped
    # tries and backoff until block_timeout, then dropping with tries, a success, sends, close()
    letters = {SenderState.IDLE: "I", SenderState.SENDING: "S", SenderState.BACKOFF: "B", SenderState.OUTAGE_DROPPING: "D",
               SenderState.OUTAGE_RETRYING: "R", SenderState.CLOSING: "C", SenderState.STOPPED: "X"}
    path = "".join(letters[state] for state in handler.states)
    assert re.fullmatch(r"S(BS)*B?D(RD)*R(IS)*ICX", path), path


def test_buffer_max_bytes_drops_the_oldest_and_counts_them(down_sink, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url, _ = down_sink
    buffer_dir = tmp_path / "buffer"
    bound = 64 * 1024
    handler = ArchiveHandler(url, buffer_dir=buffer_dir, buffer_max_bytes=bound, batch_size=50, flush_interval=0.05, timeout=1)
    logger = named_logger("buffer.bound", handler)
    for n in range(2_000):  # ~200 bytes each: six times the bound
        logger.info("record %d", n)
    assert sum(path.stat().st_size for path in buffer_dir.glob("*.ndjson")) <= bound
    handler.close()
    dropped = handler.dropped
    assert dropped > 0 and handler.sent == 0
    assert _buffered_messages(buffer_dir) == [f"record {n}" for n in range(dropped, 2_000)]  # the newest kept
    err = capsys.readouterr().err
    assert err.count(f"dropped {dropped} records") == 1 and "buffer_max_bytes" in err


def test_the_buffer_is_fsynced_every_flush_interval(down_sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url, _ = down_sink
    synced: list[str] = []
    fdatasync = os.fdatasync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    buffer_dir = tmp_path / "buffer"
    handler = ArchiveHandler(url, buffer_dir=buffer_dir, flush_interval=0.05, timeout=1)
    logger = named_logger("buffer.fsync", handler)
    logger.info("first")
    (segment,) = [str(path) for path in buffer_dir.glob("*.ndjson")]  # written before emit() returned
    wait_until(lambda: segment in synced, "the first record to be fsynced")
    count = len(synced)
    logger.info("second")
    wait_until(lambda: synced[count:].count(segment) > 0, "the second record to be fsynced")
    handler.close()
    assert _buffered_messages(buffer_dir) == ["first", "second"]


# The application of the kill test: buffer_dir, a sink that takes three batches and then never
# answers; it logs everything, waits for those three, says so and waits to be killed.
APP_KILLED = """
import sys, time, logging
from archiver.client import ArchiveHandler

handler = ArchiveHandler(sys.argv[1], buffer_dir=sys.argv[2], batch_size=100, flush_interval=0.05, timeout=600)
logger = logging.getLogger("app")
logger.propagate = False
logger.addHandler(handler)
logger.setLevel(logging.INFO)
for n in range(int(sys.argv[3])):
    logger.info("record %d", n)
while handler.sent < 300:
    time.sleep(0.01)
print("ready", flush=True)
time.sleep(600)  # until the test kills this process
"""


def test_a_killed_application_loses_nothing_its_restart_sends_the_rest(start_sink, local_sink: LocalSink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    buffer_dir, count = tmp_path / "buffer", 5_000
    release = threading.Event()
    local_sink.on_post.append(lambda: len(local_sink.bodies) > 3 and release.wait(60))  # the 4th never answered in time
    with subprocess.Popen([sys.executable, "-c", APP_KILLED, local_sink.url, str(buffer_dir), str(count)],
                          stdout=subprocess.PIPE) as app:
        try:
            assert app.stdout is not None and app.stdout.readline() == b"ready\n"
            os.kill(app.pid, signal.SIGKILL)
        finally:
            app.kill()
            app.wait(30)
            release.set()
    acknowledged = local_sink.messages()[:300]  # the three batches answered 200
    assert acknowledged == [f"record {n}" for n in range(300)]
    sink = start_sink()
    restarted = ArchiveHandler(f"{sink.url}/app", buffer_dir=buffer_dir, flush_interval=0.05)
    wait_until(lambda: not list(buffer_dir.glob("*.ndjson")), "the buffer to be sent")
    restarted.close()
    assert (restarted.dropped, restarted.refused) == (0, 0)
    assert sink.stop() == 0
    resent = _messages(sink.data_dir, "app")
    assert resent[-(count - 300):] == [f"record {n}" for n in range(300, count)]  # no gap
    assert len(resent) == restarted.sent < count  # from the cursor on, not from the start


def test_a_record_over_max_body_bytes_is_refused_alone_and_the_sink_keeps_its_digest(start_sink) -> None:  # type: ignore[no-untyped-def]
    limit = 64 * 1024
    sink = start_sink(None, env={"ARCHIVER_SERVER_MAX_BODY_BYTES": str(limit)})
    handler = ArchiveHandler(f"{sink.url}/app", max_body_bytes=limit, flush_interval=60)
    records: list[logging.LogRecord] = []
    handler.addFilter(lambda record: records.append(record) or True)
    logger = named_logger("oversize", handler)
    for n in range(300):  # about 100 KB: more than one body
        logger.info("small %d", n)
        if n == 150:
            logger.info("huge %s", "x" * 200_000)
    handler.flush()  # all in one batch: split at the 413 until the big record is alone
    handler.close()
    assert (handler.sent, handler.refused, handler.dropped) == (300, 1, 0)
    assert sink.stop() == 0
    assert _messages(sink.data_dir, "app") == [f"small {n}" for n in range(300)]
    huge = orjson.dumps(render(records[151], logging.Formatter()), default=repr, option=orjson.OPT_APPEND_NEWLINE)
    rejected = [r["fields"] for r in cat_json(sink.data_dir, "--stream", "_rejected")]
    assert len(rejected) == 1 and "over the limit" in rejected[0]["reason"]
    assert rejected[0]["raw"].encode() == huge[:64 * 1024]
    assert (rejected[0]["body_bytes"], rejected[0]["body_sha256"]) == (len(huge), hashlib.sha256(huge).hexdigest())


# Every transition the sender may take; any other pair is a bug and raises.
EXPECTED_TRANSITIONS = {
    (SenderState.IDLE, SenderEvent.DUE): SenderState.SENDING,
    (SenderState.IDLE, SenderEvent.CLOSE): SenderState.CLOSING,
    (SenderState.SENDING, SenderEvent.SENT): SenderState.IDLE,
    (SenderState.SENDING, SenderEvent.FAILED): SenderState.BACKOFF,
    (SenderState.SENDING, SenderEvent.FAILED_LONG): SenderState.OUTAGE_DROPPING,
    (SenderState.BACKOFF, SenderEvent.RETRY_DUE): SenderState.SENDING,
    (SenderState.BACKOFF, SenderEvent.BLOCK_EXPIRED): SenderState.OUTAGE_DROPPING,
    (SenderState.BACKOFF, SenderEvent.CLOSE): SenderState.CLOSING,
    (SenderState.OUTAGE_DROPPING, SenderEvent.RETRY_DUE): SenderState.OUTAGE_RETRYING,
    (SenderState.OUTAGE_DROPPING, SenderEvent.CLOSE): SenderState.CLOSING,
    (SenderState.OUTAGE_RETRYING, SenderEvent.SENT): SenderState.IDLE,
    (SenderState.OUTAGE_RETRYING, SenderEvent.FAILED): SenderState.OUTAGE_DROPPING,
    (SenderState.OUTAGE_RETRYING, SenderEvent.FAILED_LONG): SenderState.OUTAGE_DROPPING,
    (SenderState.CLOSING, SenderEvent.STOP): SenderState.STOPPED,
}


@pytest.mark.parametrize("state", list(SenderState), ids=lambda state: state.name)
@pytest.mark.parametrize("event", list(SenderEvent), ids=lambda event: event.name)
def test_sender_transitions(state: SenderState, event: SenderEvent) -> None:
    expected = EXPECTED_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(ValueError, match=f"no transition from {state.name} on {event.name}"):
            transition(state, event)
    else:
        assert transition(state, event) is expected
