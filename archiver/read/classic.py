"""The classic one-line view of a canonical record, shared by `archiver cat` and any page that shows records."""

from __future__ import annotations

import ast
import re
from typing import Any

from archiver.format.record import encode_record

# HTTPHandler sends ``exc_info`` as ``str()`` of the tuple: ``(<class 'T'>, T('value'), <traceback object at 0x..>)``.
_EXC_INFO = re.compile(r"\(<class '([\w.]+)'>, [\w.]*\((.*)\), <traceback object at 0x[0-9a-f]+>\)", re.DOTALL)
_PLAIN_VALUE = re.compile(r"[^\s\"'=]+")


def classic_line(record: dict[str, Any]) -> str:
    """``2014-10-19 16:16:00 <logger right-aligned to 40> <LEVEL> <message>``, then the exception.

    A record without a message shows its fields instead (``curl -d abc=def`` gives ``abc=def``).
    """
    ts = record["ts"]
    logger = record.get("logger") or "-"
    level = record.get("level") or "-"
    fields = record.get("fields") or {}
    message = record.get("message")
    text = message if message else fields_text(fields)
    line = f"{ts[:10]} {ts[11:19]} {logger:>40} {level} {text}\n"
    exception = exception_text(fields)
    if exception:
        line += exception.rstrip("\n") + "\n"
    return line


def fields_text(fields: dict[str, Any]) -> str:
    """``key=value`` pairs, each key and value quoted as JSON where it is not one plain word."""
    return " ".join(f"{_word(key)}={_word(value)}" for key, value in fields.items())


def _word(value: Any) -> str:
    if type(value) is str and _PLAIN_VALUE.fullmatch(value):
        return value
    return encode_record(value)[:-1].decode()


def exception_text(fields: dict[str, Any]) -> str | None:
    """The traceback an earlier formatter put in ``exc_text``; else the exception type and value
    that HTTPHandler's ``exc_info`` names (its traceback is never sent)."""
    exc_text = fields.get("exc_text")
    if isinstance(exc_text, str) and exc_text:
        return exc_text
    exc_info = fields.get("exc_info")
    if isinstance(exc_info, str):
        return exception_named(exc_info)
    return None


def exception_named(exc_info: str) -> str | None:
    """``ZeroDivisionError: division by zero`` from HTTPHandler's ``exc_info`` text, as the last
    line of a traceback says it; None for any other text."""
    match = _EXC_INFO.fullmatch(exc_info)
    if match is None:
        return None
    name, args = match.groups()
    if not args:
        return name
    try:
        value = ast.literal_eval(args) if len(args) <= 64 * 1024 else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    return f"{name}: {value if isinstance(value, str) else args}"
