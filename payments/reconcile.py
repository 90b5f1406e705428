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
                refs = [x.ref for x in mine + extra]
                breaks.append(Break("duplicate", name, p.id, p.rail_ref, p.amount,
                                    sum(x.amount for x in mine + extra),
                                    f"{name} reports {len(refs)} movements for payment {p.id}: {', '.join(refs)}"))  # fmt: skip
            if not mine:
                if p.status in EXPECTED:
                    bad.add(p.id)
                    breaks.append(Break("missing", name, p.id, p.rail_ref, p.amount, None,
                                        f"payment {p.id} is {p.status} in the ledger but {name} has no movement {p.rail_ref}"))  # fmt: skip
                continue
            if mine[0].amount != p.amount or mine[0].asset != p.asset:
                bad.add(p.id)
                breaks.append(Break("amount_mismatch", name, p.id, p.rail_ref, p.amount, mine[0].amount,
                                    f"ledger booked {p.amount} {p.asset}, {name} moved {mine[0].amount} {mine[0].asset}"))  # fmt: skip
                continue
            if len(mine) == 1 and not extra:
                matched += 1
        for rec in records:
            if rec.ref not in known_refs and (
                rec.payment_id is None or rec.payment_id not in known_pids
            ):
                breaks.append(Break("unknown", name, rec.payment_id, rec.ref, None, rec.amount,
                                    f"{name} reports movement {rec.ref} of {rec.amount} {rec.asset} that no payment in the ledger made"))  # fmt: skip
    for s in stl:
        if s.status != "confirmed":
            breaks.append(Break("missing", "settlement", None, s.id, s.net_amount, None,
                                f"settlement {s.id} with {s.counterparty} ({s.net_amount} {s.asset}) has no confirmation"))  # fmt: skip
        elif s.confirmed_amount != s.net_amount:
            breaks.append(Break("amount_mismatch", "settlement", None, s.id, s.net_amount, s.confirmed_amount,
                                f"settlement {s.id}: netted {s.net_amount} {s.asset}, {s.counterparty} confirmed {s.confirmed_amount}"))  # fmt: skip
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
