"""Preprocessing pools in the database, shared by every coordinator on it (issue 14).

The same pools as :class:`api.coordinator.pools.Pools` (FROST commitments per (key, node),
DKLs23 presignatures per (key, derivation path); public data only: nonce ids and their
commitments, presignature ids, signer sets and ``R``), held as rows of
``pool_commitments`` and ``pool_presignatures`` instead of this process's memory, so that
several coordinators draw from one pool and a coordinator that dies leaves its items to the
others (the nodes cap what is outstanding per key, so items lost with a dead
coordinator's memory would count against that cap until the nodes restart).

- **Handing out** is claim-and-delete in one transaction: the oldest usable rows are
  picked with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another coordinator is taking
  is skipped, never waited for) and deleted with ``RETURNING`` in the same statement, so no
  item is ever handed out twice, across coordinators or within one. A coordinator claims a
  chunk (:data:`CHUNK`) at a time into its memory and hands those out itself (one
  statement per chunk instead of one per signature: PostgreSQL's claim-and-delete slows
  with the dead rows a busy pool leaves; docs/PERFORMANCE.md). SQLite (one coordinator) has a
  single writer; the same statements run there without the locking clause.
- **Stale items.** Each row carries the boot id of its node(s) when it was made; only rows
  of the boot a node reports now are handed out, and a node's restart deletes its rows
  (:meth:`forget_party`), as a reshare or refresh deletes its key's (:meth:`forget_key`).
- **Refills** are decided from the shared counts, read once per sweep (which also answers
  :meth:`sizes`); one coordinator at a time refills a pool: it holds that pool's row of
  ``pool_refills`` (taken with an insert that does nothing on conflict, or over an expired
  one), released when it is done.
- **Waiters stay per process**: a request that finds the presignature pool empty waits for
  a batch started for the waiting requests of this process (as in memory); what a batch
  makes goes to this process's waiters first and the rest into the shared pool.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from api import crypto
from api.coordinator.keys import KeyBook
from api.coordinator.pools import (
    DERIVED_TARGET,
    Commitment,
    PoolKey,
    Pools,
    Presignature,
    Spawn,
)
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.types import Activity, KeyInfo, SessionFailed
from api.db import Database, PoolCommitment, PoolPresignature, PoolRefill, utcnow
from api.nodes import NodeFailure, NodeInfo
from api.settings import Settings
from custody.domain import spec

log = logging.getLogger("api.coordinator")

_PC = cast(Table, PoolCommitment.__table__)
_PP = cast(Table, PoolPresignature.__table__)
_PR = cast(Table, PoolRefill.__table__)
REFILL_HOLD = 60.0  # seconds a refill claim lasts unless renewed (a dead refiller's expires)
CANDIDATES = 16  # presignature rows looked at per take (those of unhealthy parties stay)
#: rows a coordinator claims from a shared pool at once into its own memory (one statement,
#: one transaction), then hands out locally: a dead coordinator loses at most this many
#: items per pool (the nodes' caps are 20 000 nonces and 2 000 presignatures per key)
CHUNK = 8


@dataclass
class Counts:
    """The shared pools' sizes as one sweep read them."""

    frost: dict[tuple[str, int, str], int] = field(default_factory=dict)  # key, party, boot
    presig: dict[tuple[str, str], int] = field(default_factory=dict)  # key, path ("" root)


def _path(path: str | None) -> str:
    return "" if path is None else path


class SharedPools(Pools):
    """:class:`Pools` over the database (module docstring). ``instance``: this
    coordinator's id, the holder of its refill claims."""

    def __init__(
        self,
        settings: Settings,
        registry: NodeRegistry,
        relay: SessionRelay,
        keys: KeyBook,
        activity: Activity,
        spawn: Spawn,
        db: Database,
        instance: str,
    ) -> None:
        super().__init__(settings, registry, relay, keys, activity, spawn)
        self.db = db
        self.instance = instance
        self.counts = Counts()
        self._sweeping = False
        self._claim_locks: dict[str, asyncio.Lock] = {}

    # -- what the pools hold ------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """As of the last sweep (no query on the event loop)."""
        return {
            "frost_commitments": sum(self.counts.frost.values()),
            "presignatures": sum(self.counts.presig.values()),
        }

    def _read_counts(self) -> Counts:
        out = Counts()
        with self.db.engine.connect() as conn:
            for k, p, b, n in conn.execute(
                select(_PC.c.key_id, _PC.c.party_id, _PC.c.boot_id, func.count()).group_by(
                    _PC.c.key_id, _PC.c.party_id, _PC.c.boot_id
                )
            ):
                out.frost[(k, p, b)] = int(n)
            for k, path, n in conn.execute(
                select(_PP.c.key_id, _PP.c.path, func.count()).group_by(_PP.c.key_id, _PP.c.path)
            ):
                out.presig[(k, path)] = int(n)
        return out

    def forget_party(self, party: int) -> int:
        """Delete every row of ``party`` (it restarted: the secrets are gone)."""
        with self.db.engine.begin() as conn:
            n = int(conn.execute(delete(_PC).where(_PC.c.party_id == party)).rowcount or 0)
            stale = [
                r.id for r in conn.execute(select(_PP.c.id, _PP.c.parties)) if party in r.parties
            ]
            if stale:
                n += int(conn.execute(delete(_PP).where(_PP.c.id.in_(stale))).rowcount or 0)
        return n + super().forget_party(party)

    def forget_key(self, key_id: str) -> int:
        """Delete every row of ``key_id`` (its shares changed)."""
        with self.db.engine.begin() as conn:
            n = int(conn.execute(delete(_PC).where(_PC.c.key_id == key_id)).rowcount or 0)
            n += int(conn.execute(delete(_PP).where(_PP.c.key_id == key_id)).rowcount or 0)
        return n + super().forget_key(key_id)

    # -- handing out ----------------------------------------------------------------------------
    async def take_commitment(self, key: KeyInfo, node: NodeInfo) -> Commitment:
        """One commitment of (key, node): from this process's chunk, else claim-and-delete
        a chunk of up to :data:`CHUNK` rows of the node's current boot (one statement);
        none: fetch a batch from the node now, use one, pool the rest."""
        local = self._frost.setdefault((key.id, node.party_id), deque())
        if local:
            return local.popleft()
        async with self._claiming(f"frost:{key.id}:{node.party_id}"):
            if local:  # another take of this process claimed a chunk meanwhile
                return local.popleft()
            return await self._take_commitment_chunk(key, node, local)

    def _claiming(self, pool: str) -> asyncio.Lock:
        """One chunk claim in flight per pool in this process (the others wait for it)."""
        return self._claim_locks.setdefault(pool, asyncio.Lock())

    async def _take_commitment_chunk(
        self, key: KeyInfo, node: NodeInfo, local: deque[Commitment]
    ) -> Commitment:
        boot = self.registry.boot_of(node.party_id)

        def claim(conn: Connection) -> list[tuple[str, str]]:
            chunk = (
                select(_PC.c.id)
                .where(
                    _PC.c.key_id == key.id,
                    _PC.c.party_id == node.party_id,
                    *([_PC.c.boot_id == boot] if boot else []),
                )
                .order_by(_PC.c.id)
                .limit(CHUNK)
                .with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                delete(_PC)
                .where(_PC.c.id.in_(chunk.scalar_subquery()))
                .returning(_PC.c.nonce_id, _PC.c.commitments)
            ).all()
            return [(str(r.nonce_id), str(r.commitments)) for r in rows]

        got = await self.db.write(claim)
        if got:

            def decode() -> list[Commitment]:  # checked on entry already; again, cheaply
                return [
                    Commitment(nid, crypto.frost_commitments(key.scheme, node.party_id, h))
                    for nid, h in got
                ]

            try:
                local.extend(await asyncio.to_thread(decode))
            except crypto.Blame as e:
                raise SessionFailed(str(e), [(node.party_id, "garbage commitments")]) from None
            return local.popleft()
        try:
            items = await self._fetch_items(key, node, self.settings.frost_batch)
        except NodeFailure as e:
            if e.transport:
                self.registry.mark_down(node.party_id, e.detail)
            raise SessionFailed(
                "commitment fetch failed", [(c, f"{e.reason}: {e.detail}") for c in e.culprits]
            ) from None
        if not items:
            raise SessionFailed("commitment fetch failed", [(node.party_id, "garbage: none")])
        if len(items) > 1:
            await self._store_commitments(key, node, boot, items[1:])
        return items[0][0]

    async def _store_commitments(
        self, key: KeyInfo, node: NodeInfo, boot: str, items: list[tuple[Commitment, str]]
    ) -> None:
        now = utcnow()
        rows = [
            {"key_id": key.id, "party_id": node.party_id, "boot_id": boot,
             "nonce_id": c.nonce_id, "commitments": hexed, "created_at": now}
            for c, hexed in items
        ]  # fmt: skip
        await self.db.write(lambda conn: conn.execute(insert(_PC), rows))

    async def take_presignature(self, key: KeyInfo, excluded: set[int]) -> Presignature:
        """From this process's chunk, else claim-and-delete a chunk of the oldest rows of
        the key's path whose parties are all healthy, not excluded and still on the boot
        they were made under; none: the in-process path (a waiter for a batch, or a presign
        of its own when routing around culprits)."""
        path = _path(key.derivation_path)
        nodes = self.registry.nodes.values()
        boots = {n.party_id: self.registry.boot_of(n.party_id) for n in nodes}

        def usable(parties: list[int], made: list[str]) -> bool:
            return all(
                p not in excluded
                and self.registry.eligible_party(p)
                and (not b or not boots.get(p) or boots.get(p) == b)
                for p, b in zip(parties, made, strict=False)
            )

        def claim(conn: Connection) -> list[Presignature]:
            # read the oldest candidates unlocked, keep the usable ones, then lock and
            # delete up to CHUNK of those nobody else is taking (SKIP LOCKED): another
            # coordinator's take never waits, and never sees a dry pool for our locks
            for _ in range(3):
                rows = conn.execute(
                    select(_PP.c.id, _PP.c.parties, _PP.c.boot_ids)
                    .where(_PP.c.key_id == key.id, _PP.c.path == path)
                    .order_by(_PP.c.id)
                    .limit(CANDIDATES)
                ).all()
                ids = [r.id for r in rows if usable(list(r.parties), list(r.boot_ids))]
                if not ids:
                    return []
                chunk = (
                    select(_PP.c.id)
                    .where(_PP.c.id.in_(ids))
                    .order_by(_PP.c.id)
                    .limit(CHUNK)
                    .with_for_update(skip_locked=True)
                )
                got = conn.execute(
                    delete(_PP)
                    .where(_PP.c.id.in_(chunk.scalar_subquery()))
                    .returning(_PP.c.presignature_id, _PP.c.parties, _PP.c.r_point)
                ).all()
                if got:
                    return [
                        Presignature(g.presignature_id, tuple(g.parties), g.r_point) for g in got
                    ]
            return []

        pk = (key.id, key.derivation_path)
        local = self._presig.setdefault(pk, deque())

        def have_local() -> bool:
            return any(
                all(p not in excluded and self.registry.eligible_party(p) for p in x.parties)
                for x in local
            )

        if not have_local():
            async with self._claiming(f"presig:{key.id}:{path}"):
                if not have_local():
                    local.extend(await self.db.write(claim))
        return await super().take_presignature(key, excluded)  # the local pool first

    def _deliver(self, pk: PoolKey, made: list[Presignature]) -> None:
        """This process's waiters first (oldest first), the rest into the shared pool."""
        waiters = self._waiters.get(pk, deque())
        rest = []
        for pre in made:
            while waiters and waiters[0].done():
                waiters.popleft()
            if waiters:
                waiters.popleft().set_result(pre)
            else:
                rest.append(pre)
        if rest:
            self._spawn(self._store_presignatures(pk, rest))

    async def _store_presignatures(self, pk: PoolKey, made: list[Presignature]) -> None:
        now = utcnow()
        rows = [
            {"key_id": pk[0], "path": _path(pk[1]), "presignature_id": p.id,
             "parties": list(p.parties), "r_point": p.r_point, "created_at": now,
             "boot_ids": [self.registry.boot_of(x) for x in p.parties]}
            for p in made
        ]  # fmt: skip
        try:
            await self.db.write(lambda conn: conn.execute(insert(_PP), rows))
        except Exception:
            log.exception("storing presignatures failed (they are lost, not reused)")

    # -- refilling: from the shared counts, one refiller per pool -----------------------------
    def top_up(self) -> None:
        """Read the shared counts and refill the pools below their marks (one sweep at a
        time per process; one refiller per pool across coordinators)."""
        if not self._sweeping:
            self._sweeping = True
            self._spawn(self._sweep())

    async def _sweep(self) -> None:
        try:
            self.counts = await asyncio.to_thread(self._read_counts)
            for key in self.keys.active():
                if spec(key.scheme).is_frost:
                    for nid in key.nodes:
                        n = self.registry.nodes.get(nid)
                        if n is None or not n.eligible:
                            continue
                        boot = self.registry.boot_of(n.party_id)
                        have = self.counts.frost.get((key.id, n.party_id, boot), 0)
                        tag = ("frost", key.id, n.party_id)
                        if have < self.settings.frost_low_water and tag not in self._refilling:
                            self._spawn(self._refill_shared_frost(key, n))
                else:
                    for path in [None, *self._recent.get(key.id, ())]:
                        have = self.counts.presig.get((key.id, _path(path)), 0)
                        target = None if path is None else DERIVED_TARGET
                        tag = ("presig", key.id, 0 if path is None else path)
                        if self.presig_wanted(have, target) and tag not in self._refilling:
                            self._spawn(self._refill_shared_presig(key, path))
        except Exception:
            log.exception("shared pool sweep failed")
        finally:
            self._sweeping = False

    async def _claim_refill(self, pool: str) -> bool:
        now = utcnow()
        until = now + dt.timedelta(seconds=REFILL_HOLD)
        me = self.instance

        def job(conn: Connection) -> bool:
            over = conn.execute(
                update(_PR).where(_PR.c.pool == pool, _PR.c.until < now)
                .values(holder=me, until=until)
            )  # fmt: skip
            if over.rowcount:
                return True
            ins: Any = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(_PR)
            # RETURNING, not rowcount: psycopg reports -1 (true) for this INSERT on
            # PostgreSQL, so every coordinator believed it held the claim
            done = conn.execute(
                ins.values(pool=pool, holder=me, until=until)
                .on_conflict_do_nothing()
                .returning(_PR.c.pool)
            )
            return done.first() is not None

        return bool(await self.db.write(job))

    async def _release_refill(self, pool: str) -> None:
        me = self.instance
        await self.db.write(
            lambda conn: conn.execute(delete(_PR).where(_PR.c.pool == pool, _PR.c.holder == me))
        )

    async def _refill_shared_frost(self, key: KeyInfo, node: NodeInfo) -> None:
        tag = ("frost", key.id, node.party_id)
        pool = f"frost:{key.id}:{node.party_id}"
        self._refilling.add(tag)
        try:
            if not await self._claim_refill(pool):
                return  # another coordinator refills it
            try:
                boot = self.registry.boot_of(node.party_id)
                items = await self._fetch_items(key, node, self.settings.frost_batch)
                await self._store_commitments(key, node, boot, items)
            except NodeFailure as e:
                if e.transport:
                    self.registry.mark_down(node.party_id, e.detail)
                log.warning("commitment refill failed", extra={"node": node.id, "err": e.detail})
            finally:
                await self._release_refill(pool)
        finally:
            self._refilling.discard(tag)

    def _count_presig(self, key_id: str, path: str | None) -> int:
        with self.db.engine.connect() as conn:
            n = conn.scalar(
                select(func.count()).where(_PP.c.key_id == key_id, _PP.c.path == _path(path))
            )
        return int(n or 0)

    async def _refill_shared_presig(self, key: KeyInfo, path: str | None) -> None:
        """Presign sessions until the shared pool reaches its target (``presig_target``,
        a path's :data:`DERIVED_TARGET`), as :meth:`Pools._refill_presig` does in memory."""
        tag: tuple[str, str, int | str] = ("presig", key.id, 0 if path is None else path)
        pool = f"presig:{key.id}:{_path(path)}"
        target = self.settings.presig_target if path is None else DERIVED_TARGET
        self._refilling.add(tag)
        try:
            if not await self._claim_refill(pool):
                return
            try:
                while True:
                    have = await asyncio.to_thread(self._count_presig, key.id, path)
                    if not self.presig_wanted(have, None if path is None else DERIVED_TARGET):
                        return
                    eligible = self.registry.eligible_of(key.nodes)
                    if len(eligible) < key.threshold:
                        return
                    need = max(1, target - have)
                    k = min(self.batch_size(key.threshold), need)
                    n = min(self.settings.presig_parallel, -(-need // k))
                    res = await asyncio.gather(
                        *(
                            self.presign_batch(
                                key.id, random.sample(eligible, key.threshold), path, k
                            )
                            for _ in range(n)
                        ),
                        return_exceptions=True,
                    )
                    made = [p for r in res if isinstance(r, list) for p in r]
                    for r in res:
                        if isinstance(r, SessionFailed):
                            log.warning(
                                "presign refill failed", extra={"key_id": key.id, "err": r.detail}
                            )
                        elif isinstance(r, BaseException):
                            raise r
                    if not made:
                        return  # every session failed: the next sweep tries again
                    pk = (key.id, path)
                    waiters = self._waiters.get(pk)
                    if waiters:
                        self._deliver(pk, made)
                    else:  # stored before the next count
                        await self._store_presignatures(pk, made)
            finally:
                await self._release_refill(pool)
        finally:
            self._refilling.discard(tag)


def shared_pools_wanted(settings: Settings, db: Database) -> bool:
    """``CUSTODY_SHARED_POOLS``: database, memory, or auto (database on PostgreSQL)."""
    if settings.shared_pools == "auto":
        return db.engine.dialect.name == "postgresql"
    return settings.shared_pools == "database"
