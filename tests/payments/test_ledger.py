"""The ledger: balanced postings, the database refusing overdrafts, events that replay.

Run on SQLite and on a real PostgreSQL server (the ``engine`` fixture)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError

from payments import ledger, replay
from payments.db import accounts, events, postings
from payments.events import ConcurrencyError
from payments.ledger import InsufficientFunds, LedgerError, Posting


def _customer(engine: Engine, owner: str, asset: str = "ETH") -> str:
    with engine.begin() as c:
        ledger.ensure_asset(c, asset, 18 if asset == "ETH" else 8)
        return str(ledger.open_account(c, owner, asset).id)


def test_deposit_balances_and_sums_to_zero(engine: Engine) -> None:
    a = _customer(engine, "alice")
    with engine.begin() as c:
        ledger.deposit(c, a, 500, "dep-1")
    with engine.connect() as c:
        bal = ledger.balances(c)
        assert bal[a] == (500, 0)
        assert bal["sys:external:ETH"] == (-500, 0)
        assert c.execute(select(func.sum(postings.c.amount))).scalar_one() == 0
        assert replay.differences(c) == []


def test_the_database_refuses_an_overdraft_even_past_the_code(engine: Engine) -> None:
    """The CHECK constraint, not Python, is the guard: a raw UPDATE is refused too."""
    a = _customer(engine, "bob")
    with pytest.raises(IntegrityError):
        with engine.begin() as c:
            c.execute(update(accounts).where(accounts.c.id == a).values(balance=-1))
    with engine.begin() as c:
        ledger.deposit(c, a, 100, "dep-b")
    with pytest.raises(IntegrityError):  # a hold beyond the balance
        with engine.begin() as c:
            c.execute(update(accounts).where(accounts.c.id == a).values(held=101))
    with pytest.raises(IntegrityError):  # a negative hold
        with engine.begin() as c:
            c.execute(update(accounts).where(accounts.c.id == a).values(held=-1))
    with engine.connect() as c:
        assert ledger.balances(c)[a] == (100, 0)


def test_unbalanced_and_malformed_postings_are_refused(engine: Engine) -> None:
    a = _customer(engine, "carol")
    with engine.begin() as c:
        ledger.deposit(c, a, 10, "d")
    ext = "sys:external:ETH"
    with pytest.raises(LedgerError, match="do not balance"):
        with engine.begin() as c:
            ledger.record(
                c, "t:1", 0, "X", {}, posts=[Posting(a, "ETH", -5), Posting(ext, "ETH", 4)]
            )
    with pytest.raises(LedgerError, match="holds ETH, not BTC"):
        with engine.begin() as c:
            ledger.record(
                c, "t:2", 0, "X", {}, posts=[Posting(a, "BTC", -5), Posting(ext, "BTC", 5)]
            )
    with pytest.raises(LedgerError, match="integer"):
        ledger.check_amount(1.5)
    with pytest.raises(LedgerError, match="exceeds the ledger maximum"):
        ledger.check_amount(2**63)
    with pytest.raises(InsufficientFunds, match=a):
        with engine.begin() as c:
            ledger.record(
                c, "t:3", 0, "X", {}, posts=[Posting(a, "ETH", -11), Posting(ext, "ETH", 11)]
            )
    with engine.connect() as c:  # nothing of the refused movements stayed
        assert ledger.balances(c)[a] == (10, 0)
        assert c.execute(select(func.count()).where(events.c.stream.like("t:%"))).scalar_one() == 0


def test_events_are_numbered_per_stream_and_a_lost_race_is_refused(engine: Engine) -> None:
    a = _customer(engine, "dave")
    with engine.begin() as c:
        ledger.deposit(c, a, 10, "once")
    with pytest.raises(ConcurrencyError):  # the same deposit reference: stream seq 1 taken
        with engine.begin() as c:
            ledger.deposit(c, a, 10, "once")
    with engine.connect() as c:
        assert ledger.balances(c)[a] == (10, 0)
    with pytest.raises(IntegrityError):  # the database itself refuses a duplicate seq
        with engine.begin() as c:
            c.execute(
                text("INSERT INTO events (stream, seq, type, data, at) VALUES "
                     "('deposit:once', 1, 'Deposited', '{}', CURRENT_TIMESTAMP)")
            )  # fmt: skip


def test_two_concurrent_holds_cannot_overspend(engine: Engine) -> None:
    a = _customer(engine, "erin")
    with engine.begin() as c:
        ledger.deposit(c, a, 100, "d")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def reserve(n: int) -> None:
        barrier.wait()
        try:
            with engine.begin() as c:
                ledger.record(c, f"h:{n}", 0, "Held", {}, holds=[Posting(a, "ETH", 70)])
            results.append("held")
        except InsufficientFunds:
            results.append("refused")

    ts = [threading.Thread(target=reserve, args=(n,)) for n in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == ["held", "refused"]
    with engine.connect() as c:
        assert ledger.balances(c)[a] == (100, 70)


OWNERS = ["o1", "o2", "o3"]
ASSETS = ["ETH", "BTC"]
moves = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "transfer", "hold", "release"]),
        st.sampled_from(OWNERS),
        st.sampled_from(OWNERS),
        st.sampled_from(ASSETS),
        st.integers(min_value=1, max_value=10**18),
    ),
    max_size=25,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=moves)
def test_property_ledger_sums_to_zero_never_negative_and_replays(
    sqlite_engine: Engine, ops: list
) -> None:
    """Random deposits, transfers (some overdrawing on purpose), holds and releases:
    the sum per asset is always 0, no customer is ever below zero (the database refused
    every overdraft), and replaying the events gives the same balances."""
    eng = sqlite_engine
    with eng.begin() as c:  # a fresh ledger per example
        for t in ("postings", "ledger_transactions", "payments", "accounts", "events"):
            c.execute(text(f"DELETE FROM {t}"))  # noqa: S608 - fixed table names
    ids: dict[tuple[str, str], str] = {}
    for o in OWNERS:
        for asset in ASSETS:
            ids[(o, asset)] = _customer(eng, o, asset)
    held: dict[str, list[int]] = {}
    for n, (op, src, dst, asset, amount) in enumerate(ops):
        s, d = ids[(src, asset)], ids[(dst, asset)]
        try:
            with eng.begin() as c:
                if op == "deposit":
                    ledger.deposit(c, s, amount, f"p{n}")
                elif op == "transfer" and s != d:
                    ledger.record(
                        c,
                        f"x:{n}",
                        0,
                        "Moved",
                        {},
                        posts=[Posting(s, asset, -amount), Posting(d, asset, amount)],
                    )
                elif op == "hold":
                    ledger.record(c, f"x:{n}", 0, "Held", {}, holds=[Posting(s, asset, amount)])
                    held.setdefault(s, []).append(amount)
                elif op == "release" and held.get(s):
                    ledger.record(
                        c, f"x:{n}", 0, "Released", {}, holds=[Posting(s, asset, -held[s].pop())]
                    )
        except InsufficientFunds:
            pass  # the database refused: that is the property under test
        with eng.connect() as c:
            rows = c.execute(select(accounts)).all()
            for asset in ASSETS:
                assert sum(r.balance for r in rows if r.asset == asset) == 0
            for r in rows:
                if not r.allow_negative:
                    assert r.balance - r.held >= 0 and r.held >= 0, r
    with eng.connect() as c:
        assert replay.differences(c) == []
