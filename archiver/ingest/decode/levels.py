"""One vocabulary for levels: Python's names, with syslog severities and aliases mapped onto them."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_INTEGER_TEXT = re.compile(r"-?[0-9]{1,18}")
# Python logging names, syslog severities and common aliases, upper-cased.
_LEVEL_ALIASES = {
    "WARN": "WARNING",
    "FATAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "EMERG": "CRITICAL",
    "EMERGENCY": "CRITICAL",
    "ALERT": "CRITICAL",
    "PANIC": "CRITICAL",
    "ERR": "ERROR",
    "NOTICE": "INFO",
    "INFORMATIONAL": "INFO",
    "TRACE": "DEBUG",
}
_PYTHON_LEVELS = {0: "NOTSET", 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
_SYSLOG_SEVERITIES = ["CRITICAL", "CRITICAL", "CRITICAL", "ERROR", "WARNING", "INFO", "INFO", "DEBUG"]


def normalize_level(value: Any) -> str | None:
    """One vocabulary for levels: Python names; syslog severities 0-7 and names mapped onto them."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _level_name(value) if len(value) <= 64 else value.strip().upper()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if 0 <= value < len(_SYSLOG_SEVERITIES):
            return _SYSLOG_SEVERITIES[value]
        return _PYTHON_LEVELS.get(value, f"Level {value}")
    return str(value)


@lru_cache(maxsize=1024)
def _level_name(value: str) -> str | None:
    """Level texts repeat on every record: each is worked out once."""
    text = value.strip().upper()
    if _INTEGER_TEXT.fullmatch(text):
        return normalize_level(int(text))
    return _LEVEL_ALIASES.get(text, text) or None
