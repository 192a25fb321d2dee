"""The one backoff helper, as ArchiveHandler uses it."""

from __future__ import annotations

import random

from archiver.client import RETRY_BASE, RETRY_MAX
from archiver.common.backoff import retry_delay


def test_client_retries_start_small_and_stay_capped_after_any_outage() -> None:
    """Days of failed tries (a count far past 2 ** 1024 as a float) still give a delay, at most
    RETRY_MAX and at least half of it."""
    rng = random.Random(7)
    assert RETRY_BASE / 2 <= retry_delay(1, RETRY_BASE, RETRY_MAX, rng) <= RETRY_BASE
    for failures in (20, 1025, 10**6):
        assert RETRY_MAX / 2 <= retry_delay(failures, RETRY_BASE, RETRY_MAX, rng) <= RETRY_MAX
