"""Retry delays every service uses: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    retry: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float = 2.0,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry).

    Uniform in [0, min(maximum, initial * multiplier^(retry-1))]: retrying clients spread
    out instead of stampeding together.
    """
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, got {retry}")
    exponent = min(retry - 1, 64)  # beyond this the cap has long applied
    return uniform(0.0, min(maximum, initial * multiplier**exponent))
