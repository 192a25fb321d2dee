"""The stdlib logging.handlers.HTTPHandler against the real HTTP app (in-process, on a real
socket): every record comes back."""

from __future__ import annotations

import logging
import logging.handlers
import uuid
from urllib.parse import urlsplit

import pytest

from conftest import StartLocal, read_json

# The stdlib HTTPHandler never closes its connection object (CPython behaviour, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _handler(url: str, stream: str, method: str) -> logging.Handler:
    return logging.handlers.HTTPHandler(urlsplit(url).netloc, f"/{stream}", method=method)


def test_httphandler_post_and_get_three_streams(local_sink: StartLocal) -> None:
    sink = local_sink()
    sent: list[tuple[str, logging.LogRecord]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sent.append((stream, record))

    run = uuid.uuid4().hex
    for stream, method in (("app", "POST"), ("audit", "GET"), ("jobs.nightly", "POST")):
        logger = logging.getLogger(f"test.{stream}.{run}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handlers = [_handler(sink.url, stream, method), Capture()]
        for handler in handlers:
            logger.addHandler(handler)
        logger.info("plain message %s", run)
        logger.warning("user %s logged in %d times from %r", "alice", 3, ("10.0.0.1", 443))
        logger.error("ünïcode ✓ %s — %s", "名前", "ß")
        logger.debug("a dict %(k)s", {"k": "v"})
        logger.info("100% literal, no args")
        logger.info("extra fields", extra={"request_id": "r-17", "user_id": 42, "ratio": 0.5})
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("failed with %s", "zero")
        logger.info("stack below", stack_info=True)
        for handler in handlers:
            logger.removeHandler(handler)

    sink.stop()
    records = read_json(sink.data_dir)
    assert len(records) == len(sent) == 24
    by_key = {(r["stream"], r["message"]): r for r in records}
    for stream, record in sent:
        archived = by_key[(stream, record.getMessage())]
        assert archived["logger"] == record.name
        assert archived["level"] == record.levelname
        assert archived["source"] == "httphandler"
        assert archived["fields"]["lineno"] == record.lineno
        assert archived["fields"]["created"] == record.created
        assert archived["fields"]["msg"] == record.msg
    extra = by_key[("app", "extra fields")]["fields"]
    assert (extra["request_id"], extra["user_id"], extra["ratio"]) == ("r-17", 42, 0.5)
    failed = by_key[("audit", "failed with zero")]["fields"]
    assert "ZeroDivisionError" in failed["exc_info"]
    stacked = by_key[("audit", "stack below")]["fields"]
    assert stacked["stack_info"].startswith("Stack (most recent call last):")
