"""Exponential backoff with jitter, shared by everything that retries (uploads, seals)."""

from __future__ import annotations

import random


def retry_delay(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """About ``base * 2^(attempts-1)``, at most ``cap``, scaled by a random 0.5-1.0 so that
    many retries started together do not stay in step."""
    # The exponent stops growing long after any cap is reached: 2 ** 1024 is too large a float.
    delay = min(cap, base * 2 ** min(max(0, attempts - 1), 64))
    return delay * (0.5 + (rng or random).random() / 2)
