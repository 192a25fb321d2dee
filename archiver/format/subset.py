"""Which segments a verification reads back, as restic's ``check --read-data-subset`` says it.

``N/T`` is part N (1-based) of T: a segment's part follows from its id alone, so the same
segment is in the same part on every run and on every machine, and runs of parts 1..T read
every segment exactly once, however the archive grew meanwhile. ``x%`` is a random sample of
that share of the segments, different on each run.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Sequence

_PART = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


def part_of(segment: str, parts: int) -> int:
    """The part (1..``parts``) ``segment`` belongs to: from a digest of its id, so parts are
    about equal in size whatever the ids look like."""
    return int(hashlib.sha256(segment.encode()).hexdigest()[:8], 16) % parts + 1


@dataclass(frozen=True)
class Subset:
    """Part ``part`` of ``parts``, or (``percent`` set) a random sample of that many percent."""

    part: int = 1
    parts: int = 1
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Subset":
        """``N/T`` with 1 <= N <= T, or ``x%`` / ``x.y%`` with 0 < x <= 100; ValueError says why."""
        if match := _PART.fullmatch(text):
            part, parts = int(match[1]), int(match[2])
            if not 1 <= part <= parts:
                raise ValueError(f"{text!r}: expected N/T with 1 <= N <= T")
            return cls(part, parts)
        if match := _PERCENT.fullmatch(text):
            percent = float(match[1])
            if not 0 < percent <= 100:
                raise ValueError(f"{text!r}: expected a percentage above 0 and at most 100")
            return cls(percent=percent)
        raise ValueError(f"{text!r}: expected N/T (part N of T, e.g. 3/30) or a percentage (e.g. 5%)")

    def choose(self, segments: Sequence[str], rng: random.Random | None = None) -> set[str]:
        """The ids of ``segments`` in this subset; a percentage takes at least one segment
        when there is any, as restic does."""
        if self.percent is None:
            return {segment for segment in segments if part_of(segment, self.parts) == self.part}
        wanted = min(len(segments), math.ceil(len(segments) * self.percent / 100))
        return set((rng or random.Random()).sample(list(segments), wanted))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.part}/{self.parts}"
