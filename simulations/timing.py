"""The one timer of the benchmark suites: wall-clock samples, their median and p95."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Per-call wall times of one operation, in milliseconds."""

    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]

    @property
    def runs(self) -> int:
        return len(self.samples_ms)


def time_calls(fn: Callable[[], Any], runs: int, *, warm: int = 1) -> Timing:
    """Time ``runs`` calls of ``fn()`` after ``warm`` untimed warm-up calls."""
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(samples)


def median_ms(fn: Callable[[], Any], runs: int, *, warm: bool = True) -> float:
    """Median wall-clock time of ``fn()`` over ``runs`` calls, in ms (one untimed warm-up)."""
    return time_calls(fn, runs, warm=1 if warm else 0).median_ms
