"""The coordinator closes idle node connections before the nodes do.

If a node closed an idle keep-alive connection first, a request the coordinator sent on it
at that moment would fail with a disconnect, and the coordinator would blame a healthy node
(seen in the namespace tests next to a partitioned node: the signature then failed).
"""

from __future__ import annotations

from api import nodes
from signer_nodes import service


def test_coordinator_idle_timeout_is_shorter_than_the_nodes_keep_alive() -> None:
    assert 0 < nodes.IDLE_KEEPALIVE_S < service.LIMITS.keep_alive_s
    # and with a margin larger than a slow request's round trip on a loaded machine
    assert service.LIMITS.keep_alive_s - nodes.IDLE_KEEPALIVE_S >= 10


async def test_the_coordinators_node_sessions_use_that_idle_timeout() -> None:
    caller = nodes.NodeCaller(signer=None, timeout=1.0)  # type: ignore[arg-type]
    try:
        s = caller.session("http://127.0.0.1:9")
        assert s.connector is not None
        assert s.connector._keepalive_timeout == nodes.IDLE_KEEPALIVE_S  # aiohttp's field
    finally:
        await caller.aclose()
