"""api.coordinator.shared_pools: the preprocessing pools in the database (issue 14, item 2).

Two coordinator apps on one real PostgreSQL (and one app on SQLite) draw from one pool:
every FROST commitment and DKLs23 presignature is handed out once, under concurrency
across both; items of a node's older boot are never handed out; a node's restart and a
key's reshare empty what they made stale; one coordinator at a time holds a pool's refill.
The pooled items are public data (commitments, presignature ids and ``R``); the nodes
behind them are not running here, so the items are made up but well formed (real points)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from api.coordinator import Coordinator
from api.coordinator.shared_pools import SharedPools, shared_pools_wanted
from api.db import Database, PoolCommitment, PoolPresignature, PoolRefill, utcnow
from api.nodes import NodeInfo
from api.settings import Settings
from custody.domain import Scheme
from mpc import frost
from mpc.groups import ED25519
from tests import pg
from tests.api.conftest import make_api
from tests.api.test_postgres import shared_genesis

KEY = "key_shared"


def _commitment_hex(party: int, i: int) -> str:
    suite = frost.ciphersuite("ed25519")
    c = frost.SigningCommitments(
        suite, party, ED25519.base_mul(2 * i + 3), ED25519.base_mul(2 * i + 4)
    )
    return c.to_bytes().hex()


def _fill_commitments(db: Database, party: int, n: int, boot: str = "boot-a") -> None:
    now = utcnow()
    rows = [
        {
            "key_id": KEY,
            "party_id": party,
            "boot_id": boot,
            "nonce_id": f"n-{party}-{boot}-{i}",
            "commitments": _commitment_hex(party, i),
            "created_at": now,
        }
        for i in range(n)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(PoolCommitment), rows)


def _fill_presignatures(db: Database, n: int, parties: tuple[int, ...] = (1, 2)) -> None:
    now = utcnow()
    r = ED25519.base_mul(9).encode().hex()  # any point: the pool only carries it
    tag = "-".join(map(str, parties))
    rows = [
        {
            "key_id": KEY,
            "path": "",
            "parties": list(parties),
            "presignature_id": f"p-{tag}-{i}",
            "boot_ids": ["boot-a"] * len(parties),
            "r_point": r,
            "created_at": now,
        }
        for i in range(n)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(PoolPresignature), rows)


def _key(scheme: Scheme = "ed25519") -> Any:
    from api.coordinator import KeyInfo  # noqa: PLC0415

    return KeyInfo(KEY, scheme, 2, ["node-1", "node-2", "node-3"], "00" * 32, {})


def _node(party: int) -> NodeInfo:
    return NodeInfo(f"node-{party}", party, "http://127.0.0.1:9", "00" * 32, "00" * 32, "healthy")


def _enrol(c: Coordinator, boot: str = "boot-a") -> None:
    """Healthy nodes 1..3 in the coordinator's registry, each seen at ``boot``."""
    for p in (1, 2, 3):
        c.registry.nodes[f"node-{p}"] = _node(p)
        c.registry._boots[f"node-{p}"] = boot  # what its health check would have recorded


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two coordinator apps on one fresh PostgreSQL database (shared pools: auto)."""
    url = pg.fresh_database("pools")
    genesis = shared_genesis()
    gens = [make_api(tmp_path / f"c{k}", database_url=url, genesis=genesis) for k in (1, 2)]
    apis = [next(g) for g in gens]
    try:
        yield apis[0].app.state.coordinator, apis[1].app.state.coordinator
    finally:
        for g in gens:
            g.close()
        pg.drop_database(url)


def test_auto_means_shared_on_postgresql_and_memory_on_sqlite(tmp_path: Path) -> None:
    lite = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        assert not shared_pools_wanted(Settings(tmp_path), lite)
        assert shared_pools_wanted(Settings(tmp_path, shared_pools="database"), lite)
    finally:
        lite.close()
    url = pg.fresh_database("auto")
    try:
        pgdb = Database(url)
        assert shared_pools_wanted(Settings(tmp_path), pgdb)
        assert not shared_pools_wanted(Settings(tmp_path, shared_pools="memory"), pgdb)
        pgdb.close()
    finally:
        pg.drop_database(url)


def test_two_coordinators_never_hand_out_one_commitment_twice(
    two: tuple[Coordinator, Coordinator],
) -> None:
    a, b = two
    assert isinstance(a.pools, SharedPools) and isinstance(b.pools, SharedPools)
    _fill_commitments(a.db, 1, 80)
    taken: list[str] = []

    async def drain(c: Coordinator, n: int) -> None:
        got = await asyncio.gather(*(c.pools.take_commitment(_key(), _node(1)) for _ in range(n)))
        taken.extend(x.nonce_id for x in got)

    def run(c: Coordinator) -> None:
        asyncio.run(drain(c, 40))

    import threading  # noqa: PLC0415

    threads = [threading.Thread(target=run, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(taken) == 80 and len(set(taken)) == 80  # each once, all of them
    with a.db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(PoolCommitment)) == 0


def test_presignatures_once_across_coordinators_and_only_of_healthy_parties(
    two: tuple[Coordinator, Coordinator],
) -> None:
    a, b = two
    for c in (a, b):
        _enrol(c)
    b.registry.nodes["node-3"].status = "down"  # b cannot use presignatures with node-3
    _fill_presignatures(a.db, 46, (1, 2))  # 30 taken, slack for each one's chunk (CHUNK 8)
    _fill_presignatures(a.db, 10, (2, 3))
    taken: list[tuple[str, tuple[int, ...]]] = []
    by: list[tuple[Coordinator, str, tuple[int, ...]]] = []

    async def drain(c: Coordinator, n: int) -> None:
        for _ in range(n):
            p = await c.pools.take_presignature(_key("ecdsa-secp256k1"), set())
            taken.append((p.id, p.parties))
            by.append((c, p.id, p.parties))

    async def both() -> None:
        await asyncio.gather(drain(a, 15), drain(b, 15))

    asyncio.run(both())
    ids = [t[0] for t in taken]
    assert len(ids) == 30 and len(set(ids)) == 30
    with a.db.engine.connect() as conn:
        left = conn.execute(select(PoolPresignature.parties)).all()
    claimed = sum(len(q) for c in (a, b) for q in c.pools._presig.values())  # chunks
    assert len(left) + claimed == 26  # what nobody took stays: in the pool, or a chunk
    assert not [p for who, _, p in by if who is b and 3 in p]  # node-3 is down for b


async def test_items_of_an_older_boot_are_never_handed_out(tmp_path: Path) -> None:
    """A node restarted (boot-b): its rows of boot-a are skipped, then deleted."""
    it = make_api(tmp_path, shared_pools="database")
    api = next(it)
    try:
        c: Coordinator = api.app.state.coordinator
        assert isinstance(c.pools, SharedPools)
        _enrol(c, boot="boot-b")
        _fill_commitments(c.db, 2, 3, boot="boot-a")  # stale
        _fill_commitments(c.db, 2, 1, boot="boot-b")
        got = await c.pools.take_commitment(_key(), _node(2))
        assert got.nonce_id == "n-2-boot-b-0"
        assert c.pools.forget_party(2) == 3  # the stale ones
        _fill_presignatures(c.db, 2, (1, 2))  # made under boot-a: node-1 and 2 rebooted
        c.pools.forget_key(KEY)
        with c.db.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(PoolCommitment)) == 0
            assert conn.scalar(select(func.count()).select_from(PoolPresignature)) == 0
    finally:
        it.close()


async def test_a_presignature_of_an_older_boot_is_skipped(tmp_path: Path) -> None:
    it = make_api(tmp_path, shared_pools="database")
    api = next(it)
    try:
        c: Coordinator = api.app.state.coordinator
        _enrol(c, boot="boot-b")
        _fill_presignatures(c.db, 1, (1, 2))  # boot-a: the secrets died with that boot
        with c.db.engine.begin() as conn:
            conn.execute(
                insert(PoolPresignature).values(
                    key_id=KEY, path="", presignature_id="p-fresh", parties=[1, 3],
                    boot_ids=["boot-b", "boot-b"], r_point=ED25519.base_mul(9).encode().hex(),
                    created_at=utcnow(),
                )
            )  # fmt: skip
        got = await c.pools.take_presignature(_key("ecdsa-secp256k1"), set())
        assert got.id == "p-fresh"
    finally:
        it.close()


async def test_one_refiller_per_pool_and_an_expired_claim_is_taken_over(
    tmp_path: Path,
) -> None:
    it = make_api(tmp_path, shared_pools="database")
    api = next(it)
    try:
        c: Coordinator = api.app.state.coordinator
        pools = c.pools
        assert isinstance(pools, SharedPools)
        other = SharedPools(
            c.settings, c.registry, c.relay, c.keys, c.activity, c.spawn, c.db, "other:1:00"
        )
        assert await pools._claim_refill("frost:k:1")
        assert not await other._claim_refill("frost:k:1")  # held
        assert await other._claim_refill("frost:k:2")  # another pool: free
        await pools._release_refill("frost:k:1")
        assert await other._claim_refill("frost:k:1")
        with c.db.session() as s:  # other died holding it: its claim expires
            s.execute(
                update(PoolRefill)
                .where(PoolRefill.pool == "frost:k:1")
                .values(until=utcnow() - dt.timedelta(seconds=1))
            )
        assert await pools._claim_refill("frost:k:1")
        with c.db.session() as s:
            assert s.scalar(select(PoolRefill.holder).where(PoolRefill.pool == "frost:k:1")) == (
                c.instance
            )
    finally:
        it.close()
