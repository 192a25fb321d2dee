"""Event times: epoch seconds (or ms, us, ns), ISO-8601, and syslog's year-less dates."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from archiver.common.units import format_ts

TIME_KEYS = ("created", "@timestamp", "timestamp", "time", "ts", "ISODATE", "DATE")
# syslog's BSD timestamp, as syslog-ng's DATE macro gives it: no year, no zone.
_SYSLOG_DATE = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})")
_MONTHS = {name: n for n, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# Epoch numbers above these are taken as milliseconds, microseconds, nanoseconds.
_EPOCH_SCALES = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))


def event_time(fields: dict[str, Any], received: float, keys: tuple[str, ...] = TIME_KEYS) -> str:
    """The first parseable of ``keys`` (created / @timestamp / timestamp / time / ts, ...), else
    the receive time. A record shape passes only the keys it has."""
    for key in keys:
        value = fields.get(key)
        if value is None or isinstance(value, bool):
            continue
        moment = _parse_syslog_date(value, received) if key == "DATE" else _parse_moment(value)
        if moment is not None:
            return moment
    return format_ts(received)


def _parse_syslog_date(value: Any, received: float) -> str | None:
    return syslog_date(str(value).strip(), received)


def syslog_date(value: str, reference: float) -> str | None:
    """``Jan  2 03:04:05`` in the sink's local time zone, in the year that puts it at most a day
    after ``reference`` (the receive time, or a file's mtime: so late December read in January
    lands in the year before)."""
    return _syslog_date(value, int(reference))


@lru_cache(maxsize=4096)
def _syslog_date(value: str, received: int) -> str | None:
    match = _SYSLOG_DATE.fullmatch(value)
    if match is None or match.group(1) not in _MONTHS:
        return None
    month, day, hour, minute, second = _MONTHS[match.group(1)], *map(int, match.groups()[1:])
    year = time.localtime(received).tm_year
    for candidate in (year, year - 1):
        try:
            moment = time.mktime((candidate, month, day, hour, minute, second, 0, 0, -1))
        except (OverflowError, ValueError):
            return None
        if moment <= received + 86400:
            return format_ts(moment)
    return None


def _parse_moment(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return parse_iso(value)
    if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        return None
    try:
        for threshold, scale in _EPOCH_SCALES:
            if abs(value) >= threshold:
                value = value / scale  # an integer of hundreds of digits overflows here
                break
        return format_ts(value)
    except (OverflowError, OSError, ValueError):
        return None


def parse_iso(text: str) -> str | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return format_ts(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        return None
