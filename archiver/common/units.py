"""Human units used by config and CLI: sizes (``64MiB``), durations (``5m``), points in time.

Pure functions; every parser raises ``ValueError`` with a message fit to show a user.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Mapping

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_AGE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[a-zA-Z]+\s*$")  # an age always names its unit
_YEAR_OR_MONTH = re.compile(r"^\s*(\d{4})(?:-(\d{2}))?\s*$")


def _quantity(value: str, units: Mapping[str, float], kind: str) -> float:
    match = _QUANTITY.match(value)
    if not match or match.group(2).lower() not in units:
        names = ", ".join(sorted(u for u in units if u))
        raise ValueError(f"{value!r} is not a {kind} (a number with one of: {names})")
    return float(match.group(1)) * units[match.group(2).lower()]


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``512``, ``64MiB`` or ``1.5GB``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        return value
    return int(_quantity(value, _SIZE_UNITS, "size"))


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as ``250ms``, ``30s``, ``5m``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    return _quantity(value, _DURATION_UNITS, "duration")


def format_ts(epoch: float) -> str:
    """The canonical record timestamp: UTC, microseconds, ``Z`` suffix."""
    seconds, micros = divmod(round(epoch * 1_000_000), 1_000_000)
    return f"{_second_text(seconds)}.{micros:06d}Z"


def ts_epoch(ts: str) -> float:
    """Epoch seconds of a canonical timestamp (the inverse of :func:`format_ts`)."""
    return datetime.fromisoformat(ts).timestamp()


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    """Records arrive in bursts within the same second: format each second once."""
    if not -62135596800 <= seconds <= 253402300799:  # years 1 to 9999, as datetime allows
        raise ValueError(f"{seconds} is out of the range of timestamps")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).rjust(19, "0")


def parse_time(value: str, now: float) -> str:
    """A canonical timestamp from a point in time or an age before ``now``.

    Points: ISO-8601 (``2026-11-23``, ``2026-11-23T20:49Z``), a year (``2024``) or a month
    (``2024-05``), each meaning its start; times without a zone are UTC, like every time in
    the archive. Ages carry their unit (``90s``, ``15m``, ``2h``, ``7d``): a bare number such
    as ``2024`` is a year, never seconds.
    """
    period = _YEAR_OR_MONTH.match(value)
    if period:
        try:
            start = datetime(int(period[1]), int(period[2] or 1), 1, tzinfo=timezone.utc)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a year or a month: {err}") from None
        return format_ts(start.timestamp())
    if _AGE.match(value):
        return format_ts(now - parse_duration(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an ISO-8601 time, a year or a month (2024, 2024-05), "
            "nor a relative age with its unit such as 90s, 15m, 2h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_ts(moment.timestamp())
