"""The payment core's commands: accounts, deposits, payments (create, authorize, cancel,
advance), settlement windows and reconciliation, each one database transaction.

Every state change is an event (:mod:`payments.events`) whose ledger effects
(:func:`payments.ledger.record`) and read-model row (:func:`payments.lifecycle.project`)
commit with it. Commands are idempotent: a payment created with an ``Idempotency-Key``
already used with the same body is that payment; asked to become what it already is, a
payment stays as it is (no second event).

Ledger flow of a payment of amount A and fee F from customer account C:

==============  ===========================================================
authorized      hold A + F on C (refused by the database if C cannot cover it)
broadcast       C -(A+F), chain_clearing +A, fees +F; the hold released
confirmed       chain_clearing -A, settlement_clearing +A; a chain rail reporting the
                fee it actually paid F' < F: fees -(F - F'), C +(F - F')
settled         settlement_clearing -A, destination (book) or external +A
failed          the hold released; after broadcast: chain_clearing -A, C +A
cancelled       the hold released
==============  ===========================================================

An ``iso20022`` payment (:mod:`payments.settlement`) takes signed, broadcast, confirmed and
settled in the one transaction that releases its netted pacs.008
(:meth:`PaymentCore.settle_netted`): the same postings, credited to ``external``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from payments import events as ev
from payments import ledger, lifecycle, risk
from payments.db import accounts, assets, idempotency, payments, settlement_items, settlements
from payments.events import ConcurrencyError
from payments.ledger import LedgerError, Posting
from payments.rails import Instruction, IntakeTransaction, Rail
from payments.sanctions import SanctionsList

LIVE = (
    "authorized",
    "awaiting_approval",
    "signed",
    "broadcast",
    "confirmed",
    "settled",
    "reconciled",
)


class CoreError(Exception):
    """A refused command: ``status`` (HTTP), ``slug`` (problem type), ``field``."""

    def __init__(self, status: int, slug: str, detail: str, field: str = "") -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.field = status, slug, detail, field


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def body_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass
class PaymentCore:
    engine: Engine
    sanctions: SanctionsList
    risk_settings: risk.Settings
    rails: dict[str, Rail]
    # per rail, checks of the destination against this ledger (the book: an account here),
    # run in the authorizing transaction
    destination_checks: dict[str, Callable[[Connection, Instruction], list[str]]] = field(
        default_factory=dict
    )
    # rails that authorize one payment but sign a netted settlement of many
    # (``iso20022``: :mod:`payments.settlement`); the worker does not drive them
    settlement_rails: dict[str, Rail] = field(default_factory=dict)

    # -- idempotency ----------------------------------------------------------------------
    def _claimed(self, conn: Connection, scope: str, key: str, digest: str) -> str | None:
        row = conn.execute(
            select(idempotency).where(and_(idempotency.c.scope == scope, idempotency.c.key == key))
        ).first()
        if row is None:
            return None
        if row.body_hash != digest:
            raise CoreError(
                422,
                "idempotency-key-reused",
                f"Idempotency-Key {key!r} was used with another body for {scope}",
                "Idempotency-Key",
            )
        return str(row.resource_id)

    def _claim(self, conn: Connection, scope: str, key: str, digest: str, rid: str) -> None:
        conn.execute(
            insert(idempotency).values(
                scope=scope, key=key, body_hash=digest, resource_id=rid, at=ev.now()
            )
        )

    def _idempotent(
        self, scope: str, key: str, body: Mapping[str, Any], make: Callable[[Connection], str]
    ) -> tuple[str, bool]:
        """Run ``make(conn)`` (which returns the id it created) once per (scope, key), in
        the transaction that claims the key: ``(id, created)``. A concurrent request with
        the same key waits for the first (the row lock of the claim) and answers its id."""
        digest = body_hash(body)
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    rid = self._claimed(conn, scope, key, digest)
                    if rid is not None:
                        return rid, False
                    rid = make(conn)
                    self._claim(conn, scope, key, digest, rid)
                    return rid, True
            except IntegrityError:
                continue  # a concurrent request with the same key won: read its answer
        with self.engine.connect() as conn:
            rid = self._claimed(conn, scope, key, digest)
        if rid is None:
            raise CoreError(409, "idempotency-in-flight", f"Idempotency-Key {key!r} is in use")
        return rid, False

    # -- accounts -------------------------------------------------------------------------
    def open_account(self, body: Mapping[str, Any], key: str) -> tuple[str, bool]:
        def make(conn: Connection) -> str:
            try:
                ledger.ensure_asset(conn, body["asset"], body["decimals"])
                if conn.execute(
                    select(accounts.c.id).where(
                        and_(
                            accounts.c.owner == body["owner"],
                            accounts.c.asset == body["asset"],
                            accounts.c.kind == "customer",
                        )
                    )
                ).first():
                    raise CoreError(
                        409,
                        "account-exists",
                        f"customer {body['owner']} already has a {body['asset']} account",
                        "owner",
                    )
                row = ledger.open_account(
                    conn,
                    body["owner"],
                    body["asset"],
                    per_payment_limit=body.get("per_payment_limit"),
                    daily_limit=body.get("daily_limit"),
                )
            except LedgerError as exc:
                raise CoreError(422, "invalid-account", str(exc), exc.field) from None
            return str(row.id)

        return self._idempotent("accounts", key, body, make)

    def deposit(self, account_id: str, amount: int, reference: str) -> bool:
        """Book a deposit once per ``reference``: ``True`` when booked now, ``False`` when
        the same deposit (account and amount) was booked before; another deposit under
        that reference is a 409."""
        try:
            with self.engine.begin() as conn:
                ledger.deposit(conn, account_id, amount, reference)
            return True
        except ConcurrencyError:
            with self.engine.connect() as conn:
                [first] = ev.load(conn, f"deposit:{reference}")
            if (first.data["account_id"], first.data["amount"]) == (account_id, amount):
                return False
            raise CoreError(
                409,
                "duplicate-deposit",
                f"deposit reference {reference!r} was already booked for "
                f"{first.data['amount']} to {first.data['account_id']}",
                "reference",
            ) from None
        except LedgerError as exc:
            status = 404 if exc.field == "account_id" and "no account" in str(exc) else 422
            raise CoreError(status, "invalid-deposit", str(exc), exc.field) from None

    # -- payments: create and authorize -------------------------------------------------------
    def _payment(self, conn: Connection, pid: str) -> dict[str, Any] | None:
        row = conn.execute(select(payments).where(payments.c.id == pid)).first()
        return row._asdict() if row else None

    def _record(
        self,
        conn: Connection,
        pid: str,
        current: dict[str, Any] | None,
        type_: str,
        data: dict[str, Any],
        *,
        posts: list[Posting] | None = None,
        holds: list[Posting] | None = None,
    ) -> dict[str, Any]:
        state = current["status"] if current else ""
        lifecycle.check(pid, state, type_)
        seq = current["seq"] if current else 0
        e = ledger.record(
            conn,
            f"payment:{pid}",
            seq,
            type_,
            data,
            posts=posts or (),
            holds=holds or (),
            memo=f"{type_} {pid}",
        )
        row = lifecycle.project(current, type_, e.seq, e.data, e.at)
        if current is None:
            conn.execute(insert(payments).values(id=pid, **row))
        else:
            changed = {k: v for k, v in row.items() if current.get(k) != v}
            conn.execute(update(payments).where(payments.c.id == pid).values(**changed))
        row["id"] = pid
        return row

    def create_payment(self, body: Mapping[str, Any], key: str) -> tuple[str, bool]:
        rail = self.rails.get(body["rail"]) or self.settlement_rails.get(body["rail"])
        if rail is None:
            known = sorted({*self.rails, *self.settlement_rails})
            raise CoreError(
                422,
                "unknown-rail",
                f"rail {body['rail']!r} is not available in this build "
                f"(available: {', '.join(known) or 'none'})",
                "rail",
            )

        def make(conn: Connection) -> str:
            acct = ledger.account(conn, body["account_id"])
            if acct is None or acct.kind != "customer":
                raise CoreError(
                    404,
                    "account-not-found",
                    f"no customer account {body['account_id']}",
                    "account_id",
                )
            try:
                amount = ledger.check_amount(body["amount"])
            except LedgerError as exc:
                raise CoreError(422, "invalid-payment", str(exc), "amount") from None
            pid = new_id("pay")
            data = {
                "customer": acct.owner,
                "account_id": acct.id,
                "asset": acct.asset,
                "amount": amount,
                "destination": body["destination"],
                "rail": body["rail"],
                "end_to_end_id": body.get("end_to_end_id"),
            }
            row = self._record(conn, pid, None, "PaymentCreated", data)
            self._authorize(conn, row, acct, rail)
            return pid

        return self._idempotent("payments", key, body, make)

    def _facts(self, conn: Connection, p: dict[str, Any], acct: Any) -> risk.Facts:
        now = ev.now()
        others = and_(payments.c.customer == p["customer"], payments.c.id != p["id"])
        live = payments.c.status.in_(LIVE)
        day = now - dt.timedelta(days=1)
        spent = conn.execute(
            select(func.coalesce(func.sum(payments.c.amount), 0)).where(
                and_(others, live, payments.c.account_id == acct.id, payments.c.created_at >= day)
            )
        ).scalar_one()
        window = now - dt.timedelta(seconds=self.risk_settings.velocity_window_s)
        recent = conn.execute(
            select(func.count()).where(and_(others, payments.c.created_at >= window))
        ).scalar_one()
        known = conn.execute(
            select(payments.c.id)
            .where(and_(others, live, payments.c.destination == p["destination"]))
            .limit(1)
        ).first()
        history = (
            conn.execute(
                select(payments.c.amount)
                .where(and_(others, live, payments.c.asset == p["asset"]))
                .order_by(payments.c.created_at.desc())
                .limit(200)
            )
            .scalars()
            .all()
        )
        decimals = conn.execute(
            select(assets.c.decimals).where(assets.c.code == p["asset"])
        ).scalar_one()
        return risk.Facts(
            amount=p["amount"],
            asset=p["asset"],
            decimals=decimals,
            destination=p["destination"],
            sanctioned=self.sanctions.match(p["destination"]),
            per_payment_limit=acct.per_payment_limit,
            daily_limit=acct.daily_limit,
            spent_today=int(spent),
            recent_count=int(recent),
            known_destination=known is not None,
            history=[int(x) for x in history],
        )

    def _authorize(
        self, conn: Connection, p: dict[str, Any], acct: Any, rail: Rail
    ) -> dict[str, Any]:
        instruction = self.instruction(p)
        rail_reasons = rail.validate(instruction)
        check = self.destination_checks.get(p["rail"])
        if check is not None:
            rail_reasons += check(conn, instruction)
        a = risk.assess(self._facts(conn, p, acct), self.risk_settings)
        reasons = rail_reasons + a.reasons
        if rail_reasons or a.declined(self.risk_settings):
            return self._record(
                conn, p["id"], p, "PaymentDeclined", {"risk_score": a.score, "reasons": reasons}
            )
        fee = rail.fee_estimate(instruction)
        hold = p["amount"] + fee
        data = {"risk_score": a.score, "reasons": reasons, "hold": hold, "fee": fee}
        try:
            with conn.begin_nested():
                return self._record(
                    conn,
                    p["id"],
                    p,
                    "PaymentAuthorized",
                    data,
                    holds=[Posting(acct.id, acct.asset, hold)],
                )
        except ledger.InsufficientFunds:
            now = ledger.account(conn, acct.id)  # as it is now, not as first read
            available = now.balance - now.held
            decimals = conn.execute(
                select(assets.c.decimals).where(assets.c.code == acct.asset)
            ).scalar_one()

            def money(x: int) -> str:
                return risk.fmt(x, decimals, acct.asset)

            reasons.append(
                f"insufficient funds: {money(hold)} needed, {money(max(available, 0))} available "
                f"in account {acct.id} (the ledger refused the reservation)"
            )
            return self._record(
                conn, p["id"], p, "PaymentDeclined", {"risk_score": a.score, "reasons": reasons}
            )

    def import_batch(self, message_id: str, txs: list[IntakeTransaction]) -> list[str]:
        """One payment per transaction of an intake batch, each idempotent on
        ``(message id, end-to-end id)``: importing the same batch again creates nothing;
        the ids in the batch's order."""
        seen: set[str] = set()
        for t in txs:
            if t.end_to_end_id in seen:
                raise CoreError(
                    422,
                    "duplicate-end-to-end-id",
                    f"batch {message_id}: end-to-end id {t.end_to_end_id!r} appears twice",
                    "end_to_end_id",
                )
            seen.add(t.end_to_end_id)
        ids = []
        for t in txs:
            body = {
                "account_id": t.account_id,
                "amount": t.amount,
                "destination": t.destination,
                "rail": t.rail,
                "end_to_end_id": t.end_to_end_id,
            }
            pid, _ = self.create_payment(body, f"batch:{message_id}:{t.end_to_end_id}")
            ids.append(pid)
        return ids

    @staticmethod
    def instruction(p: Mapping[str, Any]) -> Instruction:
        return Instruction(
            p["id"], p["asset"], p["amount"], p["destination"], p.get("end_to_end_id")
        )

    # -- payments: every later step ---------------------------------------------------------
    def get(self, pid: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            p = self._payment(conn, pid)
        if p is None:
            raise CoreError(404, "payment-not-found", f"no payment {pid}", "payment_id")
        return p

    def step(self, pid: str, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move payment ``pid`` by one event (ledger effects by type), in one transaction.
        Idempotent: a payment already in the target state is returned unchanged."""
        data = dict(data or {})
        with self.engine.begin() as conn:
            p = self._payment(conn, pid)
            if p is None:
                raise CoreError(404, "payment-not-found", f"no payment {pid}", "payment_id")
            target = lifecycle.EVENT_STATE.get(type_)
            if target is not None and p["status"] == target:
                return p
            lifecycle.check(pid, p["status"], type_)
            posts, holds = self._effects(conn, p, type_, data)
            return self._record(conn, pid, p, type_, data, posts=posts, holds=holds)

    def _effects(
        self, conn: Connection, p: dict[str, Any], type_: str, data: dict[str, Any]
    ) -> tuple[list[Posting], list[Posting]]:
        asset, amount, acct = p["asset"], p["amount"], p["account_id"]
        release = [Posting(acct, asset, -p["hold"])] if p["hold"] else []
        if type_ == "PaymentBroadcast":
            fee = int(data.get("fee", p["fee"]))
            posts = [
                Posting(acct, asset, -(amount + fee)),
                Posting(ledger.system_account(conn, asset, "chain_clearing"), asset, amount),
            ]
            if fee:
                posts.append(Posting(ledger.system_account(conn, asset, "fees"), asset, fee))
            return posts, release
        if type_ == "PaymentConfirmed":
            posts = [
                Posting(ledger.system_account(conn, asset, "chain_clearing"), asset, -amount),
                Posting(ledger.system_account(conn, asset, "settlement_clearing"), asset, amount),
            ]
            # the rail's actual fee (chain rails: known from the receipt) below the fee
            # booked at broadcast (the most it could be): the difference goes back
            actual = data.get("fee")
            if actual is not None and 0 <= int(actual) < p["fee"]:
                refund = p["fee"] - int(actual)
                posts.append(Posting(ledger.system_account(conn, asset, "fees"), asset, -refund))
                posts.append(Posting(acct, asset, refund))
            return posts, []
        if type_ == "PaymentSettled":
            dest = data.get("credit_account") or ledger.system_account(conn, asset, "external")
            return [
                Posting(ledger.system_account(conn, asset, "settlement_clearing"), asset, -amount),
                Posting(dest, asset, amount),
            ], []
        if type_ in ("PaymentFailed", "PaymentCancelled"):
            if p["status"] == "broadcast":
                return [
                    Posting(ledger.system_account(conn, asset, "chain_clearing"), asset, -amount),
                    Posting(acct, asset, amount),
                ], []
            return [], release
        return [], []

    def cancel(self, pid: str, reason: str) -> dict[str, Any]:
        p = self.get(pid)
        if p["status"] == "cancelled":
            return p
        try:
            return self.step(
                pid, "PaymentCancelled", {"reasons": [*p["reasons"], f"cancelled: {reason}"]}
            )
        except lifecycle.IllegalTransition as exc:
            raise CoreError(409, "illegal-transition", str(exc), "status") from None

    # -- settlement windows ---------------------------------------------------------------------
    def settle(self) -> list[str]:
        """Net every confirmed, unsettled payment per (counterparty = rail, asset) into one
        settlement each; returns the new settlement ids. Each settlement is one
        transaction that re-reads its payments: one a concurrent window took already is
        left out, and a group that lost a race is left for the next window."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(payments.c.id, payments.c.rail, payments.c.asset)
                .where(payments.c.status == "confirmed")
                .order_by(payments.c.created_at)
            ).all()
        groups: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            groups.setdefault((r.rail, r.asset), []).append(r.id)
        made = []
        for (rail, asset), ids in sorted(groups.items()):
            sid = new_id("stl")
            try:
                with self.engine.begin() as conn:
                    items = [p for p in (self._payment(conn, pid) for pid in ids) if p]
                    items = [p for p in items if p["status"] == "confirmed"]
                    if not items:
                        continue
                    conn.execute(
                        insert(settlements).values(
                            id=sid,
                            counterparty=rail,
                            asset=asset,
                            net_amount=sum(p["amount"] for p in items),
                            payment_count=len(items),
                            status="created",
                            created_at=ev.now(),
                        )
                    )
                    for p in items:
                        credit = p["destination"] if rail == "book" else None
                        data = {"settlement_id": sid, "credit_account": credit}
                        posts, _ = self._effects(conn, p, "PaymentSettled", data)
                        self._record(conn, p["id"], p, "PaymentSettled", data, posts=posts)
                        conn.execute(
                            insert(settlement_items).values(
                                settlement_id=sid, payment_id=p["id"], amount=p["amount"]
                            )
                        )
            except ConcurrencyError:
                continue
            made.append(sid)
        return made

    def settle_netted(
        self,
        conn: Connection,
        sid: str,
        counterparty: str,
        asset: str,
        items: list[dict[str, Any]],
        signature: str,
        sign_request_id: str,
    ) -> None:
        """In the caller's transaction: the payments of a signed netted settlement
        (:mod:`payments.settlement`), each ``authorized``, become ``signed`` (custody signed
        the message carrying them), ``broadcast`` (the customer debited into clearing),
        ``confirmed`` and ``settled`` (clearing -> settlement clearing -> external), and
        the settlement row is written with status ``sent``."""
        conn.execute(
            insert(settlements).values(
                id=sid,
                counterparty=counterparty,
                asset=asset,
                net_amount=sum(p["amount"] for p in items),
                payment_count=len(items),
                status="sent",
                created_at=ev.now(),
            )
        )
        steps: list[tuple[str, dict[str, Any]]] = [
            ("PaymentSigned", {"signature": signature, "sign_request_id": sign_request_id}),
            ("PaymentBroadcast", {"rail_ref": sid, "fee": 0}),
            ("PaymentConfirmed", {"confirmations": 1}),
            ("PaymentSettled", {"settlement_id": sid, "credit_account": None}),
        ]
        for p in items:
            for type_, data in steps:  # _record refuses a step the lifecycle does not allow
                posts, holds = self._effects(conn, p, type_, data)
                p = {**p, **self._record(conn, p["id"], p, type_, data, posts=posts, holds=holds)}
            conn.execute(
                insert(settlement_items).values(
                    settlement_id=sid, payment_id=p["id"], amount=p["amount"]
                )
            )

    def confirm_settlement(self, sid: str, amount: int, reference: str) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(select(settlements).where(settlements.c.id == sid)).first()
            if row is None:
                raise CoreError(
                    404, "settlement-not-found", f"no settlement {sid}", "settlement_id"
                )
            if row.status == "confirmed":
                if (row.confirmed_amount, row.confirmation_ref) == (amount, reference):
                    return
                raise CoreError(
                    409,
                    "settlement-confirmed",
                    f"settlement {sid} is already confirmed ({row.confirmation_ref})",
                )
            conn.execute(
                update(settlements)
                .where(settlements.c.id == sid)
                .values(status="confirmed", confirmed_amount=amount, confirmation_ref=reference)
            )
