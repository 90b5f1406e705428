"""Preprocessing pools: FROST nonce commitments per (key, node), ECDSA presignatures per
(key, derivation path).

They live in memory: a cache of public data. Losing them on restart only wastes the
nodes' precomputation; single use is enforced durably by the nodes, and each item is
handed out once here (popped from a deque inside one event loop). Several coordinators
on one PostgreSQL use :class:`api.coordinator.shared_pools.SharedPools` instead, the same
pools as database rows (``CUSTODY_SHARED_POOLS``: on PostgreSQL by default).

Derived keys (issue 13). A FROST nonce is not tied to a key (RFC 9591 s5.1: the nonce and
its commitments do not depend on the group key; the node signs with the derived share at
s5.2), so one commitment pool per (key, node) serves the root and every path. A DKLs23
presignature is: the nodes presign with the share already derived for the path (Groth and
Shoup, EUROCRYPT 2022: a tweak chosen after ``R`` is known allows forgeries; see
:mod:`mpc.hd`), so presignatures are pooled per ``(key id, path)`` and each is handed out for
its own path only (the nodes refuse it for another path too). The root pool is kept at
``presig_target`` by the refill sweep; a path's pool is filled on demand (a presign session
at its first signature) and then kept at :data:`DERIVED_TARGET` while it is among the
:data:`DERIVED_PATHS` most recently used paths of its key. The nodes cap outstanding
presignatures per key across all its paths (``signer_nodes.pool``).

Batched presigning (issue 13). Every presign session the coordinator starts asks for a
batch of up to ``presig_batch`` presignatures (``presign_count``: k independent DKLs23
instances sharing the session's round trips, :mod:`mpc.dkls23.batch`), capped so that a
round-2 delivery fits the nodes' body limit (:data:`NODE_BODY_BUDGET`). A request that
finds its pool empty does not run a session of its own: it waits for a presignature of a
batch started for the waiting requests (at most ``presig_parallel`` such sessions per pool
at once, each sized for the requests not yet covered); the surplus of a batch, and every
refill, serves waiting requests first and then goes to the pool. A failed batch fails the
requests it was started for with its blame (the signing path retries them without the
culprits, one single presign each). A retry that excludes parties presigns alone, as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sized
from dataclasses import dataclass
from typing import Any

from api import crypto
from api.coordinator.keys import KeyBook
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.types import Activity, KeyInfo, SessionFailed
from api.nodes import NodeFailure, NodeInfo
from api.settings import Settings
from custody.domain import Scheme, SessionKind, spec
from mpc import frost
from mpc.dkls23.batch import max_batch_for

log = logging.getLogger("api.coordinator")

IDLE_GRACE = 0.5  # seconds without a new signature before presign refills count as idle
DERIVED_TARGET = 2  # presignatures kept for a recently used derivation path
DERIVED_PATHS = 16  # derivation paths per key whose presignature pools are kept filled
PoolKey = tuple[str, str | None]  # (key id, derivation path or None for the root key)
#: raw protocol bytes one node may receive in one round-2 delivery of a batch: the nodes'
#: 2 MiB body limit (signer_nodes.service.LIMITS) halved, envelopes travel hex-encoded,
#: less room for the envelope framing and the JSON around it
NODE_BODY_BUDGET = 900_000


@dataclass(frozen=True)
class Presignature:
    """A DKLs23 presignature every participant reported alike (public part only)."""

    id: str
    parties: tuple[int, ...]
    r_point: str  # hex instance point R


@dataclass(frozen=True)
class Commitment:
    """One node's nonce commitments (RFC 9591 section 5.1), decoded and checked on entry."""

    nonce_id: str
    commitments: frost.SigningCommitments


Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Pools:
    """Keeps both pools topped up and hands out their items."""

    def __init__(
        self,
        settings: Settings,
        registry: NodeRegistry,
        relay: SessionRelay,
        keys: KeyBook,
        activity: Activity,
        spawn: Spawn,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.relay = relay
        self.keys = keys
        self.activity = activity
        self._spawn = spawn
        self._frost: dict[tuple[str, int], deque[Commitment]] = {}
        self._presig: dict[PoolKey, deque[Presignature]] = {}
        self._recent: dict[str, list[str]] = {}  # key id -> its recently used paths, newest last
        self._refilling: set[tuple[str, str, int | str]] = set()
        # requests waiting for a presignature of an empty pool, and what is being made for
        # them: presignatures and sessions in flight per pool (module docstring)
        self._waiters: dict[PoolKey, deque[asyncio.Future[Presignature]]] = {}
        self._inline: dict[PoolKey, list[int]] = {}  # pool -> [presignatures, sessions]

    def forget_party(self, party: int) -> int:
        """Drop every pooled commitment of ``party`` and every presignature it is part of
        (the node restarted: the secrets behind them lived in its memory only). Returns
        how many were dropped; the refill sweep makes new ones."""
        dropped = 0
        for (_key_id, p), commitments in self._frost.items():
            if p == party:
                dropped += len(commitments)
                commitments.clear()
        for presignatures in self._presig.values():
            stale = [x for x in presignatures if party in x.parties]
            for x in stale:
                presignatures.remove(x)
            dropped += len(stale)
        return dropped

    def forget_key(self, key_id: str) -> int:
        """Drop every pooled commitment and presignature of ``key_id`` (its shares changed:
        the nodes dropped the secrets behind them at the commit)."""
        dropped = 0
        for (kid, _p), commitments in self._frost.items():
            if kid == key_id:
                dropped += len(commitments)
                commitments.clear()
        for (kid, _path), presignatures in self._presig.items():
            if kid == key_id:
                dropped += len(presignatures)
                presignatures.clear()
        return dropped

    def sizes(self) -> dict[str, int]:
        return {
            "frost_commitments": sum(len(q) for q in self._frost.values()),
            "presignatures": sum(len(q) for q in self._presig.values()),
        }

    # -- handing out ------------------------------------------------------------------------
    async def take_commitment(self, key: KeyInfo, node: NodeInfo) -> Commitment:
        """One unused commitment of ``node`` for ``key`` (fetched now if the pool is dry)."""
        q = self._frost.get((key.id, node.party_id))
        if not q:
            try:
                await self._fetch_commitments(key, node, self.settings.frost_batch)
            except NodeFailure as e:
                if e.transport:
                    self.registry.mark_down(node.party_id, e.detail)
                raise SessionFailed(
                    "commitment fetch failed",
                    [(c, f"{e.reason}: {e.detail}") for c in e.culprits],
                ) from None
            q = self._frost[(key.id, node.party_id)]
        return q.popleft()

    async def take_presignature(self, key: KeyInfo, excluded: set[int]) -> Presignature:
        """A pooled presignature of ``key``'s path (``key.derivation_path``, None for the
        root) whose participants are all healthy and not excluded (the others stay for when
        their nodes are back), else a fresh presign session for that path."""
        path = key.derivation_path
        if path is not None:
            self._used_path(key.id, path)
        q = self._presig.setdefault((key.id, path), deque())
        for _ in range(len(q)):
            item = q.popleft()
            if all(p not in excluded and self.registry.eligible_party(p) for p in item.parties):
                return item
            q.append(item)
        if excluded:  # a retry routing around culprits: a presign of its own, as before
            return await self.presign(
                key.id, self.registry.pick(key.nodes, key.threshold, excluded), path
            )
        fut: asyncio.Future[Presignature] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((key.id, path), deque()).append(fut)
        self._demand(key, path)
        return await fut

    def batch_size(self, threshold: int) -> int:
        """Presignatures per presign session: ``presig_batch``, within the body budget."""
        return min(self.settings.presig_batch, max_batch_for(threshold, NODE_BODY_BUDGET))

    def _demand(self, key: KeyInfo, path: str | None) -> None:
        """Start batches for the waiting requests of a pool not yet covered by one."""
        pk = (key.id, path)
        waiting = sum(not f.done() for f in self._waiters.get(pk, ()))
        flight = self._inline.setdefault(pk, [0, 0])
        while flight[0] < waiting and flight[1] < self.settings.presig_parallel:
            k = self.batch_size(key.threshold)
            flight[0] += k
            flight[1] += 1
            self._spawn(self._inline_batch(key, path, k))

    async def _inline_batch(self, key: KeyInfo, path: str | None, k: int) -> None:
        """One batch for the waiting requests of a pool (see :meth:`take_presignature`)."""
        pk = (key.id, path)
        made: list[Presignature] = []
        failure: BaseException | None = None
        try:
            nodes = self.registry.pick(key.nodes, key.threshold, set())
            made = await self.presign_batch(key.id, nodes, path, k)
        except Exception as e:  # noqa: BLE001 - handed to the requests it was made for
            failure = e
        finally:
            flight = self._inline[pk]
            flight[0] -= k
            flight[1] -= 1
        if failure is not None:
            log.warning("presign batch failed", extra={"key_id": key.id, "err": str(failure)})
            waiters = self._waiters.get(pk, deque())
            failed = 0
            while waiters and failed < k:
                w = waiters.popleft()
                if not w.done():
                    w.set_exception(failure)
                    failed += 1
        self._deliver(pk, made)
        if self._waiters.get(pk):
            self._demand(key, path)

    def _deliver(self, pk: PoolKey, made: list[Presignature]) -> None:
        """Hand new presignatures to waiting requests first (oldest first), pool the rest."""
        waiters = self._waiters.get(pk, deque())
        q = self._presig.setdefault(pk, deque())
        for pre in made:
            while waiters and waiters[0].done():  # cancelled: the client went away
                waiters.popleft()
            if waiters:
                waiters.popleft().set_result(pre)
            else:
                q.append(pre)

    def _used_path(self, key_id: str, path: str) -> None:
        recent = self._recent.setdefault(key_id, [])
        if path in recent:
            recent.remove(path)
        recent.append(path)
        del recent[:-DERIVED_PATHS]

    # -- refilling --------------------------------------------------------------------------
    def top_up(self) -> None:
        """Spawn a refill for every pool below its mark (at most one per pool at a time)."""
        for key in self.keys.active():
            if spec(key.scheme).is_frost:
                for nid in key.nodes:
                    n = self.registry.nodes.get(nid)
                    if n is None or not n.eligible:
                        continue
                    q = self._frost.get((key.id, n.party_id))
                    tag = ("frost", key.id, n.party_id)
                    low = q is None or len(q) < self.settings.frost_low_water
                    if low and tag not in self._refilling:
                        self._spawn(self._refill_frost(key, n))
            else:
                if self.presig_wanted(self._presig.get((key.id, None))) and (
                    ("presig", key.id, 0) not in self._refilling
                ):
                    self._spawn(self._refill_presig(key))
                for path in self._recent.get(key.id, ()):
                    if self.presig_wanted(self._presig.get((key.id, path)), DERIVED_TARGET) and (
                        ("presig", key.id, path) not in self._refilling
                    ):
                        self._spawn(self._refill_presig(key, path))

    def presig_wanted(self, q: Sized | int | None, target: int | None = None) -> bool:
        """Refill a presignature pool below ``presig_target`` while no signature is in
        flight, or at once below ``presig_low_water``: presign sessions cost far more CPU
        than online signing, so they wait for a quiet moment unless the pool runs low.
        ``target``: a derivation path's pool (:data:`DERIVED_TARGET`), refilled when idle
        only (its first signature presigns on demand). ``q``: the pool, or its size."""
        n = q if isinstance(q, int) else 0 if q is None else len(q)
        a = self.activity
        idle = not a.signing and time.monotonic() - a.last_sign > IDLE_GRACE
        if target is not None:
            return n < target and idle
        return n < self.settings.presig_low_water or (n < self.settings.presig_target and idle)

    async def _refill_frost(self, key: KeyInfo, node: NodeInfo) -> None:
        tag = ("frost", key.id, node.party_id)
        self._refilling.add(tag)
        try:
            await self._fetch_commitments(key, node, self.settings.frost_batch)
        except NodeFailure as e:
            if e.transport:
                self.registry.mark_down(node.party_id, e.detail)
            log.warning("commitment refill failed", extra={"node": node.id, "err": e.detail})
        finally:
            self._refilling.discard(tag)

    async def _fetch_commitments(self, key: KeyInfo, node: NodeInfo, count: int) -> None:
        got = await self._fetch_items(key, node, count)
        self._frost.setdefault((key.id, node.party_id), deque()).extend(c for c, _ in got)

    async def _fetch_items(
        self, key: KeyInfo, node: NodeInfo, count: int
    ) -> list[tuple[Commitment, str]]:
        """``count`` fresh commitments of ``node`` for ``key``, each decoded and checked,
        with the hex the node sent (what the shared pool stores)."""
        doc = await asyncio.wait_for(
            self.registry.caller.call(
                node, "POST", "/v1/frost/commitments", {"key_id": key.id, "count": count}
            ),
            self.settings.round_timeout,
        )
        items = doc.get("commitments")
        if not isinstance(items, list):
            raise NodeFailure(node, "garbage", "commitments is not a list")
        for it in items:
            if not (
                isinstance(it, dict)
                and isinstance(it.get("nonce_id"), str)
                and isinstance(it.get("commitments"), str)
            ):
                raise NodeFailure(node, "garbage", "malformed commitment item")

        def decode() -> list[tuple[Commitment, str]]:
            return [
                (
                    Commitment(
                        it["nonce_id"],
                        crypto.frost_commitments(key.scheme, node.party_id, it["commitments"]),
                    ),
                    it["commitments"],
                )
                for it in items
            ]

        # Checked once, here: point checks (~65 us per Ed25519 point) of a whole batch would
        # stall the event loop, so they run in a worker thread (libsodium drops the GIL).
        try:
            return await asyncio.to_thread(decode)
        except crypto.Blame as e:
            raise NodeFailure(node, "garbage", str(e)) from None

    async def _refill_presig(self, key: KeyInfo, path: str | None = None) -> None:
        """Fill the presignature pool of the key (``path``: of its child there) up to
        ``presig_target`` (:data:`DERIVED_TARGET`), running up to ``presig_parallel``
        presign sessions at once (each is a few sequential rounds, so one at a time leaves
        the cores idle and a busy pool runs dry), each a batch of up to :meth:`batch_size`
        presignatures; waiting requests are served first (:meth:`_deliver`)."""
        tag: tuple[str, str, int | str] = ("presig", key.id, 0 if path is None else path)
        target = self.settings.presig_target if path is None else DERIVED_TARGET
        self._refilling.add(tag)
        try:
            q = self._presig.setdefault((key.id, path), deque())
            while self.presig_wanted(q, None if path is None else DERIVED_TARGET):
                eligible = self.registry.eligible_of(key.nodes)
                if len(eligible) < key.threshold:
                    return
                need = max(1, target - len(q))
                k = min(self.batch_size(key.threshold), need)
                n = min(self.settings.presig_parallel, -(-need // k))
                res = await asyncio.gather(
                    *(
                        self.presign_batch(key.id, random.sample(eligible, key.threshold), path, k)
                        for _ in range(n)
                    ),
                    return_exceptions=True,
                )
                for r in res:
                    if isinstance(r, list):
                        self._deliver((key.id, path), r)
                    elif isinstance(r, SessionFailed):
                        log.warning(
                            "presign refill failed", extra={"key_id": key.id, "err": r.detail}
                        )
                    elif isinstance(r, BaseException):
                        raise r
                if not any(isinstance(r, list) for r in res):
                    return  # every session failed: the next sweep tries again
        finally:
            self._refilling.discard(tag)

    async def presign(
        self, key_id: str, nodes: list[NodeInfo], path: str | None = None
    ) -> Presignature:
        """One DKLs23 presign session of one presignature (see :meth:`presign_batch`)."""
        (pre,) = await self.presign_batch(key_id, nodes, path, 1)
        return pre

    async def presign_batch(
        self, key_id: str, nodes: list[NodeInfo], path: str | None = None, count: int = 1
    ) -> list[Presignature]:
        """One DKLs23 presign session giving ``count`` presignatures (``path``: each node
        presigns with its share derived for that path; ``count`` > 1: a batch session,
        ``presign_count``, :mod:`mpc.dkls23.batch`). Every party must report the same
        presignature ids and instance points ``R`` (hex), in the same order, and the same
        path, which the combiner then takes as given; else the session's presignatures are
        all dropped and the parties blamed."""
        parties = tuple(sorted(n.party_id for n in nodes))
        kind: SessionKind = "ecdsa-presign"
        scheme: Scheme = "ecdsa-secp256k1"
        body: dict[str, Any] = {
            "session_id": secrets.token_hex(32),
            "kind": kind,
            "key_id": key_id,
            "scheme": scheme,
            "threshold": len(nodes),
            "participants": list(parties),
        }
        if path is not None:
            body["derivation_path"] = path
        if count != 1:
            body["presign_count"] = count
        results = await self.relay.run(nodes, body)
        reported = {p: _reported(r, path, count) for p, r in results.items()}
        lacking = [p for p, items in reported.items() if items is None]
        if lacking:
            raise SessionFailed(
                "presign result without presignature_id or R",
                [(p, "garbage: presign result lacks R or its path") for p in lacking],
            )
        views = {tuple(items) for items in reported.values() if items is not None}
        if len(views) != 1:
            raise SessionFailed(
                "parties disagree on the presignature",
                [(p, "inconsistent presign result") for p in parties],
            )
        items = views.pop()
        if len({pid for pid, _ in items}) != len(items):
            raise SessionFailed(
                "presign batch repeats a presignature id",
                [(p, "garbage: repeated presignature id") for p in parties],
            )
        out = []
        for pid, r_point in items:
            try:
                crypto.check_point(r_point)
            except ValueError as e:
                raise SessionFailed(
                    "presign result has a bad R", [(p, f"garbage: {e}") for p in parties]
                ) from None
            out.append(Presignature(pid, parties, r_point))
        return out


def _reported(r: Any, path: str | None, count: int) -> list[tuple[str, str]] | None:
    """A party's presign result as ``[(presignature id, R hex), ...]``, None if malformed
    (a single session reports one at the top level, a batch ``presignatures``)."""
    if not isinstance(r, dict) or r.get("derivation_path") != path:
        return None
    if count == 1:
        items = [r]
    else:
        raw = r.get("presignatures")
        if not isinstance(raw, list) or len(raw) != count or r.get("presign_count") != count:
            return None
        items = raw
    out = []
    for it in items:
        if not (
            isinstance(it, dict)
            and isinstance(it.get("R"), str)
            and isinstance(it.get("presignature_id"), str)
        ):
            return None
        out.append((it["presignature_id"], it["R"]))
    return out
