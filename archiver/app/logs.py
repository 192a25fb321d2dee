"""The sink's own logs: the classic one-line text by default, or one JSON object a line
(``log_format = "json"``) for log shippers that parse them. Either way every line is redacted
as it is written, whoever logged it: a library's debug line may quote a request URL that holds
a Tahoe write cap. Read caps stay whole: the root read cap is what an operator looks for here."""

from __future__ import annotations

import logging
import sys

import orjson

from archiver.common.redaction import redact
from archiver.common.units import format_ts

LOG_FORMATS = ("text", "json")


def _redact(text: str) -> str:
    return redact(text, keep_read_caps=True)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}``, plus ``exc`` when an exception is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": format_ts(record.created), "level": record.levelname, "logger": record.name,
                "message": _redact(record.getMessage())}
        if record.exc_info:
            line["exc"] = _redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = _redact(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message``, with any traceback after it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


def configure_logging(level: str, log_format: str) -> None:
    """Root logging to stderr at ``level``, as text or JSON lines. Quiets libraries whose own
    lines say nothing useful (APScheduler's every run) or hold caps (urllib3's DEBUG lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
