"""heap.trim gives back the free pages that big short-lived buffers leave inside the heap."""

from __future__ import annotations

import psutil

from archiver.app import heap


def test_trim_returns_the_holes_big_buffers_leave_in_the_heap() -> None:
    mapped = b"\x01" * 1_000_000
    del mapped  # freeing a buffer glibc mmapped raises its mmap threshold past it, as in the sink
    big, small = [], []
    for _ in range(300):  # as asyncio's 256 KiB reads, each followed by an object that stays
        big.append(b"\x01" * 256_000)
        small.append(b"\x02" * 50_000)
    del big
    before = psutil.Process().memory_info().rss
    assert heap.trim()
    after = psutil.Process().memory_info().rss
    assert before - after > 30_000_000, (before, after)
    assert len(small) == 300
