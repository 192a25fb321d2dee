"""A replay: the matching records of an archive, merged into time order (``read/merge.py``),
sent in batches at no more than a rate, each batch retried until the target takes it, and the
position checkpointed after each batch taken (``read/checkpoint.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from archiver.app.replay_send import Sender, TargetUnavailable
from archiver.common.backoff import retry_delay
from archiver.read.checkpoint import Checkpoint
from archiver.read.merge import MergeSegment, merge
from archiver.read.reader import Archive, Filters


@dataclass(frozen=True)
class ReplaySettings:
    batch_size: int = 500
    rate: float | None = None  # records a second; None: as fast as the target takes them
    retry_base: float = 0.5
    retry_cap: float = 30.0


# (attempt, why, seconds until the next try)
OnRetry = Callable[[int, str, float], None]


def replay(
    archive: Archive, wanted: Filters, sender: Sender, checkpoint: Checkpoint, save: Callable[[Checkpoint], None],
    settings: ReplaySettings, on_retry: OnRetry, *, sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send what ``checkpoint`` has not, mark it complete; the number of records sent."""
    batch_size = settings.batch_size if settings.rate is None else max(1, min(settings.batch_size, int(settings.rate)))
    positions = dict(checkpoint.positions)
    started, sent = clock(), 0
    batch: list[dict[str, Any]] = []

    def deliver() -> None:
        nonlocal sent
        if settings.rate is not None:
            sleep(max(0.0, started + (sent + len(batch)) / settings.rate - clock()))
        _send_until_taken(sender, batch, settings, on_retry, sleep)
        sent += len(batch)
        checkpoint.positions = dict(positions)
        checkpoint.sent += len(batch)
        save(checkpoint)
        batch.clear()

    for item in merge(_segments(archive, wanted, checkpoint.positions), checkpoint.positions):
        positions[item.segment] = item.line + 1
        if wanted.matches(item.record):
            batch.append(item.record)
            if len(batch) >= batch_size:
                deliver()
    if batch:
        deliver()
    checkpoint.positions = positions
    checkpoint.complete = True
    save(checkpoint)
    return sent


def _segments(archive: Archive, wanted: Filters, done: dict[str, int]) -> list[MergeSegment]:
    """The segments that may hold matching records not yet sent: from the manifest alone."""
    rows = archive.segments(wanted.stream, wanted.since, wanted.until)
    return [
        MergeSegment(row.id, row.first_ts, partial(archive.segment_lines, row))
        for row in rows
        if wanted.segment_may_match(row) and done.get(row.id, 0) < row.records
    ]


def _send_until_taken(
    sender: Sender, batch: list[dict[str, Any]], settings: ReplaySettings, on_retry: OnRetry,
    sleep: Callable[[float], None],
) -> None:
    attempts = 0
    while True:
        try:
            sender.send(batch)
            return
        except TargetUnavailable as err:
            attempts += 1
            delay = retry_delay(attempts, settings.retry_base, settings.retry_cap)
            on_retry(attempts, str(err), delay)
            sleep(delay)
