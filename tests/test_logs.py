"""The sink's own log lines never carry a secret, whichever library logged it."""

from __future__ import annotations

import logging

import orjson
import pytest

from archiver.app.logs import configure_logging

WRITE_CAP = "URI:DIR2:ovtbqwdqvg2f7s2xvkz5ua3ili:6ts5f6pqdhbrv7cr5u4ycb5xjdh3yvdxgy6nfh5ofzh6osbvqkpa"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_debug_line_quoting_a_write_cap_is_redacted(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    try:
        configure_logging("debug", log_format)
        logging.getLogger("some.library").debug('"PUT /uri/%s/app?t=mkdir HTTP/1.1" 201', WRITE_CAP)
        try:
            raise RuntimeError(f"cannot open tahoe://127.0.0.1:3456/{WRITE_CAP}?token=s3cret")
        except RuntimeError:
            logging.getLogger("archiver").exception("failed")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert WRITE_CAP.split(":")[2] not in err and "s3cret" not in err and "URI:DIR2:ovtb…" in err
    if log_format == "json":
        assert [orjson.loads(line)["logger"] for line in err.splitlines()] == ["some.library", "archiver"]
