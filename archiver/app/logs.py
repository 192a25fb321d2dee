"""The sink's own logs: the classic one-line text by default, or one JSON object a line
(``log_format = "json"``) for log shippers that parse them."""

from __future__ import annotations

import logging
import sys

import orjson

from archiver.common.units import format_ts

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}``, plus ``exc`` when an exception is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": format_ts(record.created), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Root logging to stderr at ``level``, as text or JSON lines. Quiets libraries whose own
    lines say nothing useful (APScheduler's every run) or hold caps (urllib3's DEBUG lines)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
