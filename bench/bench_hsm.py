"""Benchmark: seal/unseal latency through SoftHSM2 (CKM_AES_GCM in the token).

Provisions a throw-away SoftHSM2 dev token in a temporary directory, then times
``Hsm.seal`` and ``Hsm.unseal`` of a 100-byte payload (default 2000 runs each, after a
warm-up) and prints a small table of median / p95 / mean per-call latency.

Usage::

    python bench/bench_hsm.py [--runs 2000] [--size 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsm import Hsm, provision_dev_token, seal_aad  # noqa: E402 - after the path fix


def _time_calls(fn: Callable[[], object], runs: int) -> list[float]:
    """Return per-call wall times of ``fn`` in microseconds."""
    samples: list[float] = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _row(name: str, samples: list[float]) -> str:
    """Format one table row."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"| {name:<8} | {statistics.median(samples):>11.1f} | {p95:>8.1f} "
        f"| {statistics.fmean(samples):>9.1f} | {len(samples):>5} |"
    )


def main() -> None:
    """Provision a token, run the benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as tmp:
        config = provision_dev_token(Path(tmp), "bench", "bench-user-pin", "bench-so-pin")
        with Hsm.open(config) as hsm:
            aad = seal_aad("bench-key", "bench-node", 1)
            payload = os.urandom(args.size)
            hsm.current_seal_version()
            blob = hsm.seal(payload, aad)
            for _ in range(100):  # warm-up
                hsm.unseal(hsm.seal(payload, aad), aad)
            seal = _time_calls(lambda: hsm.seal(payload, aad), args.runs)
            unseal = _time_calls(lambda: hsm.unseal(blob, aad), args.runs)
            assert hsm.unseal(blob, aad) == payload

    print(f"SoftHSM2 seal/unseal, {args.size}-byte payload, {args.runs} runs (microseconds)")
    print("| op       | median (us) | p95 (us) | mean (us) |  runs |")
    print("|----------|-------------|----------|-----------|-------|")
    print(_row("seal", seal))
    print(_row("unseal", unseal))


if __name__ == "__main__":
    main()
