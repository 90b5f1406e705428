"""The coordinator's Prometheus metrics (``GET /metrics``, docs/OPERATIONS.md).

Labels are bounded sets: scheme, request kind, outcome, node id (the governance roster),
node route template, failure reason, pool, policy action and reason. Never a request,
key or credential id. The HTTP counts come from :class:`custody.obs.HttpObserve`.

Where each is recorded: :data:`SIGN_SECONDS` in ``Coordinator.run_sign`` (one observation
per sign request that reached the signers: outcome ``signed`` or ``failed``);
:data:`NODE_CALL_SECONDS` and :data:`NODE_CALL_FAILURES` in ``api.nodes.NodeCaller``
(every signed call, batch calls included: one per protocol round and node);
:data:`BLAMED` where a signing attempt blames a node; pool depths and node health are
read at scrape time (:func:`watch`); :func:`record_policy_decision` is the one call the
sign-request route makes per decision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from custody.domain import KINDS, NODE_STATUSES, SCHEMES
from custody.obs import LATENCY_BUCKETS

__all__ = [
    "SIGN_SECONDS",
    "NODE_CALL_SECONDS",
    "NODE_CALL_FAILURES",
    "BLAMED",
    "POLICY_DECISIONS",
    "observe_sign",
    "observe_node_call",
    "record_blame",
    "record_policy_decision",
    "node_route",
    "watch",
]

SIGN_SECONDS = Histogram(
    "custody_sign_seconds",
    "Sign requests from the first attempt to the stored outcome, by scheme, request kind "
    "and outcome (signed: one signature made)",
    ["scheme", "kind", "outcome"],
    buckets=LATENCY_BUCKETS,
)
NODE_CALL_SECONDS = Histogram(
    "custody_node_call_seconds",
    "Coordinator-to-node calls (one protocol round with one node; batch calls count once), "
    "by node and route template",
    ["node", "route"],
    buckets=LATENCY_BUCKETS,
)
NODE_CALL_FAILURES = Counter(
    "custody_node_call_failures",
    "Failed coordinator-to-node calls by node, route template and reason "
    "(unreachable, timeout, garbage, refused, error; cancelled: the caller's round timeout)",
    ["node", "route", "reason"],
)
BLAMED = Counter(
    "custody_sign_blamed",
    "Signing attempts aborted with a node blamed, by blamed node (unknown: a party the "
    "registry does not know)",
    ["node"],
)
POLICY_DECISIONS = Counter(
    "custody_policy_decisions",
    "Policy decisions on sign requests by action (allow, deny, approve: needs approvals) "
    "and reason (a rule name or a fixed word; never an id)",
    ["action", "reason"],
)

_SESSION_PATH = re.compile(r"^/v1/sessions/[^/]+")
_REASON = re.compile(r"[^A-Za-z0-9_.:-]")


def _bounded(value: object, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


def node_route(path: str) -> str:
    """A node path as a template: no query, no session id."""
    path = path.split("?", 1)[0]
    return _SESSION_PATH.sub("/v1/sessions/{session_id}", path)


def observe_sign(scheme: object, kind: object, signed: bool, seconds: float) -> None:
    SIGN_SECONDS.labels(
        _bounded(scheme, SCHEMES), _bounded(kind, KINDS), "signed" if signed else "failed"
    ).observe(seconds)


def observe_node_call(node: str, path: str, seconds: float, failure: str | None) -> None:
    route = node_route(path)
    NODE_CALL_SECONDS.labels(node, route).observe(seconds)
    if failure is not None:
        NODE_CALL_FAILURES.labels(node, route, failure).inc()


def record_blame(entry: dict[str, Any]) -> None:
    """Count one blame entry (``registry.blame_entry``'s dict) by its node."""
    node = entry.get("node_id")
    BLAMED.labels(node if isinstance(node, str) else "unknown").inc()


def record_policy_decision(action: str, reason: str) -> None:
    """Count one policy decision. ``reason`` must be a bounded word (a rule name, or
    ``allow-all-dev``, ``approval``): it is cut to 64 characters of ``[A-Za-z0-9_.:-]``."""
    POLICY_DECISIONS.labels(_REASON.sub("-", action)[:32], _REASON.sub("-", reason)[:64]).inc()


class _CoordinatorCollector(Collector):
    """Pool depths and node health of the served coordinator, read at scrape time."""

    def __init__(self) -> None:
        self.pools: Callable[[], dict[str, int]] | None = None
        self.nodes: Callable[[], list[str]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pools = GaugeMetricFamily(
            "custody_pool_items",
            "Unused preprocessed items the coordinator holds: FROST nonce commitments "
            "(all keys and nodes) and DKLs23 presignatures (all keys)",
            labels=["pool"],
        )
        if self.pools is not None:
            for name, n in sorted(self.pools().items()):
                pools.add_metric([name], float(n))
        yield pools
        nodes = GaugeMetricFamily(
            "custody_nodes", "Enrolled signer nodes by health status", labels=["status"]
        )
        if self.nodes is not None:
            statuses = self.nodes()
            for st in NODE_STATUSES:
                nodes.add_metric([st], float(statuses.count(st)))
        yield nodes


_COLLECTOR = _CoordinatorCollector()
REGISTRY.register(_COLLECTOR)


def watch(pools: Callable[[], dict[str, int]], nodes: Callable[[], list[str]]) -> None:
    """Read pool depths and node statuses of the served coordinator from now on."""
    _COLLECTOR.pools = pools
    _COLLECTOR.nodes = nodes
