"""Reconciliation: the ledger's view of every movement against what the rails and the
counterparties report.

Matched per rail by reference (the tx hash / book digest the ledger recorded at
broadcast), then by payment id. Breaks, each with the numbers that show it:

``missing``          a payment the ledger holds as confirmed (or later) that its rail does
                     not report; a settlement with no confirmation from its counterparty
``duplicate``        the rail reports more than one movement for one payment (or one
                     reference twice)
``amount_mismatch``  the rail (or the settlement confirmation) moved another amount than
                     the ledger booked
``unknown``          the rail reports a movement the ledger has no payment for

Payments in ``broadcast`` are in flight, not a break. Settled payments with no break,
whose settlement is confirmed at the netted amount, become ``reconciled``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert, select

from payments import events as ev
from payments.core import PaymentCore, new_id
from payments.db import payments, reconciliations, settlement_items, settlements
from payments.rails import RailRecord

EXPECTED = ("confirmed", "settled", "reconciled")


@dataclass(frozen=True)
class Break:
    kind: str  # missing | duplicate | amount_mismatch | unknown
    source: str  # the rail, or "settlement"
    payment_id: str | None
    ref: str | None
    expected_amount: int | None
    actual_amount: int | None
    detail: str


def find_breaks(core: PaymentCore) -> tuple[list[Break], int, set[str]]:
    """``(breaks, matched count, ids of payments with a break)``."""
    breaks: list[Break] = []
    matched = 0
    bad: set[str] = set()
    with core.engine.connect() as conn:
        rows = conn.execute(select(payments).where(payments.c.rail_ref.is_not(None))).all()
        stl = conn.execute(select(settlements)).all()
    by_rail: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_rail[r.rail].append(r)
    for name, rail in sorted(core.rails.items()):
        records: list[RailRecord] = list(rail.records())
        by_ref: dict[str, list[RailRecord]] = defaultdict(list)
        by_pid: dict[str, list[RailRecord]] = defaultdict(list)
        for rec in records:
            by_ref[rec.ref].append(rec)
            if rec.payment_id:
                by_pid[rec.payment_id].append(rec)
        known_refs = {r.rail_ref for r in by_rail[name]}
        known_pids = {r.id for r in by_rail[name]}
        for p in by_rail[name]:
            mine = by_ref.get(p.rail_ref, [])
            extra = [x for x in by_pid.get(p.id, []) if x.ref != p.rail_ref]
            if len(mine) > 1 or extra:
                bad.add(p.id)
                refs = ", ".join(x.ref for x in mine + extra)
                why = f"{name} reports {len(mine) + len(extra)} movements for {p.id}: {refs}"
                total = sum(x.amount for x in mine + extra)
                breaks.append(Break("duplicate", name, p.id, p.rail_ref, p.amount, total, why))
            if not mine:
                if p.status in EXPECTED:
                    bad.add(p.id)
                    why = f"payment {p.id} is {p.status} in the ledger; {name} has no {p.rail_ref}"
                    breaks.append(Break("missing", name, p.id, p.rail_ref, p.amount, None, why))
                continue
            got = mine[0]
            if got.amount != p.amount or got.asset != p.asset:
                bad.add(p.id)
                why = f"ledger booked {p.amount} {p.asset}, {name} moved {got.amount} {got.asset}"
                breaks.append(
                    Break("amount_mismatch", name, p.id, p.rail_ref, p.amount, got.amount, why)
                )
                continue
            if len(mine) == 1 and not extra:
                matched += 1
        for rec in records:
            if rec.ref in known_refs or (
                rec.payment_id is not None and rec.payment_id in known_pids
            ):
                continue
            why = f"{name} reports {rec.ref} ({rec.amount} {rec.asset}) that no payment made"
            breaks.append(Break("unknown", name, rec.payment_id, rec.ref, None, rec.amount, why))
    for st in stl:
        if st.status != "confirmed":
            why = f"settlement {st.id} with {st.counterparty} ({st.net_amount} {st.asset}): "
            why += "no confirmation"
            breaks.append(Break("missing", "settlement", None, st.id, st.net_amount, None, why))
        elif st.confirmed_amount != st.net_amount:
            why = f"settlement {st.id}: netted {st.net_amount} {st.asset}, "
            why += f"{st.counterparty} confirmed {st.confirmed_amount}"
            breaks.append(
                Break(
                    "amount_mismatch",
                    "settlement",
                    None,
                    st.id,
                    st.net_amount,
                    st.confirmed_amount,
                    why,
                )  # fmt: skip
            )
    return breaks, matched, bad


def run(core: PaymentCore) -> dict[str, Any]:
    """One reconciliation run: find the breaks, mark clean settled payments
    ``reconciled``, store and return the report."""
    breaks, matched, bad = find_breaks(core)
    with core.engine.connect() as conn:
        clean = (
            conn.execute(
                select(payments.c.id)
                .join(settlement_items, settlement_items.c.payment_id == payments.c.id)
                .join(settlements, settlements.c.id == settlement_items.c.settlement_id)
                .where(payments.c.status == "settled")
                .where(settlements.c.status == "confirmed")
                .where(settlements.c.confirmed_amount == settlements.c.net_amount)
            )
            .scalars()
            .all()
        )
    reconciled = []
    for pid in clean:
        if pid not in bad:
            core.step(pid, "PaymentReconciled", {})
            reconciled.append(pid)
    rid = new_id("rec")
    doc = [asdict(b) for b in breaks]
    at = ev.now()
    with core.engine.begin() as conn:
        conn.execute(
            insert(reconciliations).values(id=rid, matched=matched, breaks=doc, created_at=at)
        )
    return {
        "id": rid,
        "matched": matched,
        "breaks": doc,
        "reconciled": reconciled,
        "created_at": at,
    }
