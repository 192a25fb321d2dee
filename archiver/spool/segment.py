"""The segment being written and the counters the spool keeps, shared by the writer, the
group commit and the sealer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from archiver.format.segment import SegmentTally


@dataclass(eq=False)
class OpenSegment:
    """An append-only file being written; ``fd`` is -1 once closed (or for a recovered file)."""

    stream: str
    id: str
    path: Path
    fd: int = -1
    size: int = 0
    durable: int = 0  # bytes fsynced: what `archiver cat --follow` may show
    records: int = 0
    opened: float = field(default_factory=time.monotonic)
    start: int = 0  # the epoch second its id names: no record older than that may join it
    dir_synced: bool = False
    # What was written, counted as it was written; None when some bytes came without their
    # records, or for a file recovered after a crash: then sealing parses every line.
    tally: SegmentTally | None = field(default_factory=SegmentTally)


def _ignore(seconds: float) -> None:
    """No observer wired: a writer without metrics."""


@dataclass
class SpoolStats:
    """Counters for /_status and /_metrics; ``observe_fsync_round`` gets each group-commit
    round's duration in seconds (the app wires it to a histogram)."""

    fsync_rounds: int = 0
    commits_waited: int = 0
    segments_sealed: int = 0
    torn_lines: int = 0
    seal_errors: int = 0
    last_error: str | None = None
    observe_fsync_round: Callable[[float], None] = _ignore
