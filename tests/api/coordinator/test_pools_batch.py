"""api.coordinator.pools with batched presigning (issue 13): a batch session's result is
checked as a whole, requests waiting on an empty pool share batches, a failed batch fails
the requests it was started for with its blame, and the surplus of a batch is pooled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.coordinator import Coordinator, KeyInfo, SessionFailed
from api.coordinator.pools import NODE_BODY_BUDGET, Presignature
from api.nodes import NodeInfo
from mpc.dkls23.batch import max_batch_for
from tests.api.conftest import nothing_up_my_sleeve_point


@pytest.fixture(autouse=True)
def _memory_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reach into the in-memory pool (:class:`api.coordinator.pools.Pools`):
    keep it under CUSTODY_TEST_DATABASE=postgresql too, where pools default to the
    database (issue 14; the shared pools' own tests: test_pools_shared.py)."""
    monkeypatch.setenv("CUSTODY_SHARED_POOLS", "memory")


def _nodes() -> list[NodeInfo]:
    return [NodeInfo(f"node-{i}", i, "http://127.0.0.1:1", "", "") for i in (1, 2)]


def _items(n: int, tag: bytes = b"R") -> list[dict[str, str]]:
    return [
        {
            "presignature_id": f"{i:02x}" * 32,
            "R": nothing_up_my_sleeve_point(tag + bytes([i])).hex(),
        }
        for i in range(n)
    ]


async def test_batch_result_must_be_the_same_list_from_every_party(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    sent: list[dict[str, Any]] = []
    results: dict[int, Any] = {}

    async def fake_session(nodes, body):  # noqa: ANN001, ANN202
        sent.append(body)
        return results

    c.relay.run = fake_session  # type: ignore[method-assign]
    good = {"presign_count": 3, "presignatures": _items(3)}
    results.update({1: dict(good), 2: dict(good)})
    got = await c.pools.presign_batch("key", _nodes(), None, 3)
    assert [p.id for p in got] == [it["presignature_id"] for it in _items(3)]
    assert all(p.parties == (1, 2) for p in got)
    assert sent[-1]["presign_count"] == 3
    # one party reports another order, a shorter list, a wrong count, a repeated id
    bad_cases = [
        ({"presign_count": 3, "presignatures": _items(3)[::-1]}, {1, 2}),
        ({"presign_count": 3, "presignatures": _items(2)}, {2}),
        ({"presign_count": 2, "presignatures": _items(3)}, {2}),
        ({"presign_count": 3, "presignatures": [_items(3)[0]] * 3}, {1, 2}),
    ]
    for bad, blamed in bad_cases:
        results[2] = bad
        if bad["presignatures"] == [_items(3)[0]] * 3:
            results[1] = bad
        with pytest.raises(SessionFailed) as e:
            await c.pools.presign_batch("key", _nodes(), None, 3)
        assert {p for p, _ in e.value.blame} == blamed, bad
        results[1] = dict(good)
    # a single presign sends no presign_count (old nodes keep working)
    results.update({1: _items(1)[0], 2: _items(1)[0]})
    await c.pools.presign("key", _nodes())
    assert "presign_count" not in sent[-1]


def test_batch_size_respects_the_node_body_budget(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    c.settings.presig_batch = 32
    assert c.pools.batch_size(2) == max_batch_for(2, NODE_BODY_BUDGET) == 7
    assert c.pools.batch_size(5) == 1
    c.settings.presig_batch = 4
    assert c.pools.batch_size(2) == 4


async def test_waiting_requests_share_batches_and_the_surplus_is_pooled(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    pools = c.pools
    c.settings.presig_batch = 4
    c.settings.presig_parallel = 2
    started: list[int] = []
    gate = asyncio.Event()
    counter = iter(range(10**6))

    async def fake_batch(key_id, nodes, path=None, count=1):  # noqa: ANN001, ANN202
        started.append(count)
        await gate.wait()
        return [Presignature(f"{next(counter):064x}", (1, 2), "R") for _ in range(count)]

    pools.presign_batch = fake_batch  # type: ignore[method-assign]
    c.registry.eligible_party = lambda p: True  # type: ignore[method-assign]
    c.registry.pick = lambda nodes, t, excluded: _nodes()  # type: ignore[method-assign]
    key = KeyInfo("k", "ecdsa-secp256k1", 2, ["node-1", "node-2"], "02" * 33, {})
    tasks = [asyncio.create_task(pools.take_presignature(key, set())) for _ in range(6)]
    await asyncio.sleep(0.05)
    assert started == [4, 4]  # six waiting requests: two batches of four, not six sessions
    gate.set()
    got = await asyncio.gather(*tasks)
    assert len({p.id for p in got}) == 6  # each request its own presignature
    assert len(pools._presig[("k", None)]) == 2  # the surplus of the two batches
    # the next request takes a pooled one, no new session
    await pools.take_presignature(key, set())
    assert started == [4, 4]


async def test_a_failed_batch_fails_the_requests_it_was_for(api) -> None:  # noqa: ANN001
    c: Coordinator = api.app.state.coordinator
    pools = c.pools
    c.settings.presig_batch = 2
    c.settings.presig_parallel = 1
    calls: list[int] = []

    async def failing_then_ok(key_id, nodes, path=None, count=1):  # noqa: ANN001, ANN202
        calls.append(count)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise SessionFailed("party 2 reports failure", [(2, "bad tau")])
        return [Presignature(f"{len(calls)}{i:063x}", (1, 2), "R") for i in range(count)]

    pools.presign_batch = failing_then_ok  # type: ignore[method-assign]
    c.registry.pick = lambda nodes, t, excluded: _nodes()  # type: ignore[method-assign]
    key = KeyInfo("k2", "ecdsa-secp256k1", 2, ["node-1", "node-2"], "02" * 33, {})
    tasks = [asyncio.create_task(pools.take_presignature(key, set())) for _ in range(3)]
    res = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in res if isinstance(r, SessionFailed)]
    # the first batch (two requests) failed with its blame; the third request got a
    # presignature of the next batch, whose surplus is pooled
    assert len(failed) == 2 and all(f.blame == [(2, "bad tau")] for f in failed)
    assert sum(isinstance(r, Presignature) for r in res) == 1
    assert calls == [2, 2] and len(pools._presig[("k2", None)]) == 1
