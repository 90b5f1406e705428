"""The pure parts of the studies: when a saturation step falls over, when a soak is flat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulations.saturation import fell_over
from simulations.soak import MIB, SHORT_FD_SLACK, verdict


def _step(**kw: Any) -> dict[str, Any]:
    base = {"rate": 100, "offered": 1000, "errors": 0, "achieved_per_s": 99.0, "p99_ms": 50.0}
    return {**base, **kw}


def test_step_within_capacity_does_not_fall_over() -> None:
    assert fell_over(_step(), 40.0) is None
    assert fell_over(_step(errors=10), 40.0) is None  # 1 % exactly is still fine


def test_step_falls_over_on_errors_throughput_or_p99() -> None:
    assert "failed" in str(fell_over(_step(errors=11), 40.0))
    assert "achieved" in str(fell_over(_step(achieved_per_s=80.0), 40.0))
    assert "p99" in str(fell_over(_step(p99_ms=401.0), 40.0))
    assert fell_over(_step(p99_ms=401.0), None) is None  # no baseline before the first step


def _series(
    rss_mib: Sequence[float], fds: Sequence[int], start: float = 0.0
) -> list[dict[str, Any]]:
    return [
        {"t": float(i), "p": {"rss": int(r * MIB), "anon": int(r * MIB), "fds": f}}
        for i, (r, f) in enumerate(zip(rss_mib, fds, strict=True))
    ]


def test_flat_process_is_flat_after_warm_up() -> None:
    # grows during the warm-up (t < 10), then level with noise
    rss = [50, 70, 90, 100, 100, 100, 100, 100, 100, 100] + [100, 102, 99, 101, 100, 103] * 3
    fds = [20] * 10 + [30, 31, 29, 33, 30, 32] * 3
    v = verdict(_series(rss, fds), ["p"], warmup_s=10)
    assert v["p"]["flat"], v


def test_growing_memory_is_not_flat() -> None:
    rss = [100 + 2 * i for i in range(30)]  # 2 MiB per sample, never levels
    v = verdict(_series(rss, [30] * 30), ["p"], warmup_s=0)
    assert not v["p"]["flat"] and "memory" in v["p"]["why"], v


def test_growing_descriptors_are_not_flat() -> None:
    v = verdict(_series([100] * 30, list(range(30, 60))), ["p"], warmup_s=0)
    assert not v["p"]["flat"] and "fds" in v["p"]["why"], v


def test_a_process_that_ended_is_not_flat() -> None:
    s = _series([100] * 12, [30] * 12)
    s[-1]["p"] = None
    v = verdict(s, ["p"], warmup_s=0)
    assert not v["p"]["flat"] and "ended" in v["p"]["why"]


def test_postgres_is_judged_on_its_backends_not_its_descriptor_cache() -> None:
    """A backend's relation-file cache opens and closes descriptors (bounded per backend):
    not a leak; one more backend after another is."""
    s = _series([56] * 30, [616] * 10 + [921] * 10 + [616] * 10)
    for row, n in zip(s, [16] * 30, strict=True):
        row["p"]["procs"] = n
    assert verdict(s, ["p"], warmup_s=0)["p"]["flat"]
    for i, row in enumerate(s):
        row["p"]["procs"] = 16 + i
    v = verdict(s, ["p"], warmup_s=0)
    assert not v["p"]["flat"] and "processes" in v["p"]["why"], v


def test_the_short_form_takes_a_raised_keep_alive_floor_but_not_a_leak() -> None:
    """The short form's halves are ~10 s: a floor raised by keep-alive connections that a
    slow spell left open (41 -> 50 at HAProxy in one run) passes its slack; a leak of two
    descriptors a second does not, nor does the long form's slack take +9."""
    raised = _series([100] * 20, [41] * 10 + [50] * 10)
    assert verdict(raised, ["p"], warmup_s=0, fd_slack=SHORT_FD_SLACK)["p"]["flat"]
    assert not verdict(raised, ["p"], warmup_s=0)["p"]["flat"]  # FD_SLACK (8): the long form
    leak = _series([100] * 21, list(range(41, 83, 2)))
    v = verdict(leak, ["p"], warmup_s=0, fd_slack=SHORT_FD_SLACK)
    assert not v["p"]["flat"] and "fds" in v["p"]["why"], v
