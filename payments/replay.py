"""Rebuild every read model from the event store alone, and compare with the tables.

:func:`rebuild` folds the events in commit order: account balances and holds from each
event's ``postings`` and ``holds``, payment rows through :func:`payments.lifecycle.project`.
:func:`differences` lists where the live tables disagree with that rebuild (empty when
they agree), which the property tests and ``GET /v1/replay-check`` use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from payments import events as ev
from payments import lifecycle
from payments.db import payments
from payments.ledger import balances

COMPARED = ("status", "seq", "amount", "asset", "hold", "fee", "rail_ref", "sign_request_id")


@dataclass
class State:
    balance: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    held: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    accounts: set[str] = field(default_factory=set)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)


def rebuild(conn: Connection) -> State:
    st = State()
    for e in ev.all_events(conn):
        if e.type == "AccountOpened":
            st.accounts.add(e.stream.removeprefix("account:"))
        for acct, _asset, amount in e.data.get("postings", []):
            st.balance[acct] += amount
        for acct, _asset, amount in e.data.get("holds", []):
            st.held[acct] += amount
        if e.stream.startswith("payment:"):
            pid = e.stream.removeprefix("payment:")
            st.payments[pid] = lifecycle.project(st.payments.get(pid), e.type, e.seq, e.data, e.at)
    return st


def differences(conn: Connection) -> list[str]:
    st = rebuild(conn)
    out: list[str] = []
    live = balances(conn)
    if set(live) != st.accounts:
        out.append(f"accounts: tables {sorted(set(live) ^ st.accounts)} differ from events")
    for acct, (bal, held) in live.items():
        if (bal, held) != (st.balance.get(acct, 0), st.held.get(acct, 0)):
            out.append(
                f"account {acct}: table ({bal}, held {held}) != events "
                f"({st.balance.get(acct, 0)}, held {st.held.get(acct, 0)})"
            )
    rows = {r.id: r._asdict() for r in conn.execute(select(payments))}
    if set(rows) != set(st.payments):
        out.append(f"payments: {sorted(set(rows) ^ set(st.payments))} only on one side")
    for pid, row in rows.items():
        want = st.payments.get(pid, {})
        for col in COMPARED:
            if row.get(col) != want.get(col):
                out.append(
                    f"payment {pid}.{col}: table {row.get(col)!r} != events {want.get(col)!r}"
                )
    return out
