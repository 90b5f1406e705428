"""Orchestration: DKG sessions, FROST and DKLs23 signing, preprocessing pools, node health.

The coordinator relays and aggregates; it never holds a share. Per session it picks ``t``
healthy nodes, relays their envelopes (docs/NODE_API.md, SessionState loop), bounds every
call by ``round_timeout``, and on a node failure retries once on another subset without the
blamed node. Aggregated signatures are verified against the group key before they are
stored, and stored in the same transaction as their audit entry (fail closed).

Pools (FROST nonce commitments per node, ECDSA presignatures per participant set) live in
memory: they are a cache of public data. Losing them on restart only wastes the nodes'
precomputation; single use is enforced durably by the nodes, and each item is handed out
once here (popped from a deque inside one event loop).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, select

from api import audit, crypto, idempotency
from api.db import Database, Key, Node, SignRequest, utcnow
from api.nodes import NodeCaller, NodeFailure, NodeInfo
from api.problems import Problem
from api.settings import Settings
from custody.domain import FROST_SCHEMES

log = logging.getLogger("api.coordinator")

IDLE_GRACE = 0.5  # seconds without a new signature before presign refills count as idle
SLOW_SWEEP = 1.0  # seconds between health checks, expiry and re-reading the active keys


# Core statement built once for the signing hot path (parameters per call; the SET clause
# is the columns named in the parameters).
_REQUESTS = cast(Table, SignRequest.__table__)
_UPDATE_REQUEST = _REQUESTS.update().where(_REQUESTS.c.id == bindparam("_rid"))


class SessionFailed(Exception):
    """A multi-party session or signing attempt failed; ``blame`` lists (party, reason)."""

    def __init__(self, detail: str, blame: list[tuple[int, str]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.blame = blame


def problem_doc(
    slug: str, title: str, detail: str, status: int = 502, **extra: Any
) -> dict[str, Any]:
    return Problem(status, slug, title, detail, **extra).document()


class KeyInfo(NamedTuple):
    """An active key as signing needs it (public data only)."""

    id: str
    scheme: str
    threshold: int
    nodes: list[str]
    public_key: str
    verifying_shares: dict[str, str]


class Coordinator:
    """Holds the node registry, the pools and the background tasks of one coordinator."""

    def __init__(self, settings: Settings, db: Database, caller: NodeCaller) -> None:
        self.settings = settings
        self.db = db
        self.caller = caller
        self.nodes: dict[str, NodeInfo] = {}
        # (nonce_id, commitments decoded and checked once, on entry) per (key, party)
        self.frost_pool: dict[tuple[str, int], deque[tuple[str, Any]]] = {}
        self.presig_pool: dict[str, deque[tuple[str, tuple[int, ...], str]]] = {}
        self._refilling: set[tuple[Any, ...]] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._last_seen_written: dict[str, float] = {}
        # Active keys by id. A key's row never changes once it is active (there is no
        # disable yet; whoever adds one must drop the key from here in the same change).
        self.active_keys: dict[str, KeyInfo] = {}
        self._keys_read: list[tuple[str, str, int, list[str]]] | None = None
        self.signing = 0  # sign requests being signed right now
        self.last_sign = 0.0  # monotonic time the last one started

    # -- lifecycle ----------------------------------------------------------------------
    def load_nodes(self) -> None:
        with self.db.session() as s:
            for n in s.scalars(select(Node)):
                self.nodes[n.id] = NodeInfo(n.id, n.party_id, n.url, n.sign_pk, n.box_pk)

    def start(self) -> None:
        self.load_nodes()
        self._loop_task = asyncio.create_task(self._background())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(
            *self.tasks, *([self._loop_task] if self._loop_task else []), return_exceptions=True
        )
        await self.caller.aclose()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _background(self) -> None:
        """Pool top-ups every ``pool_interval``; health checks, request expiry and the list
        of active keys at most every :data:`SLOW_SWEEP` (each is a database query or a
        call per node: at a 0.2 s interval they cost as much as 30 signatures a second).
        A node failing a call is marked down at once anyway (:meth:`mark_down`)."""
        last_slow = -SLOW_SWEEP
        while True:
            try:
                if time.monotonic() - last_slow >= SLOW_SWEEP:
                    last_slow = time.monotonic()
                    await self.check_health()
                    self.expire_requests()
                    self._keys_read = None
                self.top_up_pools()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background sweep failed")
            await asyncio.sleep(self.settings.pool_interval)

    # -- nodes --------------------------------------------------------------------------
    async def check_health(self) -> None:
        await asyncio.gather(*(self._check(n) for n in list(self.nodes.values())))

    async def _check(self, node: NodeInfo) -> None:
        before = node.status
        try:
            h = await self.caller.health(node)
            node.status = "healthy" if h.get("status") == "ok" else "degraded"
            node.last_error = None if node.status == "healthy" else f"hsm: {h.get('hsm')}"
            node.last_seen = time.time()
        except NodeFailure as e:
            node.status = "down"
            node.last_error = e.detail
        now = time.time()
        if before != node.status or now - self._last_seen_written.get(node.id, 0) > 5:
            self._last_seen_written[node.id] = now
            self._persist_node(node)

    def _persist_node(self, node: NodeInfo) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Node).where(Node.id == node.id))
            if row is None:
                return
            row.status = node.status
            row.last_error = node.last_error
            if node.last_seen:
                row.last_seen = dt.datetime.fromtimestamp(node.last_seen, dt.UTC)

    def mark_down(self, party: int, detail: str) -> None:
        for n in self.nodes.values():
            if n.party_id == party and n.status != "down":
                n.status = "down"
                n.last_error = detail
                self._persist_node(n)

    def node_by_party(self, party: int) -> NodeInfo | None:
        for n in self.nodes.values():
            if n.party_id == party:
                return n
        return None

    async def enrol(self, node_id: str, url: str, actor: str) -> NodeInfo:
        """Fetch the node's identity from its /health, store it, push peers to every node."""
        probe = NodeInfo(node_id, 0, url, "", "")
        try:
            h = await self.caller.health(probe)
        except NodeFailure as e:
            raise Problem(502, "node-unreachable", "Node unreachable", e.detail) from None
        if h.get("node_id") != node_id:
            raise Problem(
                409,
                "node-id-mismatch",
                "Node id mismatch",
                f"the node at {url} says it is {h.get('node_id')!r}",
            )
        try:
            party = int(h["party_id"])
            sign_pk, box_pk = str(h["sign_pk"]), str(h["box_pk"])
            bytes.fromhex(sign_pk), bytes.fromhex(box_pk)
        except (KeyError, ValueError, TypeError):
            raise Problem(
                502, "node-garbage", "Node answered garbage", "health lacks party_id/sign_pk/box_pk"
            ) from None
        with self.db.session() as s:
            clash = s.scalar(select(Node).where(Node.party_id == party, Node.id != node_id))
            if clash is not None:
                raise Problem(
                    409,
                    "party-id-taken",
                    "Party id taken",
                    f"party {party} already belongs to {clash.id}",
                )
            row = s.scalar(select(Node).where(Node.id == node_id))
            if row is None:
                row = Node(id=node_id, party_id=party, url=url, sign_pk=sign_pk, box_pk=box_pk)
                s.add(row)
            row.url, row.party_id, row.sign_pk, row.box_pk = url, party, sign_pk, box_pk
            row.status = "healthy" if h.get("status") == "ok" else "degraded"
            row.last_seen = utcnow()
            audit.append(
                s,
                actor,
                "node.enrol",
                node_id,
                {"url": url, "party_id": party, "sign_pk": sign_pk, "box_pk": box_pk},
            )
        info = NodeInfo(
            node_id, party, url, sign_pk, box_pk, status=row.status, last_seen=time.time()
        )
        self.nodes[node_id] = info
        await self.push_peers()
        return info

    async def push_peers(self) -> None:
        peers = [
            {"node_id": n.id, "party_id": n.party_id, "sign_pk": n.sign_pk, "box_pk": n.box_pk}
            for n in sorted(self.nodes.values(), key=lambda n: n.party_id)
        ]
        results = await asyncio.gather(
            *(
                self.caller.call(n, "PUT", "/v1/peers", {"peers": peers})
                for n in self.nodes.values()
            ),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, NodeFailure):
                log.warning("peer push failed", extra={"node": r.node.id, "err": r.detail})

    # -- sessions (DKG, presign) -----------------------------------------------------------
    async def run_session(self, nodes: list[NodeInfo], body: dict[str, Any]) -> dict[int, Any]:
        """Start a session on ``nodes`` and relay envelopes until all are done.

        Returns each party's ``result``. Raises :class:`SessionFailed` with blame.
        """
        sid = body["session_id"]
        by_party = {n.party_id: n for n in nodes}
        parties = set(by_party)
        timeout = self.settings.round_timeout

        async def call(p: int, method: str, path: str, b: dict[str, Any] | None) -> Any:
            return await asyncio.wait_for(self.caller.call(by_party[p], method, path, b), timeout)

        async def fan(
            reqs: Mapping[int, tuple[str, str, dict[str, Any] | None]],
        ) -> dict[int, Any]:
            res = await asyncio.gather(
                *(call(p, *r) for p, r in reqs.items()), return_exceptions=True
            )
            out: dict[int, Any] = {}
            blame: list[tuple[int, str]] = []
            for p, r in zip(reqs, res, strict=True):
                failed = self._failure_blame(p, r, timeout_marks_down=False)
                if failed is None:
                    out[p] = r
                else:
                    blame += failed
            if blame:
                raise SessionFailed("session " + sid[:16] + " failed", blame)
            return out

        states = await fan({p: ("POST", "/v1/sessions", body) for p in parties})
        delivered: set[str] = set()
        last_progress = time.monotonic()
        while True:
            outbox: dict[int, list[dict[str, Any]]] = {}
            for p, st in states.items():
                self._check_state(p, st, sid, parties)
                for env in st.get("envelopes") or []:
                    h = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
                    if h in delivered:
                        continue
                    delivered.add(h)
                    to = env.get("to")
                    for q in [to] if to is not None else sorted(parties - {p}):
                        outbox.setdefault(q, []).append(env)
            if all(st["status"] == "done" for st in states.values()) and not outbox:
                return {p: st.get("result") for p, st in states.items()}
            if outbox:
                new = await fan(
                    {
                        q: ("POST", f"/v1/sessions/{sid}/envelopes", {"envelopes": envs})
                        for q, envs in outbox.items()
                    }
                )
                states.update(new)
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > timeout:
                waiting = sorted(
                    {
                        w
                        for st in states.values()
                        for w in (st.get("waiting_for") or [])
                        if w in parties
                    }
                )
                raise SessionFailed(
                    "round timed out",
                    [(w, "timeout") for w in waiting]
                    or [(p, "timeout") for p, st in states.items() if st["status"] != "done"],
                )
            await asyncio.sleep(0.01)
            pending = {
                p: ("GET", f"/v1/sessions/{sid}", None)
                for p, st in states.items()
                if st["status"] != "done"
            }
            states.update(await fan(pending))

    @staticmethod
    def _check_state(p: int, st: Any, sid: str, parties: set[int]) -> None:
        def garbage(why: str) -> SessionFailed:
            return SessionFailed(
                f"party {p} sent a malformed session state: {why}", [(p, "garbage: " + why)]
            )

        if not isinstance(st, dict) or st.get("status") not in ("running", "done", "failed"):
            raise garbage("status")
        if st.get("session_id") not in (None, sid):
            raise garbage("session_id")
        if st["status"] == "failed":
            err = st.get("error") or {}
            culprits = err.get("culprits") if isinstance(err, dict) else None
            if not (
                isinstance(culprits, list)
                and culprits
                and all(type(c) is int and c in parties for c in culprits)
            ):
                culprits = [p]
            detail = err.get("detail", "") if isinstance(err, dict) else ""
            raise SessionFailed(
                f"party {p} reports failure: {detail}",
                [(c, f"reported by party {p}: {detail}") for c in culprits],
            )
        envs = st.get("envelopes") or []
        if not isinstance(envs, list):
            raise garbage("envelopes")
        for e in envs:
            if (
                not isinstance(e, dict)
                or e.get("from") != p
                or not isinstance(e.get("envelope"), str)
            ):
                raise garbage("envelope header")
            to = e.get("to")
            if to is not None and (type(to) is not int or to not in parties or to == p):
                raise garbage("envelope recipient")

    # -- keys ---------------------------------------------------------------------------
    async def run_dkg(self, key_id: str) -> None:
        with self.db.session() as s:
            key = s.scalar(select(Key).where(Key.id == key_id))
            assert key is not None
            scheme, t, node_ids = key.scheme, key.threshold, list(key.nodes)
        nodes = [self.nodes[n] for n in node_ids]
        body = {
            "session_id": secrets.token_hex(32),
            "kind": "dkg",
            "key_id": key_id,
            "scheme": scheme,
            "threshold": t,
            "participants": sorted(n.party_id for n in nodes),
        }
        error: dict[str, Any] | None = None
        pk: str | None = None
        shares: dict[str, str] | None = None
        try:
            results = await self.run_session(nodes, body)
            pk, shares = self._agree_dkg(scheme, t, results)
        except SessionFailed as e:
            error = problem_doc(
                "dkg-failed",
                "DKG failed",
                e.detail,
                culprits=sorted({c for c, _ in e.blame}),
                blamed=[self._blame(c, r) for c, r in e.blame],
            )
        except Exception as e:  # never leave a key pending forever
            log.exception("dkg crashed", extra={"key_id": key_id})
            error = problem_doc("dkg-failed", "DKG failed", type(e).__name__, status=500)
        with self.db.session() as s:
            key = s.scalar(select(Key).where(Key.id == key_id))
            assert key is not None
            key.updated_at = utcnow()
            if error is None:
                key.status, key.public_key, key.verifying_shares = "active", pk, shares
                audit.append(
                    s,
                    "coordinator",
                    "key.active",
                    key_id,
                    {"scheme": scheme, "public_key": pk, "threshold": t, "nodes": node_ids},
                )
            else:
                key.status, key.error = "failed", error
                audit.append(s, "coordinator", "key.failed", key_id, {"error": error})
        if error is None:
            self._keys_read = None
            self.top_up_pools()

    @staticmethod
    def _agree_dkg(scheme: str, t: int, results: dict[int, Any]) -> tuple[str, dict[str, str]]:
        """All parties must report the same public key and verifying shares (else blame)."""
        seen: dict[str, list[int]] = {}
        parsed: dict[int, tuple[str, dict[str, str]]] = {}
        for p, r in results.items():
            try:
                pk = str(r["public_key"])
                vs = {str(k): str(v) for k, v in dict(r["verifying_shares"]).items()}
                crypto.check_public_key(scheme, pk, vs, t)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise SessionFailed(
                    f"party {p} gave a malformed DKG result", [(p, f"garbage: {e}")]
                ) from None
            parsed[p] = (pk, vs)
            seen.setdefault(json.dumps([pk, vs], sort_keys=True), []).append(p)
        if len(seen) != 1:
            groups = sorted(seen.values(), key=len)
            minority = [p for g in groups[:-1] for p in g]
            raise SessionFailed(
                "parties disagree on the DKG result",
                [(p, "inconsistent DKG result") for p in minority],
            )
        return next(iter(parsed.values()))

    def _blame(self, party: int, reason: str) -> dict[str, Any]:
        n = self.node_by_party(party)
        return {"node_id": n.id if n else None, "party_id": party, "reason": reason[:300]}

    # -- pools --------------------------------------------------------------------------
    def _active_keys(self) -> list[tuple[str, str, int, list[str]]]:
        """Active keys as of the last slow sweep or DKG (a key only ever becomes active)."""
        if self._keys_read is None:
            with self.db.session() as s:
                self._keys_read = [
                    (k.id, k.scheme, k.threshold, list(k.nodes))
                    for k in s.scalars(select(Key).where(Key.status == "active"))
                ]
        return self._keys_read

    def top_up_pools(self) -> None:
        for key_id, scheme, t, node_ids in self._active_keys():
            if scheme in FROST_SCHEMES:
                for nid in node_ids:
                    n = self.nodes.get(nid)
                    if n is None or not n.eligible:
                        continue
                    q = self.frost_pool.get((key_id, n.party_id))
                    if (q is None or len(q) < self.settings.frost_low_water) and (
                        "frost",
                        key_id,
                        n.party_id,
                    ) not in self._refilling:
                        self.spawn(self._refill_frost(key_id, n))
            else:
                q2 = self.presig_pool.get(key_id)
                if self._presig_wanted(q2) and ("presig", key_id) not in self._refilling:
                    self.spawn(self._refill_presig(key_id, t, node_ids))

    def _presig_wanted(self, q: deque[Any] | None) -> bool:
        """Refill a presignature pool below ``presig_target`` while no signature is in
        flight, or at once below ``presig_low_water``: presign sessions cost far more CPU
        than online signing, so they wait for a quiet moment unless the pool runs low."""
        n = 0 if q is None else len(q)
        idle = not self.signing and time.monotonic() - self.last_sign > IDLE_GRACE
        return n < self.settings.presig_low_water or (n < self.settings.presig_target and idle)

    async def _refill_frost(self, key_id: str, node: NodeInfo) -> None:
        tag = ("frost", key_id, node.party_id)
        self._refilling.add(tag)
        try:
            await self._fetch_commitments(key_id, node, self.settings.frost_batch)
        except NodeFailure as e:
            if e.transport:
                self.mark_down(node.party_id, e.detail)
            log.warning("commitment refill failed", extra={"node": node.id, "err": e.detail})
        finally:
            self._refilling.discard(tag)

    async def _fetch_commitments(self, key_id: str, node: NodeInfo, count: int) -> None:
        doc = await asyncio.wait_for(
            self.caller.call(
                node, "POST", "/v1/frost/commitments", {"key_id": key_id, "count": count}
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
        scheme = self.key_info(key_id).scheme

        def decode() -> list[tuple[str, Any]]:
            return [
                (it["nonce_id"], crypto.frost_commitments(scheme, node.party_id, it["commitments"]))
                for it in items
            ]

        # Checked once, here: point checks (~65 us per Ed25519 point) of a whole batch would
        # stall the event loop, so they run in a worker thread (libsodium drops the GIL).
        try:
            decoded = await asyncio.to_thread(decode)
        except crypto.Blame as e:
            raise NodeFailure(node, "garbage", str(e)) from None
        self.frost_pool.setdefault((key_id, node.party_id), deque()).extend(decoded)

    async def _refill_presig(self, key_id: str, t: int, node_ids: list[str]) -> None:
        """Fill the key's presignature pool up to ``presig_target``, running up to
        ``presig_parallel`` presign sessions at once (each is a few sequential rounds, so
        one at a time leaves the cores idle and a busy pool runs dry)."""
        tag = ("presig", key_id)
        self._refilling.add(tag)
        try:
            q = self.presig_pool.setdefault(key_id, deque())
            while self._presig_wanted(q):
                eligible = [
                    self.nodes[n] for n in node_ids if n in self.nodes and self.nodes[n].eligible
                ]
                if len(eligible) < t:
                    return
                n = min(self.settings.presig_parallel, self.settings.presig_target - len(q))
                res = await asyncio.gather(
                    *(self._presign(key_id, random.sample(eligible, t)) for _ in range(n)),
                    return_exceptions=True,
                )
                for r in res:
                    if isinstance(r, tuple):
                        q.append(r)
                    elif isinstance(r, SessionFailed):
                        log.warning(
                            "presign refill failed", extra={"key_id": key_id, "err": r.detail}
                        )
                    elif isinstance(r, BaseException):
                        raise r
                if not any(isinstance(r, tuple) for r in res):
                    return  # every session failed: the next sweep tries again
        finally:
            self._refilling.discard(tag)

    async def _presign(
        self, key_id: str, nodes: list[NodeInfo]
    ) -> tuple[str, tuple[int, ...], str]:
        """One DKLs23 presign session; every party must report the same presignature id
        and instance point ``R`` (hex), which the combiner then takes as given."""
        parties = tuple(sorted(n.party_id for n in nodes))
        body = {
            "session_id": secrets.token_hex(32),
            "kind": "ecdsa-presign",
            "key_id": key_id,
            "scheme": "ecdsa-secp256k1",
            "threshold": len(nodes),
            "participants": list(parties),
        }
        results = await self.run_session(nodes, body)
        lacking = [
            p
            for p, r in results.items()
            if not (
                isinstance(r, dict)
                and isinstance(r.get("R"), str)
                and isinstance(r.get("presignature_id"), str)
            )
        ]
        if lacking:
            raise SessionFailed(
                "presign result without presignature_id or R",
                [(p, "garbage: presign result lacks R") for p in lacking],
            )
        ids = {(r["presignature_id"], r["R"]) for r in results.values()}
        if len(ids) != 1:
            raise SessionFailed(
                "parties disagree on the presignature",
                [(p, "inconsistent presign result") for p in parties],
            )
        pid, r_point = ids.pop()
        try:
            crypto.check_point(r_point)
        except ValueError as e:
            raise SessionFailed(
                "presign result has a bad R", [(p, f"garbage: {e}") for p in parties]
            ) from None
        return pid, parties, r_point

    def pool_sizes(self) -> dict[str, int]:
        return {
            "frost_commitments": sum(len(q) for q in self.frost_pool.values()),
            "presignatures": sum(len(q) for q in self.presig_pool.values()),
        }

    # -- sign requests ------------------------------------------------------------------
    def key_info(self, key_id: str) -> KeyInfo:
        """The active key ``key_id`` (from memory after the first look-up); 404/409 problem
        when it does not exist or is not active."""
        k = self.active_keys.get(key_id)
        if k is not None:
            return k
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(
                    Key.id,
                    Key.scheme,
                    Key.threshold,
                    Key.nodes,
                    Key.status,
                    Key.public_key,
                    Key.verifying_shares,
                ).where(Key.id == key_id)
            ).first()
        if row is None:
            raise Problem(404, "key-not-found", "Key not found", f"no key {key_id!r}")
        if row.status != "active":
            raise Problem(409, "key-not-active", "Key not active", f"key is {row.status}")
        k = KeyInfo(
            row.id,
            row.scheme,
            row.threshold,
            list(row.nodes),
            row.public_key or "",
            dict(row.verifying_shares or {}),
        )
        self.active_keys[key_id] = k
        return k

    def expire_requests(self) -> None:
        now = utcnow()
        with self.db.session() as s:
            rows = s.scalars(
                select(SignRequest).where(
                    SignRequest.status == "pending_approval", SignRequest.expires_at < now
                )
            ).all()
            for r in rows:
                r.status, r.updated_at = "expired", now
                audit.append(s, "coordinator", "sign.expired", r.id, {})

    async def run_sign(
        self,
        request_id: str,
        body: dict[str, Any] | None = None,
        kinfo: KeyInfo | None = None,
        answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None = None,
        slot: idempotency.Slot | None = None,
    ) -> None:
        """Sign one request: first attempt, then one retry on a subset without the blamed.

        ``body`` and ``kinfo`` spare the database reads when the caller has them; with
        ``slot`` and ``answer`` the POST's idempotent answer is stored with the outcome."""
        if body is None or kinfo is None:
            with self.db.session() as s:
                req = s.scalar(select(SignRequest).where(SignRequest.id == request_id))
                assert req is not None
                body = dict(req.body)
                kinfo = self.key_info(req.key_id)
        self.signing += 1
        self.last_sign = time.monotonic()
        try:
            await self._attempts(request_id, kinfo, body, [], set(), slot, answer)
        finally:
            self.signing -= 1

    async def _attempts(
        self,
        request_id: str,
        kinfo: KeyInfo,
        body: dict[str, Any],
        blamed: list[dict[str, Any]],
        excluded: set[int],
        slot: idempotency.Slot | None,
        answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None,
    ) -> None:
        result: tuple[bytes, int | None, list[int]] | None = None
        error: dict[str, Any] | None = None
        for _attempt in range(2):
            try:
                result = await self._sign_once(kinfo, body, excluded)
                break
            except SessionFailed as e:
                for party, reason in e.blame:
                    blamed.append(self._blame(party, reason))
                    excluded.add(party)
                error = problem_doc(
                    "signing-failed", "Signing failed", e.detail, culprits=sorted(excluded)
                )
            except Exception as e:
                log.exception("signing crashed", extra={"request_id": request_id})
                error = problem_doc("signing-failed", "Signing failed", type(e).__name__, 500)
                break
        jobs = self._finalize_jobs(request_id, result, error, blamed, slot, answer, kinfo.id)
        try:
            await self.db.write(jobs[0])
        except Exception as e:
            self._withheld(request_id, e, slot)
            await self.db.write(jobs[1])

    def finalize(
        self,
        request_id: str,
        result: tuple[bytes, int | None, list[int]] | None,
        error: dict[str, Any] | None,
        blamed: list[dict[str, Any]],
    ) -> None:
        """Store the outcome with its audit entry in one transaction. If that fails, the
        signature is not released: the request is marked failed without it. (Synchronous
        form of what :meth:`run_sign` does through the group writer.)"""
        jobs = self._finalize_jobs(request_id, result, error, blamed, None, None)
        try:
            with self.db.engine.begin() as conn:
                jobs[0](conn)
        except Exception as e:
            self._withheld(request_id, e, None)
            with self.db.engine.begin() as conn:
                jobs[1](conn)

    @staticmethod
    def _withheld(request_id: str, e: Exception, slot: idempotency.Slot | None) -> None:
        if slot is not None:
            slot.response = None
        log.error(
            "audit write failed; signature withheld",
            extra={"request_id": request_id, "err": type(e).__name__},
        )

    def _finalize_jobs(
        self,
        request_id: str,
        result: tuple[bytes, int | None, list[int]] | None,
        error: dict[str, Any] | None,
        blamed: list[dict[str, Any]],
        slot: idempotency.Slot | None,
        answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None,
        key_id: str | None = None,
    ) -> tuple[Callable[[Connection], None], Callable[[Connection], None]]:
        """Two database jobs: the outcome with its audit entry (and, while the POST still
        waits, its idempotent answer, built by ``answer(changed columns)``); and the
        fallback that marks the request failed without the signature."""
        now = utcnow()
        if result is not None:
            sig, recid, signers = result
            changes: dict[str, Any] = {
                "status": "signed",
                "signature": sig.hex(),
                "recovery_id": recid,
                "signers": signers,
                "error": None,
            }
        else:
            changes = {"status": "failed", "error": error}
        changes.update(updated_at=now, blamed=blamed)
        withheld = {
            "status": "failed",
            "signature": None,
            "recovery_id": None,
            "updated_at": now,
            "blamed": blamed,
            "error": problem_doc(
                "audit-failed", "Audit write failed", "the signature was withheld", 500
            ),
        }

        def outcome(conn: Connection) -> None:
            kid = (
                key_id
                if key_id is not None
                else conn.execute(
                    select(SignRequest.key_id).where(SignRequest.id == request_id)
                ).scalar_one()
            )
            conn.execute(_UPDATE_REQUEST, {"_rid": request_id, **changes})
            if result is not None:
                audit.append(
                    conn,
                    "coordinator",
                    "sign.signed",
                    request_id,
                    {
                        "key_id": kid,
                        "signature": changes["signature"],
                        "signers": changes["signers"],
                        "blamed": blamed,
                    },
                )
            else:
                audit.append(
                    conn,
                    "coordinator",
                    "sign.failed",
                    request_id,
                    {"error": error, "blamed": blamed},
                )
            if slot is not None and answer is not None and slot.own():
                idempotency.store_answer(conn, slot, *answer(changes))

        def fallback(conn: Connection) -> None:
            conn.execute(_UPDATE_REQUEST, {"_rid": request_id, **withheld})
            if slot is not None and answer is not None and slot.own():
                idempotency.store_answer(conn, slot, *answer(withheld))

        return outcome, fallback

    def _pick(self, node_ids: list[str], t: int, excluded: set[int]) -> list[NodeInfo]:
        eligible = [
            self.nodes[n]
            for n in node_ids
            if n in self.nodes and self.nodes[n].eligible and self.nodes[n].party_id not in excluded
        ]
        if len(eligible) < t:
            down = [n for n in node_ids if n not in self.nodes or not self.nodes[n].eligible]
            raise SessionFailed(
                f"only {len(eligible)} healthy nodes for threshold {t} (unavailable: {down})", []
            )
        random.shuffle(eligible)
        return sorted(eligible[:t], key=lambda n: n.party_id)

    def _failure_blame(
        self, p: int, r: Any, *, timeout_marks_down: bool
    ) -> list[tuple[int, str]] | None:
        """The blame for party ``p``'s fan-out result ``r``, or None when ``r`` is an answer.

        A failed call blames the culprits it names (and marks the node down when the
        transport failed); a timeout blames ``p``; any other exception is re-raised."""
        if isinstance(r, NodeFailure):
            if r.transport:
                self.mark_down(p, r.detail)
            return [(c, f"{r.reason}: {r.detail}") for c in r.culprits]
        if isinstance(r, TimeoutError):
            if timeout_marks_down:
                self.mark_down(p, "timeout")
            return [(p, "timeout")]
        if isinstance(r, BaseException):
            raise r
        return None

    async def _fan_sign(
        self, calls: dict[int, tuple[NodeInfo, str, dict[str, Any]]], field: str
    ) -> dict[int, bytes]:
        """One sign item per node, each through that node's micro-batching sender
        (:meth:`NodeCaller.sign_item`); a failed item blames as a failed call did."""
        res = await asyncio.gather(
            *(
                asyncio.wait_for(self.caller.sign_item(n, path, b), self.settings.round_timeout)
                for n, path, b in calls.values()
            ),
            return_exceptions=True,
        )
        out: dict[int, bytes] = {}
        blame: list[tuple[int, str]] = []
        for p, r in zip(calls, res, strict=True):
            failed = self._failure_blame(p, r, timeout_marks_down=True)
            if failed is not None:
                blame += failed
            else:
                answer: dict[str, Any] = r  # type: ignore[assignment]  # not an exception here
                try:
                    out[p] = bytes.fromhex(answer[field])
                except (KeyError, TypeError, ValueError):
                    blame.append((p, f"garbage: no hex {field!r}"))
        if blame:
            raise SessionFailed("signing round failed", blame)
        return out

    async def _sign_once(
        self, kinfo: tuple[Any, ...], body: dict[str, Any], excluded: set[int]
    ) -> tuple[bytes, int | None, list[int]]:
        key_id, scheme, t, node_ids, pk, vshares = kinfo
        msg = crypto.message_to_sign(scheme, body)
        if scheme in FROST_SCHEMES:
            nodes = self._pick(node_ids, t, excluded)
            commitments: dict[int, tuple[str, Any]] = {}
            for n in nodes:
                q = self.frost_pool.get((key_id, n.party_id))
                if not q:
                    try:
                        await self._fetch_commitments(key_id, n, self.settings.frost_batch)
                    except NodeFailure as e:
                        if e.transport:
                            self.mark_down(n.party_id, e.detail)
                        raise SessionFailed(
                            "commitment fetch failed",
                            [(c, f"{e.reason}: {e.detail}") for c in e.culprits],
                        ) from None
                    q = self.frost_pool[(key_id, n.party_id)]
                commitments[n.party_id] = q.popleft()
            try:
                package = crypto.frost_signing_package(
                    scheme, msg, {p: c for p, (_, c) in commitments.items()}
                )
            except crypto.Blame as e:
                raise SessionFailed(
                    str(e), [(c, "garbage commitments") for c in e.culprits]
                ) from None
            package_hex = package.to_bytes().hex()
            calls = {
                n.party_id: (
                    n,
                    "/v1/frost/sign-batch",
                    {
                        "key_id": key_id,
                        "nonce_id": commitments[n.party_id][0],
                        "request": body,
                        "signing_package": package_hex,
                    },
                )
                for n in nodes
            }
            shares = await self._fan_sign(calls, "signature_share")
            try:
                # in a worker thread: the curve arithmetic (libsodium / libsecp256k1) drops
                # the GIL, so it runs beside the event loop instead of stalling it
                sig = await asyncio.to_thread(
                    crypto.frost_aggregate, scheme, pk, vshares, t, package, shares, msg
                )
            except crypto.Blame as e:
                raise SessionFailed(
                    str(e), [(c, "invalid signature share") for c in e.culprits]
                ) from None
            return sig, None, sorted(shares)
        # ECDSA (DKLs23): a presignature whose participants are all healthy, then one round.
        q2 = self.presig_pool.setdefault(key_id, deque())
        chosen: tuple[str, tuple[int, ...], str] | None = None
        for _ in range(len(q2)):
            item = q2.popleft()
            if all(
                p not in excluded and (nd := self.node_by_party(p)) is not None and nd.eligible
                for p in item[1]
            ):
                chosen = item
                break
            q2.append(item)  # keep it for when its nodes are back
        if chosen is None:
            chosen = await self._presign(key_id, self._pick(node_ids, t, excluded))
        presig_id, parties, r_point = chosen
        nodes2 = [nd for p in parties if (nd := self.node_by_party(p)) is not None]
        calls = {
            n.party_id: (
                n,
                "/v1/ecdsa/sign-batch",
                {"key_id": key_id, "presignature_id": presig_id, "request": body},
            )
            for n in nodes2
        }
        partials = await self._fan_sign(calls, "partial")
        try:
            sig, recid = await asyncio.to_thread(
                crypto.ecdsa_combine, pk, presig_id, parties, r_point, partials, msg
            )
        except crypto.Blame as e:
            raise SessionFailed(str(e), [(c, "invalid partial") for c in e.culprits]) from None
        return sig, recid, sorted(partials)
