"""Mapping a client's fields onto the canonical record: which keys give the message, logger,
level and time, worked out once per record shape. Nothing the client sent is dropped."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from archiver.format.record import Context
from archiver.ingest.decode.levels import normalize_level
from archiver.ingest.decode.times import TIME_KEYS, event_time

_LEVEL_KEYS = ("levelname", "level", "severity", "PRIORITY", "priority", "levelno")
_LOGGER_KEYS = ("logger", "logger_name", "name")
# After the logger keys and python-logstash-async's ``extra.logger_name``: a program name, which
# names a process rather than a logger.
_PROGRAM_KEYS = ("PROGRAM", "program", "_logger_name")
# GELF only: graypy puts the logger name in ``facility``, or in ``_logger`` when it was given a
# facility of its own. Elsewhere a facility is syslog's (syslog-ng's ``FACILITY=user``).
_GELF_LOGGER_KEYS = ("_logger", "facility")
# "event": Splunk HEC's field (splunk_handler), a string or an object holding "message".
_MESSAGE_KEYS = ("message", "MESSAGE", "short_message", "full_message", "log", "event")


@dataclass(frozen=True, slots=True)
class Roles:
    """The keys of one record shape that can give its message, logger, level and time, in
    priority order. Records from one client share a shape, so this is worked out once per shape
    (the hot path of bulk ingest: it saves a dozen lookups a record)."""

    message: tuple[str, ...]
    msg: bool
    logger: tuple[str, ...]
    extra: bool
    program: tuple[str, ...]
    level: tuple[str, ...]
    time: tuple[str, ...]
    rsyslog: bool


@lru_cache(maxsize=1024)
def roles_of(keys: tuple[str, ...]) -> Roles:
    present = frozenset(keys)

    def having(candidates: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(key for key in candidates if key in present)

    gelf = "version" in present and "short_message" in present
    program = having(_PROGRAM_KEYS) + (having(_GELF_LOGGER_KEYS) if gelf else ())
    # rsyslog's msg keeps the space after the tag's colon; syslog-ng drops it and says so with
    # LEGACY_MSGHDR (the header it split off, that space included).
    rsyslog = "MESSAGE" in present and "PROGRAM" in present and "LEGACY_MSGHDR" not in present
    return Roles(
        having(_MESSAGE_KEYS), "msg" in present, having(_LOGGER_KEYS), "extra" in present, program,
        having(_LEVEL_KEYS), having(TIME_KEYS), rsyslog,
    )


def first_present(fields: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = fields[key]
        if value is not None and value != "":
            return value
    return None


def logger_of(fields: dict[str, Any], roles: Roles) -> Any:
    """The logger name: a logger key, python-logstash-async's ``extra.logger_name``, then a
    program name (or GELF's facility)."""
    logger = first_present(fields, roles.logger) if roles.logger else None
    if logger is None and roles.extra:
        extra = fields["extra"]
        if type(extra) is dict:
            logger = extra.get("logger_name") or None
    if logger is None and roles.program:
        logger = first_present(fields, roles.program)
    return logger


def canonical_record(
    fields: dict[str, Any], message: str | None, source: str, ctx: Context, roles: Roles | None = None,
    texts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``texts``: a form's values as sent, for the logger name (a logger named "None" or "42"
    is not null or a number)."""
    if roles is None:
        roles = roles_of(tuple(fields))
    logger = logger_of(texts if texts is not None else fields, roles)
    level = first_present(fields, roles.level) if roles.level else None
    return {
        "ts": event_time(fields, ctx.received, roles.time) if roles.time else ctx.received_ts,
        "level": None if level is None else normalize_level(level),
        "logger": None if logger is None else str(logger),
        "message": message,
        "stream": ctx.stream,
        "source": source,
        "peer": ctx.peer,
        "received": ctx.received_ts,
        "fields": fields,
    }
