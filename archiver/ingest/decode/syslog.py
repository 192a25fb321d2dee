"""Syslog lines as files keep them: RFC 5424, RFC 3164 (with or without ``<PRI>``, as
``/var/log/syslog`` has them) and the RFC 3339-stamped form rsyslog writes by default.

A year-less RFC 3164 date is placed by ``reference``, the file's mtime: the year that puts it
at most a day after the file was last written, so a December line in a file modified in
January belongs to the year before. Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

from archiver.ingest.decode.times import parse_iso, syslog_date

_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
               "ftp", "ntp", "security", "console", "solaris-cron", *(f"local{n}" for n in range(8)))
_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_RFC5424 = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ([-[].*)", re.DOTALL)
_BSD_DATE = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
_ISO_DATE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"
_RFC3164 = re.compile(
    rf"(?:<(\d{{1,3}})>)?(?:({_BSD_DATE})|({_ISO_DATE})) (\S+) (?:([^\s:\[\]]{{1,64}})(?:\[([^\]\s]{{1,32}})\])?: ?)?(.*)",
    re.DOTALL,
)
_SD_PARAM = re.compile(r' ([^\s=\]"]{1,32})="((?:[^"\\]|\\.)*)"')
_SD_ESCAPE = re.compile(r"\\([\"\\\]])")


def looks_like_syslog(line: str) -> bool:
    """Whether a line is syslog in one of the forms :func:`parse_syslog` reads."""
    return _RFC5424.match(line) is not None or _RFC3164.fullmatch(line) is not None


def parse_syslog(line: str, reference: float) -> tuple[str, dict[str, Any], str] | None:
    """``(ts, fields, message)`` of one line, or None when it is not syslog. ``fields`` holds
    what the header said: facility, severity, host, app, procid, msgid, structured data."""
    match = _RFC5424.match(line)
    if match is not None:
        return _rfc5424(match)
    match = _RFC3164.fullmatch(line)
    if match is None:
        return None
    pri, bsd, iso, host, app, procid, message = match.groups()
    ts = syslog_date(bsd, reference) if bsd is not None else parse_iso(iso)
    if ts is None:
        return None
    fields = _priority(pri) if pri is not None else {}
    if fields is None:
        return None
    fields["host"] = host
    if app is not None:
        fields["app"] = app
    if procid is not None:
        fields["procid"] = procid
    return ts, fields, message


def _rfc5424(match: re.Match[str]) -> tuple[str, dict[str, Any], str] | None:
    pri, stamp, host, app, procid, msgid, rest = match.groups()
    fields = _priority(pri)
    ts = None if stamp == "-" else parse_iso(stamp)
    if fields is None or ts is None:
        return None
    for key, value in (("host", host), ("app", app), ("procid", procid), ("msgid", msgid)):
        if value != "-":
            fields[key] = value
    if rest.startswith("-"):
        message = rest[2:] if rest.startswith("- ") else rest[1:]
        if rest[1:2] not in ("", " "):
            return None
    else:
        parsed = _structured_data(rest)
        if parsed is None:
            return None
        fields["structured_data"], message = parsed
    return ts, fields, message.removeprefix("\ufeff")


def _priority(text: str) -> dict[str, Any] | None:
    value = int(text)
    if value > 191:
        return None
    return {"facility": _FACILITIES[value >> 3], "severity": _SEVERITIES[value & 7]}


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]], str] | None:
    """``[id k="v" ...][id2 ...] MSG``: the elements by id, and the message after them."""
    elements: dict[str, dict[str, str]] = {}
    position = 0
    while position < len(text) and text[position] == "[":
        start, end_of_id = position + 1, position + 1
        while end_of_id < len(text) and text[end_of_id] not in " ]":
            end_of_id += 1
        if end_of_id == start or end_of_id >= len(text):
            return None
        params: dict[str, str] = {}
        position = end_of_id
        while (param := _SD_PARAM.match(text, position)) is not None:
            params[param.group(1)] = _SD_ESCAPE.sub(r"\1", param.group(2))
            position = param.end()
        if position >= len(text) or text[position] != "]":
            return None
        elements[text[start:end_of_id]] = params
        position += 1
    if position < len(text) and text[position] != " ":
        return None
    return elements, text[position + 1:]
