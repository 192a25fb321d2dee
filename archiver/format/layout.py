"""Where things live in the data dir, and how segments are named. Pure path arithmetic.

```
DATA/
  sink.pid                      lock held by the running sink (flock)
  sink.json                     pid, addresses, sink id of the running sink
  manifest.sqlite               segments, directory caps, leases, the published chain's state
  spool/open/<stream>/<segment-id>.jsonl
  spool/w<N>/open/<stream>/<segment-id>.jsonl   worker N's (server.workers > 1)
  spool/sealed/<stream>/<segment-id>.jsonl.gz   (or .jsonl.zst)
  spool/sealed/<stream>/<segment-id>.idx        its search index (format/search_index.py)
```
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from pathlib import Path

SEGMENT_ID = re.compile(r"(\d{8}T\d{6}Z)-(.+)-(\d{6})")
SINK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
OPEN_SUFFIX = ".jsonl"
COMPRESSION_SUFFIX = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
INDEX_SUFFIX = ".idx"
SEQ_MODULO = 1_000_000
# Workers of one sink number their segments apart: worker N takes the sequence numbers equal to
# N modulo WORKERS_MAX (SEQ_MODULO is a multiple, so the wrap keeps them apart).
WORKERS_MAX = 16


def id_stamp(moment: float) -> str:
    """``YYYYmmddTHHMMSSZ`` (UTC): how a segment id begins, so ids sort by their opening time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(moment))


def segment_id(start: float, sink_id: str, seq: int) -> str:
    """``<UTC start YYYYmmddTHHMMSSZ>-<sink-id>-<seq 6 digits>``: sortable and unique per sink."""
    return f"{id_stamp(start)}-{sink_id}-{seq % SEQ_MODULO:06d}"


def segment_start(segment: str) -> float | None:
    """When the segment was opened, rounded down to the second: no record in it is older."""
    match = SEGMENT_ID.fullmatch(segment)
    return None if match is None else float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))


def segment_seq(segment: str) -> int | None:
    match = SEGMENT_ID.fullmatch(segment)
    return None if match is None else int(match.group(3))


@dataclass(frozen=True)
class DataDir:
    """The paths of one sink's data dir, as its worker ``worker`` writes it: each worker has
    its own open spool; sealed segments share one directory (their ids never collide)."""

    root: Path
    worker: int = 0

    @property
    def pid_file(self) -> Path:
        return self.root / "sink.pid"

    @property
    def sink_file(self) -> Path:
        return self.root / "sink.json"

    @property
    def open_dir(self) -> Path:
        return self.root / "spool" / "open" if self.worker == 0 else self.root / "spool" / f"w{self.worker}" / "open"

    @property
    def sealed_dir(self) -> Path:
        return self.root / "spool" / "sealed"

    def open_path(self, stream: str, segment: str) -> Path:
        return self.open_dir / stream / f"{segment}{OPEN_SUFFIX}"

    def sealed_path(self, stream: str, segment: str, compression: str) -> Path:
        return self.sealed_dir / stream / f"{segment}{COMPRESSION_SUFFIX[compression]}"

    def index_path(self, stream: str, segment: str) -> Path:
        return self.sealed_dir / stream / f"{segment}{INDEX_SUFFIX}"

    def open_segments(self) -> list[tuple[str, str, Path]]:
        """(stream, segment id, path) of every open segment file of every worker, oldest first."""
        found = []
        spool = self.root / "spool"
        for pattern in (f"open/*/*{OPEN_SUFFIX}", f"w*/open/*/*{OPEN_SUFFIX}"):
            for path in spool.glob(pattern):
                found.append((path.parent.name, path.name[: -len(OPEN_SUFFIX)], path))
        return sorted(found, key=lambda item: item[1])
