"""Timing a call: the median over repeated runs (a shared machine adds outliers on one side only)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["median_ms"]


def median_ms(call: Callable[[], Any], warmup: int = 5, repeats: int = 50, budget_s: float | None = None) -> float:
    """Median milliseconds of `call()` over `repeats` runs after `warmup` untimed ones.

    With `budget_s`, stops early once that much time has gone (after at least 5 runs).
    """
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (budget_s is None or len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000
