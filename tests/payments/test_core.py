"""The payment core over a real database and the real book rail: authorization (limits,
sanctions, risk, funds reserved so two payments cannot overspend), the lifecycle with its
ledger postings, idempotent commands, settlement and reconciliation breaks.

Signatures come from a 2-of-3 FROST Ed25519 key run in this process (no whole key); the
book checks each with pynacl, and so does every test that looks at one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select, update

from payments import lifecycle, reconcile, replay, risk
from payments.book import BookRail, journal
from payments.core import CoreError, PaymentCore
from payments.db import accounts, make_engine
from payments.rails import CustodySignature, IntakeTransaction, RailError, Unsigned
from payments.sanctions import SanctionsList
from payments.service import book_destination_check
from payments.settings import PACKAGE_DATA
from tests.payments.threshold import ThresholdEd25519

SIGNER = ThresholdEd25519()


@pytest.fixture
def core(engine: Engine, tmp_path: Path) -> Iterator[PaymentCore]:
    book_engine = make_engine(f"sqlite:///{tmp_path / 'book.db'}")
    rail = BookRail(book_engine, "key_book", SIGNER.public_key)
    sanctions = SanctionsList.load(PACKAGE_DATA / "sanctions")
    checks = {"book": book_destination_check}
    yield PaymentCore(engine, sanctions, risk.Settings(), {"book": rail}, checks)
    book_engine.dispose()


def account(core: PaymentCore, owner: str, funds: int = 0, **limits: int) -> str:
    aid, _ = core.open_account(
        {"owner": owner, "asset": "USDC", "decimals": 2, **limits}, f"acct-{owner}"
    )
    if funds:
        core.deposit(aid, funds, f"fund-{owner}")
    return aid


def pay(core: PaymentCore, src: str, dst: str, amount: int, key: str) -> dict:
    pid, _ = core.create_payment(
        {"account_id": src, "amount": amount, "destination": dst, "rail": "book"}, key
    )
    return core.get(pid)


def drive(core: PaymentCore, pid: str) -> dict:
    """What the worker does, with the in-process threshold signer instead of custody."""
    rail = core.rails["book"]
    p = core.get(pid)
    unsigned = rail.build(core.instruction(p))
    core.step(pid, "SignPrepared", {"unsigned": unsigned.to_json()})
    msg = bytes.fromhex(unsigned.payload["message"][2:])
    sig = SIGNER.sign(msg)
    nacl.signing.VerifyKey(bytes.fromhex(SIGNER.public_key)).verify(msg, bytes.fromhex(sig))
    signed = rail.attach(unsigned, CustodySignature(sig), SIGNER.public_key)
    core.step(
        pid,
        "PaymentSigned",
        {"signature": sig, "signed_raw": signed.raw, "sign_request_id": "sr_local"},
    )
    ref = rail.broadcast(signed)
    assert rail.broadcast(signed) == ref  # idempotent: recorded once
    core.step(pid, "PaymentBroadcast", {"rail_ref": ref, "fee": 0})
    assert rail.status(ref).state == "confirmed"
    return core.step(pid, "PaymentConfirmed", {})


def bal(core: PaymentCore, aid: str) -> tuple[int, int]:
    with core.engine.connect() as c:
        r = c.execute(select(accounts).where(accounts.c.id == aid)).one()
    return r.balance, r.held


def check_invariants(core: PaymentCore) -> None:
    with core.engine.connect() as c:
        rows = c.execute(select(accounts)).all()
        assert sum(r.balance for r in rows) == 0
        assert all(r.allow_negative or r.balance - r.held >= 0 for r in rows)
        assert replay.differences(c) == []


def test_payment_flows_created_to_reconciled_with_balanced_postings(core: PaymentCore) -> None:
    a, b = account(core, "alice", 1000_00), account(core, "bob")
    p = pay(core, a, b, 250_00, "k1")
    assert p["status"] == "authorized" and p["hold"] == 250_00
    assert "first payment to destination" in p["reasons"][0]
    assert bal(core, a) == (1000_00, 250_00)
    p = drive(core, p["id"])
    assert p["status"] == "confirmed" and bal(core, a) == (750_00, 0)
    assert bal(core, "sys:settlement_clearing:USDC") == (250_00, 0)
    [sid] = core.settle()
    assert core.get(p["id"])["status"] == "settled" and bal(core, b) == (250_00, 0)
    out = reconcile.run(core)
    assert [x["kind"] for x in out["breaks"]] == ["missing"]  # settlement not confirmed yet
    core.confirm_settlement(sid, 250_00, "book-stmt-1")
    out = reconcile.run(core)
    assert out["breaks"] == [] and out["matched"] == 1 and out["reconciled"] == [p["id"]]
    assert core.get(p["id"])["status"] == "reconciled"
    check_invariants(core)


def test_same_idempotency_key_is_the_same_payment_and_other_body_is_refused(
    core: PaymentCore,
) -> None:
    a, b = account(core, "carol", 100_00), account(core, "dan")
    body = {"account_id": a, "amount": 10_00, "destination": b, "rail": "book"}
    p1, created1 = core.create_payment(body, "same")
    p2, created2 = core.create_payment(dict(body), "same")
    assert p1 == p2 and (created1, created2) == (True, False)
    assert bal(core, a) == (100_00, 10_00)  # reserved once
    with pytest.raises(CoreError) as info:
        core.create_payment({**body, "amount": 11_00}, "same")
    assert info.value.status == 422 and info.value.field == "Idempotency-Key"


def test_concurrent_payments_cannot_overspend(core: PaymentCore) -> None:
    a, b = account(core, "erin", 100_00), account(core, "fay")
    out: list[str] = []
    barrier = threading.Barrier(4)

    def go(n: int) -> None:
        barrier.wait()
        out.append(pay(core, a, b, 40_00, f"c{n}")["status"])

    ts = [threading.Thread(target=go, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(out) == ["authorized", "authorized", "declined", "declined"]
    assert bal(core, a) == (100_00, 80_00)
    check_invariants(core)


def test_declines_say_why(core: PaymentCore) -> None:
    a = account(core, "gus", 50_00, per_payment_limit=30_00)
    b = account(core, "hal")
    p = pay(core, a, b, 40_00, "d1")
    assert p["status"] == "declined"
    assert "amount 40 USDC is above the per-payment limit 30 USDC" in p["reasons"]
    assert pay(core, a, b, 20_00, "d2")["status"] == "authorized"
    assert pay(core, a, b, 20_00, "d2b")["status"] == "authorized"
    p = pay(core, a, b, 25_00, "d3")
    assert p["status"] == "declined"
    assert p["reasons"][-1].startswith(
        "insufficient funds: 25 USDC needed, 10 USDC available in account"
    )
    p = pay(core, a, "0x1111111111111111111111111111111111111111", 1_00, "d4")
    assert p["status"] == "declined"
    assert any(
        "on the sanctions list: TEST SANCTIONED EXCHANGE LTD (SDN entry 9001" in r
        for r in p["reasons"]
    )
    assert any("is not a customer account of this book" in r for r in p["reasons"])
    assert bal(core, a) == (50_00, 40_00)  # declines reserve nothing
    check_invariants(core)


def test_cancel_releases_the_hold_is_idempotent_and_refused_once_signed(core: PaymentCore) -> None:
    a, b = account(core, "ivy", 100_00), account(core, "jon")
    p = pay(core, a, b, 60_00, "x1")
    assert core.cancel(p["id"], "changed my mind")["status"] == "cancelled"
    assert core.cancel(p["id"], "again")["seq"] == core.get(p["id"])["seq"]  # no second event
    assert bal(core, a) == (100_00, 0)
    q = pay(core, a, b, 60_00, "x2")
    drive(core, q["id"])
    with pytest.raises(CoreError, match="is confirmed: it cannot become cancelled") as info:
        core.cancel(q["id"], "too late")
    assert info.value.status == 409
    with pytest.raises(lifecycle.IllegalTransition):
        core.step(q["id"], "PaymentAuthorized", {})
    assert (
        core.step(q["id"], "PaymentConfirmed", {})["seq"] == core.get(q["id"])["seq"]
    )  # idempotent
    check_invariants(core)


def test_failure_after_broadcast_returns_the_funds(core: PaymentCore) -> None:
    a, b = account(core, "kim", 100_00), account(core, "lee")
    p = pay(core, a, b, 30_00, "f1")
    rail = core.rails["book"]
    unsigned = rail.build(core.instruction(p))
    core.step(p["id"], "SignPrepared", {"unsigned": unsigned.to_json()})
    sig = SIGNER.sign(bytes.fromhex(unsigned.payload["message"][2:]))
    signed = rail.attach(unsigned, CustodySignature(sig), SIGNER.public_key)
    core.step(p["id"], "PaymentSigned", {"signature": sig, "signed_raw": signed.raw})
    core.step(p["id"], "PaymentBroadcast", {"rail_ref": "ref-lost", "fee": 0})
    assert bal(core, a) == (70_00, 0)
    core.step(p["id"], "PaymentFailed", {"reasons": ["rail lost it"]})
    assert bal(core, a) == (100_00, 0) and bal(core, "sys:chain_clearing:USDC") == (0, 0)
    check_invariants(core)


def test_book_refuses_a_bad_or_foreign_signature(core: PaymentCore) -> None:
    a, b = account(core, "mo", 10_00), account(core, "ned")
    p = pay(core, a, b, 1_00, "s1")
    rail = core.rails["book"]
    unsigned = rail.build(core.instruction(p))
    msg = bytes.fromhex(unsigned.payload["message"][2:])
    sig = bytearray(bytes.fromhex(SIGNER.sign(msg)))
    sig[5] ^= 1
    with pytest.raises(RailError, match="does not verify") as info:
        rail.attach(unsigned, CustodySignature(sig.hex()), SIGNER.public_key)
    assert info.value.field == "signature"
    other = ThresholdEd25519()  # a valid signature by another key
    good_other = other.sign(msg)
    signed = rail.attach(unsigned, CustodySignature(good_other), other.public_key)
    with pytest.raises(RailError, match="under the book key"):
        rail.broadcast(signed)  # the book checks against ITS key, whatever attach was told
    tampered = Unsigned(
        unsigned.kind, {"message": unsigned.payload["message"].replace("31", "39", 1)}
    )
    with pytest.raises(RailError):
        rail.attach(tampered, CustodySignature(SIGNER.sign(msg)), SIGNER.public_key)


def test_reconciliation_finds_every_kind_of_break(core: PaymentCore, tmp_path: Path) -> None:
    a, b = account(core, "ola", 1000_00), account(core, "pat")
    ps = [drive(core, pay(core, a, b, (i + 1) * 10_00, f"r{i}")["id"]) for i in range(4)]
    rail = core.rails["book"]
    assert reconcile.run(core)["breaks"] == []
    with rail.engine.begin() as c:
        rows = {r.payment_id: r for r in c.execute(select(journal))}
        # missing: the book lost payment 0's entry
        c.execute(delete(journal).where(journal.c.payment_id == ps[0]["id"]))
        # amount mismatch: the book booked another amount for payment 1
        c.execute(update(journal).where(journal.c.payment_id == ps[1]["id"]).values(amount=11_00))
        # duplicate: payment 2 booked twice (a second entry under another reference)
        r2 = rows[ps[2]["id"]]._asdict()
        c.execute(
            insert(journal).values({**{k: v for k, v in r2.items() if k != "id"}, "ref": "f" * 64})
        )
        # unknown: a movement no payment made
        c.execute(
            insert(journal).values(
                {
                    **{k: v for k, v in r2.items() if k != "id"},
                    "ref": "e" * 64,
                    "payment_id": None,
                    "amount": 5_00,
                }
            )
        )
    out = reconcile.run(core)
    got = {(x["kind"], x["payment_id"]) for x in out["breaks"]}
    assert got == {
        ("missing", ps[0]["id"]),
        ("amount_mismatch", ps[1]["id"]),
        ("duplicate", ps[2]["id"]),
        ("unknown", None),
    }
    assert out["matched"] == 1  # payment 3 alone
    mm = next(x for x in out["breaks"] if x["kind"] == "amount_mismatch")
    assert (mm["expected_amount"], mm["actual_amount"]) == (20_00, 11_00)
    # settlement breaks: an unconfirmed one and one confirmed at another amount
    sids = core.settle()
    assert len(sids) == 1
    core.confirm_settlement(sids[0], 1_00, "stmt")
    out = reconcile.run(core)
    stl = [x for x in out["breaks"] if x["source"] == "settlement"]
    assert [(x["kind"], x["expected_amount"], x["actual_amount"]) for x in stl] == [
        ("amount_mismatch", 100_00, 1_00)
    ]
    assert out["reconciled"] == []  # nothing reconciles over a broken settlement
    check_invariants(core)


def test_concurrent_settlement_windows_settle_each_payment_once(core: PaymentCore) -> None:
    a, b = account(core, "quin", 100_00), account(core, "ray")
    ps = [drive(core, pay(core, a, b, 10_00, f"w{i}")["id"]) for i in range(3)]
    made: list[list[str]] = []
    barrier = threading.Barrier(2)

    def window() -> None:
        barrier.wait()
        made.append(core.settle())

    ts = [threading.Thread(target=window) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(len(m) for m in made) == [0, 1]  # one window took them all
    assert {core.get(p["id"])["status"] for p in ps} == {"settled"}
    assert bal(core, b) == (30_00, 0)
    check_invariants(core)


def _fresh(engine: Engine) -> None:
    from sqlalchemy import text

    with engine.begin() as c:
        for t in (
            "settlement_items", "settlements", "reconciliations", "idempotency", "postings",
            "ledger_transactions", "payments", "accounts", "assets", "events",
        ):  # fmt: skip
            c.execute(text(f"DELETE FROM {t}"))  # noqa: S608 - fixed table names


ops = st.lists(
    st.tuples(
        st.sampled_from(["pay", "drive", "cancel", "fail", "settle", "deposit"]),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=1, max_value=60_00),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_property_any_command_sequence_keeps_the_books_and_replays(
    sqlite_engine: Engine, tmp_path: Path, script: list
) -> None:
    """Random payments, drives, cancels, failures, deposits and settlement windows, legal
    or not: after every command the ledger sums to zero, no customer is overdrawn, and a
    replay of the events gives exactly the tables (balances, holds, payment rows)."""
    _fresh(sqlite_engine)
    book = make_engine(f"sqlite:///{tmp_path / 'book-prop.db'}")
    rail = BookRail(book, "k", SIGNER.public_key)
    with book.begin() as c:
        c.execute(delete(journal))
    sanctions = SanctionsList.load(PACKAGE_DATA / "sanctions")
    checks = {"book": book_destination_check}
    core = PaymentCore(sqlite_engine, sanctions, risk.Settings(), {"book": rail}, checks)
    accts = [account(core, f"c{i}", 50_00) for i in range(3)]
    pids: list[str] = []
    for n, (op, who, amount) in enumerate(script):
        try:
            if op == "pay":
                pids.append(pay(core, accts[who], accts[(who + 1) % 3], amount, f"p{n}")["id"])
            elif op == "deposit":
                core.deposit(accts[who], amount, f"dep{n}")
            elif op == "settle":
                core.settle()
            elif pids:
                pid = pids[who % len(pids)]
                if op == "drive":
                    drive(core, pid)
                elif op == "cancel":
                    core.cancel(pid, "property test")
                elif op == "fail":
                    core.step(pid, "PaymentFailed", {"reasons": ["property test"]})
        except (CoreError, lifecycle.IllegalTransition):
            pass  # an illegal step is refused; the books must not move
        check_invariants(core)
    book.dispose()


def test_an_intake_batch_becomes_payments_once_each(core: PaymentCore) -> None:
    a, b = account(core, "sam", 100_00), account(core, "tia")
    txs = [
        IntakeTransaction("E2E-1", a, 10_00, b, "book"),
        IntakeTransaction("E2E-2", a, 20_00, b, "book"),
        IntakeTransaction("E2E-3", a, 5_00, "GB33BUKB20201555555555", "book"),
    ]
    ids = core.import_batch("MSG-1", txs)
    again = core.import_batch("MSG-1", txs)
    assert ids == again and len(set(ids)) == 3  # the same batch twice: the same payments
    got = [core.get(pid) for pid in ids]
    assert [p["end_to_end_id"] for p in got] == ["E2E-1", "E2E-2", "E2E-3"]
    assert [p["status"] for p in got] == ["authorized", "authorized", "declined"]
    assert any("sanctions list" in r for r in got[2]["reasons"])
    assert bal(core, a) == (100_00, 30_00)
    with pytest.raises(CoreError, match="end-to-end id 'X' appears twice") as info:
        core.import_batch("MSG-2", [txs[0].__class__("X", a, 1, b, "book")] * 2)
    assert info.value.field == "end_to_end_id"
    check_invariants(core)


def test_worker_retries_a_rail_that_is_down_and_pays_once(
    core: PaymentCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient rail error (not RailError) leaves the payment signed for the next pass;
    the next passes broadcast it once and confirm it. (The custody client is never called
    from ``signed`` on; it points at a closed port.)"""
    from custody.client import CustodyClient
    from payments.worker import Worker

    a, b = account(core, "uma", 10_00), account(core, "val")
    p = pay(core, a, b, 4_00, "down")
    rail = core.rails["book"]
    unsigned = rail.build(core.instruction(p))
    core.step(p["id"], "SignPrepared", {"unsigned": unsigned.to_json()})
    sig = SIGNER.sign(bytes.fromhex(unsigned.payload["message"][2:]))
    signed = rail.attach(unsigned, CustodySignature(sig), SIGNER.public_key)
    core.step(p["id"], "PaymentSigned", {"signature": sig, "signed_raw": signed.raw})
    real = rail.broadcast
    calls: list[int] = []

    def flaky(s: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("book unreachable")
        return real(s)  # type: ignore[arg-type]

    monkeypatch.setattr(rail, "broadcast", flaky)
    w = Worker(core, CustodyClient("http://127.0.0.1:9", "unused", retries=0))
    w.tick()
    assert core.get(p["id"])["status"] == "signed"
    w.tick()
    assert core.get(p["id"])["status"] == "broadcast"
    w.tick()
    assert core.get(p["id"])["status"] == "confirmed"
    assert len([r for r in rail.records() if r.payment_id == p["id"]]) == 1
    check_invariants(core)


def test_the_same_key_sent_concurrently_makes_one_payment(core: PaymentCore) -> None:
    a, b = account(core, "wes", 100_00), account(core, "xia")
    body = {"account_id": a, "amount": 30_00, "destination": b, "rail": "book"}
    got: list[tuple[str, bool]] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        got.append(core.create_payment(dict(body), "one-key"))

    ts = [threading.Thread(target=go) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len({pid for pid, _ in got}) == 1
    assert sorted(created for _, created in got) == [False, False, False, True]
    assert bal(core, a) == (100_00, 30_00)  # reserved once
    check_invariants(core)
