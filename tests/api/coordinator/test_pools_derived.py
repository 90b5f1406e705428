"""api.coordinator.pools for derived keys (issue 13): a presign session for a path names
it, every party must echo it, and a pooled presignature is handed out for its own path only
(the root key's pool and each path's pool are separate)."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import pytest

from api.coordinator import Coordinator, KeyInfo, SessionFailed
from api.coordinator.pools import DERIVED_PATHS, Presignature
from api.nodes import NodeInfo
from tests.api.conftest import nothing_up_my_sleeve_point


@pytest.fixture(autouse=True)
def _memory_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reach into the in-memory pool (:class:`api.coordinator.pools.Pools`):
    keep it under CUSTODY_TEST_DATABASE=postgresql too, where pools default to the
    database (issue 14; the shared pools' own tests: test_pools_shared.py)."""
    monkeypatch.setenv("CUSTODY_SHARED_POOLS", "memory")


def _nodes() -> list[NodeInfo]:
    return [NodeInfo(f"node-{i}", i, "http://127.0.0.1:1", "", "") for i in (1, 2)]


async def test_presign_for_a_path_sends_it_and_requires_every_party_to_echo_it(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    R = nothing_up_my_sleeve_point(b"R").hex()
    sent: list[dict[str, Any]] = []
    results: dict[int, dict[str, Any]] = {}

    async def fake_session(nodes, body):  # noqa: ANN001, ANN202
        sent.append(body)
        return results

    c.relay.run = fake_session  # type: ignore[method-assign]
    good = {"presignature_id": "cd" * 32, "R": R, "derivation_path": "m/0/7"}
    results.update({1: dict(good), 2: {**good, "derivation_path": "m/0/8"}})
    with pytest.raises(SessionFailed) as e:
        await c.pools.presign("key", _nodes(), "m/0/7")
    assert {p for p, _ in e.value.blame} == {2}
    assert sent[-1]["derivation_path"] == "m/0/7"
    results[2] = dict(good)
    assert await c.pools.presign("key", _nodes(), "m/0/7") == Presignature("cd" * 32, (1, 2), R)
    # a root presign sends no path, and a result claiming one is refused
    with pytest.raises(SessionFailed):
        await c.pools.presign("key", _nodes())
    assert "derivation_path" not in sent[-1]


async def test_a_pooled_presignature_serves_its_own_path_only(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    pools = c.pools
    asked: list[str | None] = []

    async def fake_presign(key_id, nodes, path=None, count=1):  # noqa: ANN001, ANN202
        asked.append(path)
        return [Presignature("ee" * 32, (1, 2), "fresh")] * count

    pools.presign_batch = fake_presign  # type: ignore[method-assign]
    pools.settings.presig_batch = 1  # one per session: no surplus pooled (issue 13 batches)
    c.registry.eligible_party = lambda p: True  # type: ignore[method-assign]
    c.registry.pick = lambda nodes, t, excluded: _nodes()  # type: ignore[method-assign]
    root = KeyInfo("k", "ecdsa-secp256k1", 2, ["node-1", "node-2"], "02" * 33, {})
    a = dataclasses.replace(root, derivation_path="m/0/1")
    b = dataclasses.replace(root, derivation_path="m/0/7")
    pooled = Presignature("aa" * 32, (1, 2), "for-m/0/1")
    pools._presig[("k", "m/0/1")] = deque([pooled])
    assert await pools.take_presignature(b, set()) != pooled  # m/0/7: a fresh session
    assert await pools.take_presignature(root, set()) != pooled  # the root: fresh too
    assert asked == ["m/0/7", None]
    assert await pools.take_presignature(a, set()) == pooled  # its own path
    # the most recently used paths are the ones kept filled, at most DERIVED_PATHS per key
    for i in range(DERIVED_PATHS + 3):
        await pools.take_presignature(dataclasses.replace(root, derivation_path=f"m/{i}"), set())
    assert len(pools._recent["k"]) == DERIVED_PATHS and pools._recent["k"][-1] == f"m/{i}"
    # a refresh of the key drops its presignatures of every path
    pools._presig[("k", "m/3")] = deque([pooled, pooled])
    pools._presig[("k", None)] = deque([pooled])
    assert pools.forget_key("k") == 3
    assert not any(pools._presig.values())
