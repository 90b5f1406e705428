"""api.coordinator.queue: the durable job queue of sign requests (issue 14, item 2).

Claims, leases, renewals and the fence on a real database (SQLite, and a real PostgreSQL
from :mod:`tests.pg`, where two engines stand for two coordinators); the outcome's "first
stored wins" and the answer of a resumed request through the real app."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import select, update

from api import idempotency
from api.coordinator import SignResult
from api.coordinator import queue as q
from api.coordinator.outcomes import provisional_answer
from api.coordinator.queue import Claimed, JobQueue, LeaseLost
from api.db import AuditEntry, Database, IdempotencyRecord, Key, SignRequest, utcnow
from tests import pg
from tests.api.coordinator.inflight import in_flight
from tests.api.test_sign_requests import post_sr, stored_digest


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    url = pg.fresh_database("queue")
    yield url
    pg.drop_database(url)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    d.migrate()
    with d.session() as s:
        s.add(
            Key(id="key_q", scheme="ed25519", threshold=2, nodes=["node-1", "node-2"],
                status="active", public_key="00" * 32, verifying_shares={})
        )  # fmt: skip
    yield d
    d.close()


def _request(
    db: Database,
    rid: str,
    status: str = "signing",
    claimed_by: str | None = None,
    lease_in: float | None = None,
) -> None:
    now = utcnow()
    with db.session() as s:
        s.add(
            SignRequest(
                id=rid, key_id="key_q", kind="raw", body={"id": rid, "message": "11"},
                status=status, requested_by="cred_x", blamed=[], created_at=now,
                updated_at=now, claimed_by=claimed_by, claims=0 if claimed_by is None else 1,
                lease_until=None if lease_in is None else now + dt.timedelta(seconds=lease_in),
            )
        )  # fmt: skip


def _row(db: Database, rid: str) -> SignRequest:
    with db.session() as s:
        r = s.scalar(select(SignRequest).where(SignRequest.id == rid))
        assert r is not None
        return r


async def test_the_worker_claims_queued_requests_and_expired_leases_only(db: Database) -> None:
    _request(db, "sr_queued")  # approved: signing, nobody holds it
    _request(db, "sr_live", claimed_by="other", lease_in=60)  # another coordinator signs it
    _request(db, "sr_expired", claimed_by="dead", lease_in=-1)  # its coordinator died
    _request(db, "sr_parked", status="pending_approval")
    _request(db, "sr_done", status="signed", claimed_by="dead", lease_in=-1)
    me = JobQueue(db, "me", 30)
    got = await me.claim_due(10)
    assert sorted(c.id for c in got) == ["sr_expired", "sr_queued"]
    assert {c.id: c.claims for c in got} == {"sr_expired": 2, "sr_queued": 1}
    for rid in ("sr_expired", "sr_queued"):
        row = _row(db, rid)
        assert row.claimed_by == "me" and row.lease_until is not None
        assert row.lease_until > utcnow() + dt.timedelta(seconds=25)
    assert _row(db, "sr_live").claimed_by == "other"
    assert await me.claim_due(10) == []  # held now: nobody claims them again
    assert await JobQueue(db, "third", 30).claim_due(10) == []


async def test_the_worker_skips_what_it_signs_itself_and_honours_its_limit(db: Database) -> None:
    for i in range(5):
        _request(db, f"sr_{i}", claimed_by="dead", lease_in=-1)
    me = JobQueue(db, "me", 30)
    got = await me.claim_due(2, skip=["sr_0"])
    assert [c.id for c in got] == ["sr_1", "sr_2"]  # oldest first, sr_0 skipped


def test_two_coordinators_claiming_at_once_never_take_the_same_request(db_url: str) -> None:
    """Two databases (engines, connection pools) on one database, four claimers each
    racing over 120 queued requests: every request is claimed exactly once."""
    dbs = [Database(db_url), Database(db_url)]
    dbs[0].migrate()
    with dbs[0].session() as s:
        s.add(
            Key(id="key_q", scheme="ed25519", threshold=2, nodes=["node-1", "node-2"],
                status="active", public_key="00" * 32, verifying_shares={})
        )  # fmt: skip
    total = 120
    for i in range(total):
        _request(dbs[0], f"sr_{i:03d}")
    got: dict[str, list[str]] = {}
    lock = threading.Lock()
    gate = threading.Barrier(8)
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        qu = JobQueue(dbs[n % 2], f"coord-{n % 2}-w{n}", 30)

        async def main() -> None:
            gate.wait()
            while True:
                claimed = await qu.claim_due(3)
                if not claimed:
                    return
                with lock:
                    for c in claimed:
                        got.setdefault(c.id, []).append(qu.instance)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        assert sorted(got) == [f"sr_{i:03d}" for i in range(total)]
        assert {rid: len(who) for rid, who in got.items() if len(who) != 1} == {}
        with dbs[1].session() as s:
            rows = s.execute(select(SignRequest.id, SignRequest.claimed_by)).all()
        assert {r.id: r.claimed_by for r in rows} == {rid: who[0] for rid, who in got.items()}
    finally:
        for d in dbs:
            d.close()


async def test_renewal_extends_only_the_leases_this_instance_still_holds(db: Database) -> None:
    _request(db, "sr_mine", claimed_by="me", lease_in=1)
    _request(db, "sr_taken", claimed_by="other", lease_in=1)  # taken over meanwhile
    _request(db, "sr_finished", status="signed", claimed_by="me", lease_in=1)
    me = JobQueue(db, "me", 60)
    kept = await me.renew(["sr_mine", "sr_taken", "sr_finished"])
    assert kept == {"sr_mine"}
    assert _row(db, "sr_mine").lease_until > utcnow() + dt.timedelta(seconds=50)  # type: ignore[operator]
    assert _row(db, "sr_taken").lease_until < utcnow() + dt.timedelta(seconds=2)  # type: ignore[operator]


async def test_the_fence_refuses_a_coordinator_whose_lease_was_taken_over(db: Database) -> None:
    """A pauses past its lease; B claims the request. A's next signer set is refused
    before any item leaves (LeaseLost); B's is recorded after A's earlier one."""
    _request(db, "sr_f")
    a, b = JobQueue(db, "A", 30), JobQueue(db, "B", 30)
    (claim_a,) = await a.claim_due(1)
    await a.fence("sr_f", [(1, 2)])  # A asked {1, 2}: durable before its items left
    with db.session() as s:  # A's lease runs out (it stopped renewing)
        s.execute(
            update(SignRequest)
            .where(SignRequest.id == "sr_f")
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    (claim_b,) = await b.claim_due(1)
    assert claim_b.attempted == ((1, 2),)  # B knows what A may have released
    with pytest.raises(LeaseLost):
        await a.fence("sr_f", [(1, 2), (2, 3)])
    await b.fence("sr_f", [*claim_b.attempted, (1, 3)])
    assert _row(db, "sr_f").attempted == [[1, 2], [1, 3]]
    assert await a.claim("sr_f") is None  # and A cannot take it back while B holds it
    with db.session() as s:  # finished: nobody may fence any more
        s.execute(update(SignRequest).where(SignRequest.id == "sr_f").values(status="signed"))
    with pytest.raises(LeaseLost):
        await b.fence("sr_f", [(1, 3)])


async def test_fence_context_is_a_no_op_outside_a_held_request() -> None:
    assert q.FENCE.get() is None
    await q.fence([1, 2])  # no request held by this task: nothing to fence


# -- the outcome: first stored wins (api.coordinator.outcomes) -------------------------------


def _entries(api: Any, rid: str) -> list[tuple[str, list[int] | None]]:
    with api.app.state.db.session() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.subject == rid).order_by(AuditEntry.seq)
        ).all()
    return [(r.action, (r.data.get("signers") if isinstance(r.data, dict) else None)) for r in rows]


async def test_a_second_outcome_stores_nothing_but_its_attempts(api) -> None:  # noqa: ANN001
    """Two holders both finish (the first paused past its lease, the second resumed):
    the first stored signature stays the request's only one; the second's signer set is a
    ``sign.attempt`` entry (its nodes released), its signature never stored."""
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "two").json()["id"]
    in_flight(api, sid)
    digest = stored_digest(api, sid)
    outcomes = api.app.state.coordinator.outcomes
    msg = bytes.fromhex("11" * 32)
    first = sk.sign(msg).signature
    second = SigningKey.generate().sign(msg).signature  # any other bytes: must not be stored
    assert await outcomes.record(
        sid, kid, SignResult(first, None, [1, 2]), None, [], request_digest=digest
    )
    assert not await outcomes.record(
        sid, kid, SignResult(second, None, [1, 3]), None, [], request_digest=digest
    )
    assert not await outcomes.record(
        sid, kid, None, {"title": "late failure"}, [], request_digest=digest, attempted=[(2, 3)]
    )
    got = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("requester")).json()
    assert got["status"] == "signed" and got["signature"] == first.hex()
    VerifyKey(bytes(sk.verify_key)).verify(msg, bytes.fromhex(got["signature"]))  # pynacl
    signing = [e for e in _entries(api, sid) if e[0].startswith("sign.") and e[0] != "sign.request"]
    assert signing == [("sign.signed", [1, 2]), ("sign.attempt", [1, 3]), ("sign.attempt", [2, 3])]


async def test_sets_fenced_by_a_dead_holder_are_in_the_chain_with_the_outcome(api) -> None:  # noqa: ANN001
    """The first holder fenced {2, 3} and died before storing; the resumer signs with
    {1, 2}: the chain holds both, so the nodes' checkpoints find every release."""
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "dead").json()["id"]
    in_flight(api, sid)
    with api.app.state.db.session() as s:
        s.execute(update(SignRequest).where(SignRequest.id == sid).values(attempted=[[2, 3]]))
    sig = sk.sign(bytes.fromhex("11" * 32)).signature
    assert await api.app.state.coordinator.outcomes.record(
        sid, kid, SignResult(sig, None, [1, 2]), None, [], request_digest=stored_digest(api, sid)
    )
    signing = [e for e in _entries(api, sid) if e[0] in ("sign.signed", "sign.attempt")]
    assert sorted(signing) == [("sign.attempt", [2, 3]), ("sign.signed", [1, 2])]


class _FakeSigner:
    """Stands in for the nodes (no node processes in this test): fences its signer set as
    the real signers do, then signs with a test-only single key (pynacl)."""

    def __init__(self, sk: SigningKey, signers: tuple[int, ...] = (1, 2)) -> None:
        self.sk = sk
        self.signers = signers
        self.calls = 0

    async def sign(self, key: Any, body: Any, msg: bytes, excluded: set[int]) -> SignResult:
        self.calls += 1
        await q.fence(self.signers)
        return SignResult(self.sk.sign(msg).signature, None, list(self.signers))


async def test_a_resumed_request_is_signed_once_and_answers_the_clients_key(api) -> None:  # noqa: ANN001
    """A request whose POST's coordinator died (lease expired, Idempotency-Key in flight
    with its provisional answer) is claimed by another instance's worker and signed; the
    client's retry with the same key then gets the signed answer."""
    c = api.app.state.coordinator
    db: Database = api.app.state.db
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "resume").json()["id"]
    in_flight(api, sid)
    slot = idempotency.Slot("cred_client", "k-1")
    with db.engine.begin() as conn:  # what the dead POST left: its key in flight
        idempotency.claim(conn, slot.credential_id, slot.key, "fp")
        provisional_answer(conn, slot, sid)
        conn.execute(
            update(SignRequest)
            .where(SignRequest.id == sid)
            .values(claimed_by="dead:1:00", lease_until=utcnow() - dt.timedelta(seconds=1),
                    attempted=[[1, 3]], claims=1)
        )  # fmt: skip
    fake = _FakeSigner(sk)
    c.signers["ed25519"] = fake
    (claim,) = await c.queue.claim_due(5)
    assert isinstance(claim, Claimed) and claim.attempted == ((1, 3),)
    await c._run_claimed(claim)
    got = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("requester")).json()
    assert got["status"] == "signed" and fake.calls == 1
    sk.verify_key.verify(bytes.fromhex("11" * 32), bytes.fromhex(got["signature"]))
    row = _row(db, sid)
    assert row.claims == 2 and row.claimed_by == c.instance
    assert row.attempted == [[1, 3], [1, 2]]
    with db.session() as s:
        rec = s.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k-1"))
        assert rec is not None and rec.state == "done" and rec.status_code == 201
        assert rec.response is not None and rec.response["signature"] == got["signature"]
    signing = [e for e in _entries(api, sid) if e[0] in ("sign.signed", "sign.attempt")]
    assert sorted(signing) == [("sign.attempt", [1, 3]), ("sign.signed", [1, 2])]
    assert await c.queue.claim_due(5) == []  # signed: nothing left to claim


async def test_a_holder_that_lost_its_lease_sends_nothing_and_stores_nothing(api) -> None:  # noqa: ANN001
    c = api.app.state.coordinator
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "lost").json()["id"]
    in_flight(api, sid)
    with api.app.state.db.session() as s:  # another instance holds it now
        s.execute(
            update(SignRequest)
            .where(SignRequest.id == sid)
            .values(claimed_by="other:2:00", lease_until=utcnow() + dt.timedelta(seconds=60))
        )
    fake = _FakeSigner(sk)
    c.signers["ed25519"] = fake
    key = c.keys.get(kid)
    await c.run_sign(sid, _row(api.app.state.db, sid).body, key)
    assert fake.calls == 1  # it reached the fence, which refused: no item sent, no outcome
    row = _row(api.app.state.db, sid)
    assert (row.status, row.signature, row.claimed_by) == ("signing", None, "other:2:00")
    assert not [e for e in _entries(api, sid) if e[0] in ("sign.signed", "sign.attempt")]
    assert sid not in c.held
