"""Issue 14's chaos acceptance: one of two coordinator processes on one PostgreSQL, or one
of the three signer nodes, is SIGKILLed during a bounded load, at a point drawn at
collection.

The load: requests of every scheme, each with its own Idempotency-Key, sent alternately to
both coordinators (directly, not through HAProxy: the client itself retries on the other
coordinator, with the same key and body, where its connection broke). The victim is
frozen (SIGSTOP) at the drawn point until it holds at least one request in flight, those
requests are read from the database, and it is SIGKILLed: nothing it held can finish
there. Afterwards:

- every request the coordinators accepted is ``signed`` with one stored signature, which
  pynacl or coincurve verifies under the key's public key, and which is the signature its
  client got; or ``failed`` with its problem (none is left ``signing``);
- the requests the victim held finish on the survivor **without the client resubmitting**:
  claimed again from the queue after their lease expired (``claims`` >= 2, claimed by the
  survivor), and their clients' retries with the same key get the stored answer;
- one request per Idempotency-Key;
- no nonce or presignature was released twice: every node's release log names each item
  once;
- the audit chain verifies, and every node co-signs a checkpoint at its head, which it
  does only when the chain holds every release it made (the dead coordinator's included:
  the fence put its signer sets in the row before they were asked).

A **node** kill (2-of-3 keys, both coordinators serving): the node is frozen at the
drawn point until a request whose newest fenced signer set (``attempted``, written before
the sign items leave) holds it is in flight; the unclaimed pool items of its boot are
read from the database while it is frozen; it is SIGKILLed and started again after a
drawn delay. Besides every check above:

- each request that was in flight with it is signed by a set without it (retried with
  another set), or by a set with it only where its release log holds its share for that
  request, or failed with a problem naming it;
- it comes back with a new boot id and new pools: none of its old boot's items is in its
  release log (they lived only in the killed process's memory) and the shared pools hold
  none of them any more; no item is released twice by any node, the restarted one's log
  (which survives the kill: it is durable before a share leaves) included.

The default forms (~40 s each with the topology's start) kill once; the long forms, behind
the ``slow`` marker (short with ``CUSTODY_SLOW_SHORT=1``), kill each coordinator in turn,
or nodes and coordinators in turn, under a longer load.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import coincurve
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl.signing import VerifyKey
from sqlalchemy import Engine, create_engine, select

from api.db import Node, PoolCommitment, PoolPresignature, SignRequest
from custody.nodeauth import SIGNATURE_HEADER, sign_headers
from simulations.multi import Multi
from tests.e2e.conftest import collection_rng, token_sign

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CONCURRENCY = 8
TERMINAL = ("signed", "failed", "rejected", "expired")


def slow_short() -> bool:
    return os.environ.get("CUSTODY_SLOW_SHORT") == "1"


@dataclass
class Outcome:
    index: int
    scheme: str
    message: bytes
    idem: str
    status: str = ""
    request_id: str | None = None
    signature: str | None = None
    recovery_id: int | None = None
    problem: dict[str, Any] | None = None
    broken: int = 0  # connections that broke under this request (then retried elsewhere)
    in_flight_answers: int = 0  # 409 "still running" answers to its retries


@dataclass
class Load:
    """The bounded load and the coordinators it may use (``dead``: killed ones)."""

    multi: Multi
    token: str
    keys: dict[str, dict[str, Any]]
    dead: set[int] = field(default_factory=set)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, k: int) -> str:
        return self.multi.coordinator_url(k)

    def live(self, prefer: int) -> int:
        with self.lock:
            if prefer not in self.dead:
                return prefer
            others = [k for k in (1, 2) if k not in self.dead]
        assert others, "every coordinator is dead"
        return others[0]

    def run(self, i: int) -> Outcome:
        scheme = SCHEMES[i % len(SCHEMES)]
        raw = f"multi {i} {uuid.uuid4()}".encode()
        msg = hashlib.sha256(raw).digest() if scheme == "ecdsa-secp256k1" else raw
        out = Outcome(i, scheme, msg, f"chaos-{i}-{uuid.uuid4().hex[:8]}")
        body = {"key_id": self.keys[scheme]["id"], "kind": "raw", "message": msg.hex()}
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": out.idem}
        target = 1 + i % 2  # alternately to both coordinators
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                k = self.live(target)
                try:
                    r = http.post(self.url(k) + "/v1/sign-requests", json=body, headers=headers)
                except httpx.TransportError:
                    out.broken += 1  # the same key and body on the other coordinator
                    target = 2 if k == 1 else 1
                    time.sleep(0.1)
                    continue
                doc = r.json()
                if r.status_code == 409 and str(doc.get("type", "")).endswith("in-flight"):
                    out.in_flight_answers += 1  # accepted before the break: it finishes
                    time.sleep(0.3)
                    continue
                if r.status_code == 202:
                    doc = self._poll(http, doc["id"], headers, deadline)
                    if doc is None:
                        continue  # the coordinator polled died: ask again with the key
                self._record(out, r.status_code, doc)
                break
            else:
                out.status = "client-timeout"
        with self.lock:
            self.done += 1
        return out

    def _poll(
        self, http: httpx.Client, rid: str, headers: dict[str, str], deadline: float
    ) -> dict[str, Any] | None:
        auth = {"Authorization": headers["Authorization"]}
        while time.monotonic() < deadline:
            k = self.live(1)
            try:
                r = http.get(f"{self.url(k)}/v1/sign-requests/{rid}", headers=auth)
            except httpx.TransportError:
                return None
            doc: dict[str, Any] = r.json()
            if doc.get("status") in TERMINAL:
                return doc
            time.sleep(0.2)
        return None

    @staticmethod
    def _record(out: Outcome, status: int, doc: dict[str, Any]) -> None:
        sr = doc.get("sign_request", doc) if status >= 400 else doc
        out.request_id = sr.get("id")
        out.status = str(sr.get("status") or f"http-{status}")
        if out.status == "signed":
            out.signature, out.recovery_id = sr["signature"], sr.get("recovery_id")
        else:
            out.problem = {k: doc.get(k) for k in ("type", "title", "detail", "status")}


def verify_independently(scheme: str, public_key: str, msg: bytes, sig_hex: str) -> None:
    """pynacl for Ed25519, coincurve (libsecp256k1) for BIP-340 and ECDSA (low-s)."""
    pk, sig = bytes.fromhex(public_key), bytes.fromhex(sig_hex)
    if scheme == "ed25519":
        VerifyKey(pk).verify(msg, sig)  # raises BadSignatureError
    elif scheme == "bip340":
        assert coincurve.PublicKeyXOnly(pk).verify(sig, msg)
    else:
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        assert s <= SECP256K1_N // 2
        assert coincurve.PublicKey(pk).verify(encode_dss_signature(r, s), msg, hasher=None)


def _creds(m: Multi) -> dict[str, str]:
    creds: dict[str, str] = json.loads((m.data_dir / "multi.json").read_text())["credentials"]
    return creds


@pytest.fixture(scope="module")
def keys(multi: Multi) -> dict[str, dict[str, Any]]:
    """One 2-of-3 key per scheme (DKG through coordinator 1)."""
    admin = {"Authorization": f"Bearer {_creds(multi)['admin']}"}
    out = {}
    with httpx.Client(base_url=multi.coordinator_url(1), timeout=60, headers=admin) as c:
        for scheme in SCHEMES:
            r = c.post("/v1/keys", json={"scheme": scheme, "threshold": 2},
                       headers={"Idempotency-Key": f"chaos-key-{scheme}"})  # fmt: skip
            assert r.status_code in (200, 201, 202), r.text
            doc = r.json()
            deadline = time.monotonic() + 120
            while doc["status"] != "active":
                assert doc["status"] != "failed" and time.monotonic() < deadline, doc
                time.sleep(0.2)
                doc = c.get(f"/v1/keys/{doc['id']}").json()
            out[scheme] = doc
    return out


@pytest.fixture(scope="module")
def engine(multi: Multi) -> Iterator[Engine]:
    e = create_engine(multi.database_url)
    yield e
    e.dispose()


def _pid(m: Multi, k: int) -> int:
    return m.pids()[f"coordinator-{k}"]


def _held_by(engine: Engine, pid: int) -> list[str]:
    """The ``signing`` requests whose lease a coordinator of this pid holds."""
    with engine.connect() as c:
        rows = c.execute(
            select(SignRequest.id).where(
                SignRequest.status == "signing", SignRequest.claimed_by.like(f"%:{pid}:%")
            )
        ).all()
    return [r.id for r in rows]


def kill_holding(m: Multi, engine: Engine, load: Load, k: int, after: int) -> list[str]:
    """Once ``after`` requests are done: freeze coordinator ``k`` until it holds a request
    in flight, read which, SIGKILL it. The requests it held."""
    while load.done < after:
        time.sleep(0.02)
    pid = _pid(m, k)
    held: list[str] = []
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)  # frozen: nothing it holds can be stored now
        held = _held_by(engine, pid)
        if held:
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    with load.lock:
        load.dead.add(k)
    m.stop_coordinator(k, signal.SIGKILL)
    return held


# -- signer nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """One point of a chaos plan: SIGKILL ``what`` number ``which`` once ``after`` requests
    are done; a node is started again ``down`` seconds later (a coordinator stays dead
    until the next coordinator kill starts it again, as :func:`run_chaos` always did)."""

    what: str  # "coordinator" or "node"
    which: int
    after: int
    down: float = 0.0


@dataclass
class NodeKill:
    """What a node kill left to check: the requests whose newest signer set held the node
    when it died, its boot id then and after, and the pool items of that boot the
    coordinators' database still held (unclaimed: never handed out, so never released)."""

    node: int
    party: int
    old_boot: str
    held: list[str]
    old_items: set[str]
    new_boot: str = ""


def _party_of(engine: Engine, node: int) -> int:
    with engine.connect() as c:
        party = c.scalar(select(Node.party_id).where(Node.id == f"node-{node}"))
    assert party is not None, f"node-{node} is not enrolled"
    return int(party)


def _in_flight_with(engine: Engine, party: int) -> list[str]:
    """The ``signing`` requests whose newest fenced signer set holds ``party``: their sign
    items were sent to it, or are about to be (``attempted`` is written before they leave,
    api/coordinator/queue.py)."""
    with engine.connect() as c:
        rows = c.execute(
            select(SignRequest.id, SignRequest.attempted).where(SignRequest.status == "signing")
        ).all()
    return [r.id for r in rows if r.attempted and party in r.attempted[-1]]


def _pool_items_of(engine: Engine, party: int, boot: str) -> set[str]:
    """The nonce and presignature ids of ``party``'s boot ``boot`` in the shared pools."""
    with engine.connect() as c:
        nonces = c.scalars(
            select(PoolCommitment.nonce_id).where(
                PoolCommitment.party_id == party, PoolCommitment.boot_id == boot
            )
        ).all()
        presigs = c.execute(
            select(PoolPresignature.presignature_id, PoolPresignature.parties,
                   PoolPresignature.boot_ids)
        ).all()  # fmt: skip
    out = set(nonces)
    for r in presigs:
        made = dict(zip(r.parties, r.boot_ids, strict=False))
        if made.get(party) == boot:
            out.add(r.presignature_id)
    return out


def kill_node_holding(m: Multi, engine: Engine, load: Load, i: int, after: int) -> NodeKill:
    """Once ``after`` requests are done: freeze node ``i`` (SIGSTOP) until a request whose
    signer set holds it is in flight, read which and which of its pool items the database
    holds (nothing of it changes while it is frozen), SIGKILL it."""
    while load.done < after:
        time.sleep(0.02)
    party = _party_of(engine, i)
    old_boot = str(m.node_health(i)["boot_id"])
    pid = m.pids()[f"node-{i}"]
    held: list[str] = []
    for _ in range(300):
        os.kill(pid, signal.SIGSTOP)
        held = _in_flight_with(engine, party)
        if held:
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    old_items = _pool_items_of(engine, party, old_boot)
    m.stop_node(i, signal.SIGKILL)  # a stopped process dies of SIGKILL all the same
    return NodeKill(i, party, old_boot, held, old_items)


def _restart_dead_nodes(m: Multi) -> None:
    """Every node a test killed (or froze) running again: a module leaves none dead."""
    if m.cluster is None:
        return
    for i in range(1, m.nodes + 1):
        proc = m.cluster.procs.get(f"node-{i}")
        if proc is not None and proc.alive and proc.popen is not None:
            os.kill(proc.popen.pid, signal.SIGCONT)  # a no-op unless frozen
        else:
            m.start_node(i)


@dataclass
class Summary:
    """What one chaos run showed (printed; docs/SECURITY.md quotes a run's figures)."""

    total: int = 0
    signed: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # problem type: count
    broken: int = 0  # client connections that broke (retried on the other coordinator)
    retried_sets: int = 0  # requests asked of more than one signer set
    resumed: int = 0  # requests claimed more than once (a dead holder's lease expired)
    node_held: int = 0  # requests in flight with a node when it was SIGKILLed
    coordinator_held: int = 0

    def line(self) -> str:
        return json.dumps({"chaos": self.__dict__}, sort_keys=True)


def run_chaos(
    m: Multi, engine: Engine, keys: dict[str, dict[str, Any]], total: int, kills: list[int]
) -> Summary:
    """``total`` requests; coordinator 2, then (restarted 2 first) 1, SIGKILLed after
    ``kills[j]`` requests are done; then every check of the module docstring."""
    plan = [Kill("coordinator", 2 if j % 2 == 0 else 1, after) for j, after in enumerate(kills)]
    return run_plan(m, engine, keys, total, plan)


def run_plan(
    m: Multi, engine: Engine, keys: dict[str, dict[str, Any]], total: int, plan: list[Kill]
) -> Summary:
    """``total`` requests under the kills of ``plan`` (in its order); then every check of
    the module docstring, and for each node kill: the requests it was part of were retried
    with another signer set or failed naming it, and its restart's pools are new (no item
    of its old boot is ever released)."""
    load = Load(m, _creds(m)["requester"], keys)
    with engine.connect() as c:
        before = set(c.scalars(select(SignRequest.id)).all())
    held: list[str] = []
    node_kills: list[NodeKill] = []
    coordinator_kills = 0
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = [pool.submit(load.run, i) for i in range(total)]
            for step in plan:
                if step.what == "node":
                    nk = kill_node_holding(m, engine, load, step.which, step.after)
                    node_kills.append(nk)
                    time.sleep(step.down)
                    nk.new_boot = m.start_node(step.which)
                    continue
                victim = step.which
                if coordinator_kills > 0 and (3 - victim) in load.dead:
                    # bring the last victim back first: one coordinator always serves
                    m.start_coordinator(3 - victim)
                    with load.lock:
                        load.dead.discard(3 - victim)
                held += kill_holding(m, engine, load, victim, step.after)
                coordinator_kills += 1
            outcomes = [f.result() for f in futures]
    finally:
        _restart_dead_nodes(m)
    summary = Summary(total=total, coordinator_held=len(held))
    summary.node_held = sum(len(nk.held) for nk in node_kills)
    summary.broken = sum(o.broken for o in outcomes)
    # the clients' view: signed (verified independently) or failed with a reason
    problems = [o for o in outcomes if o.status not in ("signed", "failed")]
    assert problems == [], problems
    for o in outcomes:
        if o.status == "signed":
            assert o.signature is not None
            verify_independently(o.scheme, keys[o.scheme]["public_key"], o.message, o.signature)
        else:
            assert o.problem and o.problem.get("type") and o.problem.get("detail"), o
            kind = str(o.problem["type"]).rsplit("/", 1)[-1]
            summary.failed[kind] = summary.failed.get(kind, 0) + 1
    signed = [o for o in outcomes if o.status == "signed"]
    summary.signed = len(signed)
    assert len(signed) >= total - len(plan) * CONCURRENCY, [o for o in outcomes if not o.signature]
    if coordinator_kills:
        assert held, "the victim never held a request in flight"
    for nk in node_kills:
        assert nk.held, f"node-{nk.node} was never part of a request in flight when killed"
        assert nk.new_boot and nk.new_boot != nk.old_boot, nk
    # the database's view: one request per key, none left signing, one signature each
    with engine.connect() as c:
        rows = {
            r.id: r for r in c.execute(select(SignRequest.__table__)).all() if r.id not in before
        }
    assert len(rows) == total, (len(rows), total)
    assert {o.request_id for o in outcomes} == set(rows)
    assert [r.id for r in rows.values() if r.status not in ("signed", "failed")] == []
    by_id = {o.request_id: o for o in outcomes}
    for rid, r in rows.items():
        o = by_id[rid]
        assert r.status == o.status, (rid, r.status, o)
        if r.status == "signed":
            assert r.signature == o.signature  # the one stored signature is what it got
            verify_independently(o.scheme, keys[o.scheme]["public_key"], o.message, r.signature)
        else:
            assert r.error and r.error.get("detail"), r
    summary.retried_sets = sum(1 for r in rows.values() if len(r.attempted or []) > 1)
    summary.resumed = sum(1 for r in rows.values() if r.claims >= 2)
    # the requests the victims held finished without the client resubmitting
    survivor_pids = {_pid(m, k) for k in (1, 2) if k not in load.dead}
    for rid in held:
        r = rows[rid]
        assert r.status in ("signed", "failed") and r.claims >= 2, (rid, r.status, r.claims)
        assert any(f":{p}:" in (r.claimed_by or "") for p in survivor_pids) or (
            coordinator_kills > 1
        ), r
    resumed = [by_id[rid] for rid in held]
    assert all(o.status == rows[o.request_id].status for o in resumed)
    releases = _no_item_released_twice(m)
    for nk in node_kills:
        _lost_node_was_routed_around(nk, rows, releases[nk.node])
        _old_boot_never_used(engine, nk, [e["item_id"] for e in releases[nk.node]])
    _audit_chain_holds_every_release(m)
    print(summary.line())  # noqa: T201 - the figures docs/SECURITY.md quotes (pytest -s)
    return summary


def _lost_node_was_routed_around(
    nk: NodeKill, rows: dict[str, Any], released: list[dict[str, Any]]
) -> None:
    """A request whose signer set held node ``nk.node`` when it was killed: signed by a set
    without it (retried with another set), or by a set with it only where the node's
    release log holds its share for that request (it answered before it was frozen, or was
    asked again after its restart); or failed with a problem naming the node."""
    shared = {str(e.get("request_id")) for e in released}
    for rid in nk.held:
        r = rows[rid]
        sets = [tuple(s) for s in (r.attempted or [])]
        if r.status == "signed":
            final = tuple(sorted(r.signers or []))
            assert nk.party not in final or rid in shared, (rid, final, sets, r.blamed)
        else:
            said = json.dumps([r.error, r.blamed])
            assert f"node-{nk.node}" in said or f'"party_id": {nk.party}' in said, (rid, said)


def _old_boot_never_used(engine: Engine, nk: NodeKill, released: list[str]) -> None:
    """The restarted node's pools are new: no item of its old boot that the database held
    when it died is in its release log (the old boot's, nor the new one's), and the shared
    pools hold nothing of the old boot any more (the coordinators forgot it)."""
    used = nk.old_items & set(released)
    assert used == set(), f"node-{nk.node} released items of its killed boot: {sorted(used)}"
    left = _pool_items_of(engine, nk.party, nk.old_boot)
    assert left == set(), f"the pools still hold {len(left)} items of node-{nk.node}'s old boot"


def _signed_get(m: Multi, node: int, target: str) -> dict[str, Any]:
    """``GET target`` on a node, signed by the coordinators' key in their PKCS#11 token (a
    subprocess: SoftHSM2 binds a process to one token directory; tests/e2e/conftest.py
    ``token_sign``), over mutual TLS."""
    assert m.cluster is not None
    seen: list[bytes] = []
    headers = sign_headers(
        lambda b: seen.append(b) or bytes(64),  # type: ignore[func-returns-value]
        "GET",
        target,
        b"",
        recipient=f"node-{node}",
    )
    (sig,) = token_sign(m.data_dir / "coordinator", seen)
    with m.cluster.node_http() as http:
        headers[SIGNATURE_HEADER] = sig.hex()
        r = http.get(m.cluster.node_url(node) + target, headers=headers)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _no_item_released_twice(m: Multi) -> dict[int, list[dict[str, Any]]]:
    """Every node's release log (its own hash-chained record of each share it released,
    ``GET /v1/releases``): each nonce or presignature id once. Each node's entries."""
    out: dict[int, list[dict[str, Any]]] = {}
    for i in range(1, m.nodes + 1):
        entries: list[dict[str, Any]] = []
        after = 0
        while True:
            page = _signed_get(m, i, f"/v1/releases?after={after}&limit=1000")
            entries += page["entries"]
            if len(page["entries"]) < 1000:
                break
            after = page["entries"][-1]["seq"]
        items = [e["item_id"] for e in entries]
        assert items, f"node-{i} released nothing"
        twice = {x for x in items if items.count(x) > 1}
        assert twice == set(), f"node-{i} released {sorted(twice)} more than once"
        out[i] = entries
    return out


def _audit_chain_holds_every_release(m: Multi) -> None:
    """The chain verifies, and all three nodes co-sign a checkpoint at its head."""
    creds = _creds(m)
    k = 1 if m.cluster and m.cluster.procs["coordinator"].alive else 2
    with httpx.Client(base_url=m.coordinator_url(k), timeout=60) as c:
        r = c.post(
            "/v1/audit/checkpoints",
            headers={"Authorization": f"Bearer {creds['admin']}",
                     "Idempotency-Key": f"chaos-cp-{uuid.uuid4()}"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert sorted(r.json()["signatures"]) == [f"node-{i}" for i in range(1, m.nodes + 1)]
        v = c.get("/v1/audit/verify", headers={"Authorization": f"Bearer {creds['auditor']}"})
        assert v.status_code == 200 and v.json()["ok"] is True, v.text


KILL_AFTER = collection_rng("multi-kill").randint(8, 40)
_NODE_RNG = collection_rng("multi-node-kill")
#: node, after how many done requests, seconds dead before its restart
NODE_KILL = (_NODE_RNG.randint(1, 3), _NODE_RNG.randint(8, 40), round(_NODE_RNG.uniform(0.5, 6), 1))


@pytest.mark.parametrize("after", [KILL_AFTER])
def test_a_coordinator_sigkilled_under_load_loses_nothing(
    multi: Multi, keys: dict[str, dict[str, Any]], engine: Engine, after: int
) -> None:
    run_chaos(multi, engine, keys, 60, [after])


@pytest.mark.parametrize(("node", "after", "down"), [NODE_KILL])
def test_a_node_sigkilled_under_load_is_routed_around_and_comes_back_with_new_pools(
    multi: Multi, keys: dict[str, dict[str, Any]], engine: Engine, node: int, after: int,
    down: float,
) -> None:  # fmt: skip
    """Node ``node`` frozen once ``after`` requests are done until a request whose signer
    set holds it is in flight, SIGKILLed, started again ``down`` seconds later; both
    coordinators serve throughout. Every postcondition of the module, and the node's."""
    if multi.cluster is not None and not multi.cluster.procs["coordinator-2"].alive:
        multi.start_coordinator(2)  # killed by the coordinator form
    s = run_plan(multi, engine, keys, 60, [Kill("node", node, after, down)])
    assert s.node_held >= 1


@pytest.mark.slow
def test_each_coordinator_sigkilled_in_turn_under_a_longer_load(
    multi: Multi, keys: dict[str, dict[str, Any]], engine: Engine
) -> None:
    rng = collection_rng("multi-kill-long")
    total = 90 if slow_short() else 240
    kills = sorted(rng.sample(range(10, total - 20), 2 if slow_short() else 4))
    if multi.cluster is not None and not multi.cluster.procs["coordinator-2"].alive:
        multi.start_coordinator(2)  # killed by the default form
    run_chaos(multi, engine, keys, total, kills)


def test_a_coordinator_key_the_nodes_do_not_trust_is_refused_by_every_node(multi: Multi) -> None:
    """Each coordinator has its own identity key, sealed in its own token and pinned in
    governance's ``coordinators`` list (docs/SECURITY.md, "Coordinator identities"): a
    request signed by any Ed25519 key not in that list, as a coordinator the nodes were
    never told of would sign it, is refused by each node before anything runs (401, the
    node's own signature check), while the same request signed by a pinned coordinator's
    key (coordinator 1's, in its PKCS#11 token) is answered."""
    from nacl.signing import SigningKey  # noqa: PLC0415

    assert multi.cluster is not None
    stranger = SigningKey.generate()
    with multi.cluster.node_http() as http:
        for i in range(1, multi.nodes + 1):
            target = "/v1/releases?after=0&limit=1"
            headers = sign_headers(stranger, "GET", target, b"", recipient=f"node-{i}")
            r = http.get(multi.cluster.node_url(i) + target, headers=headers)
            assert r.status_code == 401, (i, r.status_code, r.text)
            assert _signed_get(multi, i, target)["node_id"] == f"node-{i}"  # the trusted key
