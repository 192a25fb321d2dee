"""The store layout, pure: hour directories, the periods directories stand for, which closed
periods are frozen, and how many entries a directory gets at a given sealing rate."""

from __future__ import annotations

import calendar
from collections import Counter
from posixpath import dirname

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.format.layout import segment_id
from archiver.format.manifest import SegmentRow
from archiver.format.store_layout import DIR_ENTRIES_MAX, levels_of, period_of, segment_dir, store_path
from archiver.ship.freezer import closed_periods

HOUR, DAY = 3600.0, 86400.0
T0 = float(calendar.timegm((2026, 11, 23, 10, 0, 0)))
YEARS = st.floats(min_value=T0 - 5 * 365 * DAY, max_value=T0 + 50 * 365 * DAY).map(int).map(float)


def row(stream: str, segment: str, compression: str = "gzip") -> SegmentRow:
    return SegmentRow(segment, stream, "sealed", "", compression, 1, 1, "0" * 64, 1, None, None, {}, "")


def test_a_segment_goes_in_the_hour_it_was_opened() -> None:
    segment = "20261123T105959Z-host.3fa2c1-000042"
    assert store_path(row("app", segment)) == f"/app/2026/11/23/10/{segment}.jsonl.gz"
    assert store_path(row("_rejected", segment, "zstd")) == f"/_rejected/2026/11/23/10/{segment}.jsonl.zst"
    assert levels_of(segment_dir("app", segment)) == ["/app", "/app/2026", "/app/2026/11", "/app/2026/11/23",
                                                      "/app/2026/11/23/10"]


def test_periods_of_hour_and_day_directories() -> None:
    assert period_of("/app/2026/11/23/10") == (T0, T0 + HOUR)
    assert period_of("/app/2026/11/23") == (T0 - 10 * HOUR, T0 + 14 * HOUR)  # the layout before hour directories
    assert period_of("/_rejected/2024/02/29/23") is not None
    for other in ("/app", "/app/2026", "/app/2026/11", "/app/2026/11/23/10/x", "/app/2026/13/01", "/app/2025/02/29",
                  "/app/2026/11/23/24", "/_manifest/2026/11/23", "/_manifest/sink1/2026/2026-11-23", "/app/2026/11/3"):
        assert period_of(other) is None, other


@given(YEARS, st.integers(0, 999_999), st.sampled_from(["app", "_rejected", "a.b-c"]))
def test_the_hour_directory_holds_the_segments_start(start: float, seq: int, stream: str) -> None:
    segment = segment_id(start, "sink-1.x", seq)
    period = period_of(dirname(store_path(row(stream, segment))))
    assert period is not None and period[0] <= start < period[1] and period[1] - period[0] == HOUR


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=4.0, max_value=DAY), st.floats(min_value=0, max_value=DAY))
def test_no_directory_passes_the_bound_when_segments_seal_by_age(max_age: float, offset: float) -> None:
    """A stream sealed every max_age (>= 4 s) for a day: every directory the uploader makes
    (each level of each path) holds at most 3600 / max_age + 1 entries, within DIR_ENTRIES_MAX."""
    entries: dict[str, set[str]] = {}
    moment, seq = T0 + offset, 0
    while moment < T0 + offset + DAY:
        path = store_path(row("app", segment_id(moment, "sinkA", seq)))
        for parent, child in zip(["/", *levels_of(dirname(path))], levels_of(path)):
            entries.setdefault(parent, set()).add(child)
        moment, seq = moment + max_age, seq + 1
    largest = max(len(children) for children in entries.values())
    assert largest <= max(24, HOUR / max_age + 1) and largest <= DIR_ENTRIES_MAX


def test_hour_directories_where_day_directories_passed_the_bound() -> None:
    """A stream sealing every 10 s: 8,640 segments a day, which the day layout put in one
    directory; 360 in the largest now, and 24 in the day's."""
    midnight = T0 - 10 * HOUR
    paths = [store_path(row("app", segment_id(midnight + n * 10.0, "sinkA", n))) for n in range(8640)]
    per_dir = Counter(dirname(path) for path in paths)
    assert max(per_dir.values()) == 360 and len(per_dir) == 24 and {dirname(d) for d in per_dir} == {"/app/2026/11/23"}


def test_closed_periods_are_the_leaf_period_directories_over_with_nothing_pending() -> None:
    known = set(levels_of("/app/2026/11/23/10")) | {"/app/2026/11/23/11", "/app/2026/11/23/12", "/app/2026/11/22",
                                                   "/app/2026/11/21", "/_manifest/sinkA/2026/2026-11-21"}
    now = T0 + 3 * HOUR  # 13:00
    chosen = closed_periods(known, frozen={"/app/2026/11/21"}, pending={"/app/2026/11/23/10"}, now=now, after=HOUR)
    # 10: a segment waits for upload; 11 ended at 12:00, frozen at 13:00; 12 is not over; the day
    # of 23 has hour directories; 22 is a day directory of the older layout; 21 is frozen already.
    assert chosen == ["/app/2026/11/22", "/app/2026/11/23/11"]
    assert closed_periods(known, set(), set(), now, after=HOUR + 1) == ["/app/2026/11/21", "/app/2026/11/22",
                                                                       "/app/2026/11/23/10"]
