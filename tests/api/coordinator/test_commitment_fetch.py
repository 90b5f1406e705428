"""FROST with dry commitment pools: the signers' commitments are fetched in parallel (two
round trips per signature for any threshold, not t + 1), and every node whose fetch failed
is blamed."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from api.coordinator import SessionFailed
from api.coordinator.pools import Commitment
from api.coordinator.signers import FrostSigner
from api.coordinator.types import KeyInfo
from api.nodes import NodeFailure, NodeInfo

NODES = [NodeInfo(f"node-{i}", i, "http://127.0.0.1:1", "", "") for i in (1, 2, 3)]
KEY = KeyInfo("k", "ed25519", 3, [n.id for n in NODES], "00" * 32, {})


@pytest.fixture(autouse=True)
def _memory_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reach into the in-memory pool (:class:`api.coordinator.pools.Pools`):
    keep it under CUSTODY_TEST_DATABASE=postgresql too, where pools default to the
    database (issue 14; the shared pools' own tests: test_pools_shared.py)."""
    monkeypatch.setenv("CUSTODY_SHARED_POOLS", "memory")


def _signer(api) -> FrostSigner:  # noqa: ANN001
    c = api.app.state.coordinator
    return FrostSigner(c.registry, c.pools, 1.0)


async def test_dry_pools_fetch_every_signers_commitment_at_once(api) -> None:  # noqa: ANN001
    signer = _signer(api)
    pools = signer.pools
    running, peak = 0, 0

    async def fetch(key: KeyInfo, node: NodeInfo, count: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        q = pools._frost.setdefault((key.id, node.party_id), deque())
        q.append(Commitment(f"nonce-{node.party_id}", object()))  # type: ignore[arg-type]

    pools._fetch_commitments = fetch  # type: ignore[method-assign]
    got = await signer._take_commitments(KEY, NODES)
    assert sorted(got) == [1, 2, 3]
    assert peak == 3  # all three in flight together, not one after another


async def test_every_failed_fetch_is_blamed(api) -> None:  # noqa: ANN001
    signer = _signer(api)

    async def fetch(key: KeyInfo, node: NodeInfo, count: int) -> None:
        if node.party_id != 2:
            raise NodeFailure(node, "garbage", "no commitments list")
        q = signer.pools._frost.setdefault((key.id, node.party_id), deque())
        q.append(Commitment("nonce-2", object()))  # type: ignore[arg-type]

    signer.pools._fetch_commitments = fetch  # type: ignore[method-assign]
    with pytest.raises(SessionFailed) as e:
        await signer._take_commitments(KEY, NODES)
    assert {p for p, _ in e.value.blame} == {1, 3}
