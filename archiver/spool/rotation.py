"""When an open segment must be sealed: pure policy, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RotationPolicy:
    """Seal a segment when any limit is reached: bytes, records, or age in seconds."""

    max_bytes: int
    max_records: int
    max_age: float

    def full_after(self, size: int, records: int, add_bytes: int, add_records: int) -> bool:
        """Whether appending would pass a limit, so the append must go to a fresh segment.

        An empty segment always takes the append, so one batch larger than the limit still
        lands (alone) instead of looping.
        """
        if records == 0:
            return False
        return size + add_bytes > self.max_bytes or records + add_records > self.max_records

    def full(self, size: int, records: int) -> bool:
        return size >= self.max_bytes or records >= self.max_records

    def expired(self, age: float) -> bool:
        return age >= self.max_age
