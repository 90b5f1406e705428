"""The node's Prometheus metrics (served at ``GET /metrics``, docs/OPERATIONS.md).

Labels are bounded sets only: scheme, request kind, pool kind, problem code. No key id,
request id, nonce id or anything secret is ever a label or a value. The HTTP counts come
from :class:`custody.obs.HttpObserve`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from custody.domain import KINDS, SCHEMES
from custody.obs import LATENCY_BUCKETS

__all__ = ["observe_sign", "watch_pool", "SIGN_SECONDS", "SIGN_REFUSED"]

SIGN_SECONDS = Histogram(
    "custody_node_sign_seconds",
    "Signature shares (FROST) and partials (DKLs23) this node released, by scheme and "
    "request kind: the time the sign call (single or batch) took",
    ["scheme", "kind"],
    buckets=LATENCY_BUCKETS,
)
SIGN_REFUSED = Counter(
    "custody_node_sign_refused",
    "Sign items this node refused or failed, by problem code (nonce-used, not-authorized, ...)",
    ["code"],
)
POOL_KINDS = ("nonce", "presig")


def _bounded(value: object, allowed: Iterable[str]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


def observe_sign(
    items: Sequence[Any],
    outcomes: Sequence[Any],
    seconds: float,
    scheme_of: Callable[[str], str | None],
) -> None:
    """Record one sign call: each released item in :data:`SIGN_SECONDS` (``seconds`` is the
    call's duration), each refused one in :data:`SIGN_REFUSED` by its problem code.
    ``outcomes[i]`` is the share (bytes) or the error of ``items[i]``."""
    for raw, out in zip(items, outcomes, strict=True):
        if isinstance(out, bytes | bytearray):
            req = raw.get("request") if isinstance(raw, dict) else None
            kind = req.get("kind") if isinstance(req, dict) else None
            key_id = raw.get("key_id") if isinstance(raw, dict) else None
            scheme = scheme_of(key_id) if isinstance(key_id, str) else None
            SIGN_SECONDS.labels(_bounded(scheme, SCHEMES), _bounded(kind, KINDS)).observe(seconds)
        else:
            code = getattr(out, "code", None) or type(out).__name__
            SIGN_REFUSED.labels(str(code)[:40]).inc()


class _PoolCollector(Collector):
    """Outstanding single-use items in this process's memory, read at scrape time."""

    def __init__(self) -> None:
        self.count: Callable[[str], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "custody_node_pool_items",
            "Outstanding FROST nonces and DKLs23 presignatures held in this node's memory",
            labels=["kind"],
        )
        if self.count is not None:
            for kind in POOL_KINDS:
                g.add_metric([kind], float(self.count(kind)))
        yield g


_POOL = _PoolCollector()
REGISTRY.register(_POOL)


def watch_pool(count: Callable[[str], int]) -> None:
    """Read pool depths through ``count(kind)`` (the served node's pool) from now on."""
    _POOL.count = count
