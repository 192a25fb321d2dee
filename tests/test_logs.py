"""The sink's own log lines never carry a write cap or a password, whichever library logged
them; a read cap, which the operator looks for there, stays whole."""

from __future__ import annotations

import logging

import orjson
import pytest

from archiver.app.logs import configure_logging

WRITE_CAP = "URI:DIR2:ovtbqwdqvg2f7s2xvkz5ua3ili:6ts5f6pqdhbrv7cr5u4ycb5xjdh3yvdxgy6nfh5ofzh6osbvqkpa"
READ_CAP = "URI:DIR2-RO:3jgk2ykxkb4gpqrzmw6pacabvy:6ts5f6pqdhbrv7cr5u4ycb5xjdh3yvdxgy6nfh5ofzh6osbvqkpa"
LOGGERS = ("test_logs.library", "test_logs.sink")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_write_caps_and_secrets_are_cut_from_every_line(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    try:
        configure_logging("debug", log_format)
        library, sink = (logging.getLogger(name) for name in LOGGERS)
        library.debug('"PUT /uri/%s/app?t=mkdir HTTP/1.1" 201', WRITE_CAP)
        sink.info("root read cap: %s", READ_CAP)
        try:
            raise RuntimeError(f"cannot open tahoe://127.0.0.1:3456/{WRITE_CAP}?token=s3cret")
        except RuntimeError:
            sink.exception("failed")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert WRITE_CAP.split(":")[2] not in err and "s3cret" not in err and "URI:DIR2:ovtb…" in err
    assert f"root read cap: {READ_CAP}" in err
    if log_format == "json":
        lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
        ours = [record for record in lines if record["logger"] in LOGGERS]
        assert [record["logger"] for record in ours] == [LOGGERS[0], LOGGERS[1], LOGGERS[1]]
        assert WRITE_CAP.split(":")[2] not in ours[2]["exc"]
