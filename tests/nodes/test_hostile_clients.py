"""Issue 9, items 3 and 5: a node survives hostile clients (real node processes under
custody.serving): oversized bodies refused before authentication, inputs that used to
give 500s, cross-node and in-window replays, a bounded connection flood, a bounded pool."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from custody.nodeauth import sign_headers
from tests.nodes.conftest import Coordinator, InProc


@pytest.fixture
def cluster(module_cluster: Coordinator) -> Coordinator:
    """The module's one cluster (tests/nodes/conftest.py ``module_cluster``): no test here
    crashes, restarts or re-governs a node, and each uses key ids of its own."""
    return module_cluster


def _raw(cluster: Coordinator, party: int, method: str, path: str, data: bytes) -> httpx.Response:
    node = cluster.nodes[party]
    headers = sign_headers(cluster.key, method, path, data, recipient=node.node_id)
    headers["content-type"] = "application/json"
    return httpx.request(method, node.url + path, content=data, headers=headers, timeout=30)


def test_oversized_body_is_413_before_authentication(cluster: Coordinator) -> None:
    n1 = cluster.nodes[1]
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    r = httpx.post(n1.url + "/v1/sessions", content=big, timeout=30)  # no signature at all
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert httpx.get(n1.url + "/health", timeout=5).json()["status"] == "ok"


def test_deep_nesting_lone_surrogates_and_huge_cursors_are_4xx(cluster: Coordinator) -> None:
    deep = b'{"peers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = _raw(cluster, 1, "PUT", "/v1/peers", deep)
    assert r.status_code == 400 and r.json()["type"] == "urn:tpwc:node:bad-request"
    assert "deeper" in r.json()["detail"]
    surrogate = b'{"key_id": "\\ud800", "count": 1}'
    r = _raw(cluster, 1, "POST", "/v1/frost/commitments", surrogate)
    assert r.status_code == 400 and "surrogate" in r.json()["detail"]
    sign = json.dumps(
        {
            "key_id": "k1",
            "nonce_id": "00" * 16,
            "request": {"id": "x", "key_id": "k1", "kind": "payment", "payload": {"a": "\ud800"}},
            "signing_package": "00",
        }
    ).encode()
    r = _raw(cluster, 1, "POST", "/v1/frost/sign", sign)
    assert r.status_code == 400, r.text
    for query in ("after=" + "9" * 31, "after=-1", "limit=0", "after=x"):
        r = _raw(cluster, 1, "GET", f"/v1/releases?{query}", b"")
        assert r.status_code == 422, (query, r.text)
        assert r.headers["content-type"] == "application/problem+json"


def test_replays_within_the_window_and_to_other_nodes_are_refused(cluster: Coordinator) -> None:
    n1, n2 = cluster.nodes[1], cluster.nodes[2]
    body = b""
    headers = sign_headers(cluster.key, "GET", "/v1/status", body, recipient="node-1")
    assert httpx.get(n1.url + "/v1/status", headers=headers).status_code == 200
    again = httpx.get(n1.url + "/v1/status", headers=headers)
    assert again.status_code == 401 and again.json()["type"] == "urn:tpwc:node:replayed"
    other = httpx.get(n2.url + "/v1/status", headers=headers)  # signed for node-1
    assert other.status_code == 401
    assert other.json()["type"] == "urn:tpwc:node:unauthenticated"
    assert "recipient node-2" in other.json()["detail"]
    legacy = sign_headers(cluster.key, "GET", "/v1/status", body)  # no recipient (v1)
    assert httpx.get(n1.url + "/v1/status", headers=legacy).status_code == 401


def test_connection_flood_is_bounded_and_the_node_serves_again(cluster: Coordinator) -> None:
    n1 = cluster.nodes[1]
    socks = []
    try:
        for _ in range(700):  # above the cap of 512: the excess is closed at once
            s = socket.create_connection(("127.0.0.1", n1.port), timeout=5)
            socks.append(s)
        time.sleep(0.5)
        closed = 0
        for s in socks[-100:]:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass  # still open: within the cap
            except OSError:
                closed += 1  # reset by the node
        assert closed > 0  # connections beyond the cap were closed by the node
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(n1.url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "node did not serve again after the flood"
        time.sleep(0.2)
    assert cluster.call(n1, "GET", "/v1/status")["hsm"] == "ok"


def test_outstanding_nonces_are_bounded_per_key(inproc: InProc) -> None:
    inproc.dkg("ed25519", "k1")
    node = inproc.nodes[1]
    node.shares.pool.caps["nonce"] = 10
    assert len(node.frost_commitments("k1", 10)) == 10
    with pytest.raises(Exception) as e:
        node.frost_commitments("k1", 1)
    assert getattr(e.value, "code", None) == "pool-full"
    assert "at most 10" in str(e.value)
    assert node.status()["nonces_unused"] == 10
