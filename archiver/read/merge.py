"""Records of many segments in time order, by a k-way merge: never a sort of everything.

Segments are opened lazily in order of their ``first_ts``: one is opened only when the
smallest record waiting in the merge is no earlier than its first record, so a day of
segments that follow one another holds one or two open at a time.

Ordering: the merge is stable by ``(ts, segment, line)``, the segment being its place in
``(first_ts, id)`` order. Within a segment, records keep their arrival order (the line
order), which is not always time order (a client's clock, a late batch): a segment's record
waits behind its earlier lines, and records of other segments with a later ``ts`` may pass it.
When every segment's lines are in time order, the output is sorted by ``ts``. The order
depends only on the segments' contents, so a merge resumed from a position (``start``)
continues exactly where the same merge stopped.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson


@dataclass(frozen=True)
class MergeSegment:
    """One segment as the merge needs it: its id, its earliest ``ts`` and its lines."""

    id: str
    first_ts: str | None
    lines: Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Merged:
    """One record and where it is: line ``line`` (from 0) of segment ``segment``."""

    segment: str
    line: int
    record: dict[str, Any]


_Head = tuple[str, int, int, dict[str, Any], Iterator[bytes], str]


def merge(segments: Iterable[MergeSegment], start: Mapping[str, int] | None = None) -> Iterator[Merged]:
    """Every record of ``segments`` in merge order, except the first ``start[id]`` lines of
    each segment (already consumed by an earlier run of the same merge)."""
    start = start or {}
    pending = sorted(segments, key=lambda s: (s.first_ts or "", s.id))
    pending.reverse()  # pop() takes the earliest
    heap: list[_Head] = []
    order = 0
    while pending or heap:
        while pending and (not heap or (pending[-1].first_ts or "") <= heap[0][0]):
            segment = pending.pop()
            skip = start.get(segment.id, 0)
            _push(heap, order, skip, islice(iter(segment.lines()), skip, None), segment.id)
            order += 1
        if not heap:
            continue
        _, rank, line, record, lines, segment_id = heapq.heappop(heap)
        yield Merged(segment_id, line, record)
        _push(heap, rank, line + 1, lines, segment_id)


def _push(heap: list[_Head], rank: int, line: int, lines: Iterator[bytes], segment_id: str) -> None:
    """The segment's next record onto the heap, if it has one. (rank, line) is unique, so
    records themselves are never compared."""
    for raw in lines:
        record = orjson.loads(raw)
        heapq.heappush(heap, (record["ts"], rank, line, record, lines, segment_id))
        return
