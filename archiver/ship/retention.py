"""Retention: which segments to forget, and why.

Pure: segments, the policy and the time in; decisions out. A segment's age runs from its
latest record (a backfilled record is as old as its timestamp says), and a stream's newest
``min_segments`` are kept whatever their age, so a stream that went quiet keeps its last
records (restic's ``--keep-within``, Elastic's ``min_count``). Acting on the decisions is
``ship/forget.py``'s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from archiver.common.units import format_ts


@dataclass(frozen=True)
class RetentionPolicy:
    """How long segments are kept after their latest record: ``keep`` seconds (``math.inf``:
    forever), per stream ``streams`` instead, and never fewer than ``min_segments`` a stream."""

    keep: float = math.inf
    streams: tuple[tuple[str, float], ...] = ()
    min_segments: int = 1

    def keep_for(self, stream: str) -> tuple[float, str]:
        """The keep of ``stream`` and the setting it comes from."""
        for name, keep in self.streams:
            if name == stream:
                return keep, f"retention.streams {name}"
        return self.keep, "retention.keep"


@dataclass(frozen=True)
class Candidate:
    """What the policy needs of one segment. ``last_ts`` is the epoch time its age runs from:
    its latest record's (its seal's when it holds none)."""

    id: str
    stream: str
    last_ts: float
    state: str


@dataclass(frozen=True)
class Forget:
    segment: Candidate
    reason: str


def to_forget(segments: Iterable[Candidate], policy: RetentionPolicy, now: float) -> list[Forget]:
    """The segments ``policy`` drops at ``now``, oldest first. Segments already forgotten are
    neither dropped again nor counted toward a stream's floor."""
    by_stream: dict[str, list[Candidate]] = defaultdict(list)
    for segment in segments:
        if segment.state != "forgotten":
            by_stream[segment.stream].append(segment)
    dropped = []
    for stream, kept in by_stream.items():
        keep, setting = policy.keep_for(stream)
        if math.isinf(keep):
            continue
        newest_first = sorted(kept, key=lambda segment: (segment.last_ts, segment.id), reverse=True)
        for segment in newest_first[policy.min_segments :]:
            if now - segment.last_ts > keep:
                reason = f"last record {format_ts(segment.last_ts)} is older than {_duration(keep)} ({setting})"
                dropped.append(Forget(segment, reason))
    return sorted(dropped, key=lambda forget: (forget.segment.last_ts, forget.segment.id))


def _duration(seconds: float) -> str:
    """``400d``, ``12h`` or ``90s``: a keep as it is likely written."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
