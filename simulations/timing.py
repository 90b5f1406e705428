"""Timing helper shared by the benchmark suites (wall clock, median of repeated runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_ms(fn: Callable[[], Any], runs: int, *, warm: bool = True) -> float:
    """Median wall-clock time of ``fn()`` over ``runs`` calls, in ms (one untimed warm-up)."""
    if warm:
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
