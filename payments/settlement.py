"""The ISO 20022 settlement rail: payments to other banks, netted per counterparty per
window into one pacs.008.001.08 each, signed through custody as ``iso20022`` with the
Ed25519 settlement key, released as files.

A payment whose creditor is at another bank (:mod:`payments.intake`; rail ``iso20022``,
destination ``BIC/IBAN``) is authorized like any other (its amount held on the customer's
account) and then waits for the settlement window; the worker does not sign it alone.
:meth:`Settler.run` (``POST /v1/settlements``, ``custody pay settle``) does, in order:

1. **open windows**: the authorized ``iso20022`` payments in no settlement yet, grouped per
   (counterparty BIC, currency), at most :data:`~payments.iso20022.pacs008.MAX_NETTED` per
   message; each group becomes one :class:`~payments.iso20022.NetSettlement` (the net
   amount, one ``Ustrd`` line per end-to-end id), built and XSD-validated
   (:func:`~payments.iso20022.build_settlement`) and stored with its payments in one
   transaction (:data:`iso_settlement_items`: a payment is in one settlement at most);
2. **sign**: custody is asked once per settlement (``kind="iso20022"``, ``{"xml":
   document}``, Idempotency-Key ``settlement:<id>:sign``): a re-run asks for the same
   request, never a second signature. The policy may want approvals (the demo: above
   10 000.00 EUR, two of treasury): the settlement waits as ``pending_approval`` and a
   later run picks the signature up;
3. **release**: the signature placed in the header (an XML signature,
   :func:`custody.xmldsig.insert_signature`), the file verified as the receiving bank would
   (:func:`payments.iso20022.verify_settlement`: PyNaCl, the XSD), then ONE transaction
   stores the file and moves every payment ``signed`` -> ``broadcast`` (customer debited
   into clearing) -> ``confirmed`` -> ``settled`` (clearing -> ``settlement_clearing`` ->
   ``external``: the money has left this bank's book) and writes the core's
   ``settlements`` row (status ``sent``). If a payment changed meanwhile (cancelled), the
   whole settlement is voided instead and its other payments wait for the next window:
   a file is never released for a payment that is not settled in the ledger.

A settlement custody refuses (policy, rejected approvals, expiry) fails its payments,
which releases their holds. The counterparty's confirmation
(``POST /v1/settlements/{id}/confirmations``) is what reconciliation needs to make the
payments ``reconciled``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    select,
    update,
)

from custody import obs, xmldsig
from custody.client import CustodyClient, CustodyError, Forbidden, NotFound, ValidationFailed
from custody.domain import Scheme
from payments.core import PaymentCore
from payments.db import assets, migrate, payments
from payments.intake import SETTLEMENT, bic11, split_destination
from payments.iso20022 import (
    IsoError,
    NetSettlement,
    Party,
    build_settlement,
    verify_settlement,
)
from payments.iso20022._xml import check_bic, check_iban, exponent
from payments.iso20022.pacs008 import MAX_NETTED
from payments.rails import (
    CustodySignature,
    Instruction,
    RailError,
    RailRecord,
    Signed,
    Status,
    Unsigned,
)

log = obs.get_logger("payments.settlement")

iso_metadata = MetaData()
# one row per pacs.008: what was built, what custody was asked, what was released
iso_settlements = Table(
    "iso_settlements",
    iso_metadata,
    Column("id", String(40), primary_key=True),  # the MsgId and settlement end-to-end id
    Column("counterparty", String(11), nullable=False),  # BIC11
    Column("asset", String(16), nullable=False),
    Column("net_amount", String(40), nullable=False),  # base units, as text (BigInteger-safe)
    Column("uetr", String(36), nullable=False),
    Column("document", Text, nullable=False),  # the custody payload's xml
    Column("unsigned", Text, nullable=False),  # the envelope without the signature
    # signing | pending_approval | sent | failed | void
    Column("status", String(20), nullable=False),
    Column("sign_request_id", String(40), nullable=True),
    Column("signed", Text, nullable=True),  # the released file
    Column("detail", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
iso_settlement_items = Table(
    "iso_settlement_items",
    iso_metadata,
    Column("settlement_id", String(40), ForeignKey("iso_settlements.id"), nullable=False),
    Column("payment_id", String(40), primary_key=True),  # one settlement per payment
)
OPEN = ("signing", "pending_approval")


def sign_idempotency_key(settlement_id: str) -> str:
    return f"settlement:{settlement_id}:sign"


@dataclass(frozen=True)
class Counterparty:
    bic: str
    name: str
    iban: str


def load_counterparties(path: Path) -> dict[str, Counterparty]:
    """The banks this one settles with: JSON ``{BIC: {"name": ..., "iban": ...}}`` (keys
    starting with ``_`` are comments); a bad entry stops the service, naming it."""
    doc = json.loads(path.read_text())
    out: dict[str, Counterparty] = {}
    for bic, v in doc.items():
        if bic.startswith("_"):
            continue
        try:
            b = bic11(bic)
            out[b] = Counterparty(b, str(v["name"]), check_iban(str(v["iban"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}: counterparty {bic!r}: {exc}") from None
    return out


class SettlementRail:
    """What the payment core asks of the ``iso20022`` rail at authorization (a payment it
    can carry, its fee: none). It has no per-payment signature: :class:`Settler` signs the
    netted message, so the single-payment steps refuse."""

    name = SETTLEMENT
    scheme: Scheme = "ed25519"

    def __init__(self, key_id: str, counterparties: dict[str, Counterparty]) -> None:
        self.key_id = key_id
        self.counterparties = counterparties

    def validate(self, instruction: Instruction) -> list[str]:
        reasons = []
        try:
            bic, _ = split_destination(instruction.destination)
            if bic not in self.counterparties:
                reasons.append(
                    f"this bank has no settlement arrangement with {bic} (the creditor agent)"
                )
        except ValueError as exc:
            reasons.append(f"{exc} (an iso20022 destination is the creditor's BIC/IBAN)")
        try:
            exponent(instruction.asset)
        except ValueError as exc:
            reasons.append(f"{exc}: only ISO 4217 currencies settle as pacs.008")
        eid = instruction.end_to_end_id
        if not eid or len(eid) > 35:
            reasons.append("an iso20022 payment needs an end-to-end id of 1-35 characters")
        return reasons

    def fee_estimate(self, instruction: Instruction) -> int:
        return 0  # SLEV: each side bears its own charges, none taken from the customer

    def _netted(self) -> RailError:
        return RailError("iso20022 payments are signed netted, per settlement window", "rail")

    def build(self, instruction: Instruction) -> Unsigned:
        raise self._netted()

    def attach(self, unsigned: Unsigned, signature: CustodySignature, public_key: str) -> Signed:
        raise self._netted()

    def broadcast(self, signed: Signed) -> str:
        raise self._netted()

    def status(self, ref: str) -> Status:
        raise self._netted()

    def records(self) -> Iterable[RailRecord]:
        return []  # reconciled through the counterparty's settlement confirmation


class Settler:
    def __init__(
        self,
        core: PaymentCore,
        custody: CustodyClient,
        rail: SettlementRail,
        public_key: str,
        ours: Party,
    ) -> None:
        self.core = core
        self.custody = custody
        self.rail = rail
        self.public_key = bytes.fromhex(public_key)
        check_bic(ours.bic)  # ValueError at start-up, not at the first window
        check_iban(ours.iban)
        self.ours = ours
        migrate(core.engine, "core")  # its tables are in the core branch (no-op at head)

    @property
    def engine(self) -> Engine:
        return self.core.engine

    # -- 1. windows -----------------------------------------------------------------------
    def open_windows(self) -> list[str]:
        taken = select(iso_settlement_items.c.payment_id)
        with self.engine.connect() as c:
            rows = c.execute(
                select(payments.c.id, payments.c.destination, payments.c.asset)
                .where(
                    and_(
                        payments.c.rail == SETTLEMENT,
                        payments.c.status == "authorized",
                        payments.c.id.not_in(taken),
                    )
                )
                .order_by(payments.c.created_at, payments.c.id)
            ).all()
        groups: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            bic, _ = split_destination(r.destination)
            groups.setdefault((bic, r.asset), []).append(r.id)
        made = []
        for (bic, asset), ids in sorted(groups.items()):
            if bic not in self.rail.counterparties:  # the arrangement ended since
                self._fail_payments(ids, f"this bank no longer settles with {bic}")
                continue
            for i in range(0, len(ids), MAX_NETTED):
                chunk = ids[i : i + MAX_NETTED]
                try:
                    sid = self._open(bic, asset, chunk)
                except IsoError as exc:  # no valid pacs.008 can carry them
                    self._fail_payments(chunk, f"no valid pacs.008 for {bic}: {exc}")
                    continue
                if sid:
                    made.append(sid)
        return made

    def _fail_payments(self, ids: list[str], why: str) -> None:
        for pid in ids:
            p = self.core.get(pid)
            if p["status"] == "authorized":
                self.core.step(pid, "PaymentFailed", {"reasons": [*p["reasons"], why]})
        log.warning("payments.settlement_refused", payments=len(ids), reason=why)

    def _open(self, bic: str, asset: str, ids: list[str]) -> str | None:
        cp = self.rail.counterparties[bic]
        sid = "stl_" + os.urandom(14).hex()  # 32 characters: fits MsgId (Max35Text)
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as c:
            # re-read in the transaction: a concurrent window may have taken some already
            taken = set(
                c.execute(
                    select(iso_settlement_items.c.payment_id).where(
                        iso_settlement_items.c.payment_id.in_(ids)
                    )
                ).scalars()
            )
            items = [
                r
                for r in c.execute(select(payments).where(payments.c.id.in_(ids))).all()
                if r.status == "authorized" and r.id not in taken
            ]
            items.sort(key=lambda r: ids.index(r.id))
            if not items:
                return None
            decimals = c.execute(
                select(assets.c.decimals).where(assets.c.code == asset)
            ).scalar_one()
            net = sum(r.amount for r in items)
            msg = build_settlement(
                NetSettlement(
                    settlement_id=sid,
                    currency=asset,
                    net_amount=Decimal(net).scaleb(-decimals),
                    ours=self.ours,
                    counterparty=Party(cp.name, cp.bic, cp.iban),
                    end_to_end_ids=tuple(r.end_to_end_id for r in items),
                    settlement_date=now.date(),
                ),
                created=now,
            )
            c.execute(
                insert(iso_settlements).values(
                    id=sid, counterparty=bic, asset=asset, net_amount=str(net), uetr=msg.uetr,
                    document=msg.document, unsigned=msg.unsigned.decode(), status="signing",
                    created_at=now,
                )
            )  # fmt: skip
            c.execute(
                insert(iso_settlement_items),
                [{"settlement_id": sid, "payment_id": r.id} for r in items],
            )
        log.info(
            "payments.settlement_opened", settlement_id=sid, counterparty=bic, payments=len(items)
        )
        return sid

    # -- 2. sign and 3. release -------------------------------------------------------------
    def advance(self, sid: str) -> str:
        with self.engine.connect() as c:
            s = c.execute(select(iso_settlements).where(iso_settlements.c.id == sid)).one()
        if s.status not in OPEN:
            return str(s.status)
        try:
            if s.sign_request_id:
                sr = self.custody.get_sign_request(s.sign_request_id)
            else:
                sr = self.custody.sign(
                    self.rail.key_id,
                    kind="iso20022",
                    payload={"xml": s.document},
                    idempotency_key=sign_idempotency_key(sid),
                    wait=False,
                )
        except (Forbidden, ValidationFailed, NotFound) as exc:
            return self._fail(sid, f"custody refused to sign settlement {sid}: {exc}")
        if sr.status == "signed" and sr.signature:
            return self._release(s, sr.signature, sr.id)
        if sr.status in ("pending_approval", "signing"):
            status = "pending_approval" if sr.status == "pending_approval" else "signing"
            with self.engine.begin() as c:
                c.execute(
                    update(iso_settlements)
                    .where(iso_settlements.c.id == sid)
                    .values(status=status, sign_request_id=sr.id)
                )
            return status
        why = sr.error.detail if sr.error and sr.error.detail else sr.status
        return self._fail(sid, f"custody sign request {sr.id} {sr.status}: {why}")

    def _release(self, s: Any, signature: str, sign_request_id: str) -> str:
        xml = xmldsig.insert_signature(
            s.unsigned.encode(), bytes.fromhex(signature), key_name=self.rail.key_id
        )
        report = verify_settlement(xml, self.public_key)
        if not report.valid:
            f = report.failure
            return self._void(s.id, f"the signed file does not verify: {f.name if f else '?'}")
        with self.engine.begin() as c:
            ids = (
                c.execute(
                    select(iso_settlement_items.c.payment_id).where(
                        iso_settlement_items.c.settlement_id == s.id
                    )
                )
                .scalars()
                .all()
            )
            rows = [r._asdict() for r in c.execute(select(payments).where(payments.c.id.in_(ids)))]
            moved = [r["id"] for r in rows if r["status"] != "authorized"]
            if moved or len(rows) != len(ids):
                void = True
            else:
                void = False
                self.core.settle_netted(
                    c, s.id, s.counterparty, s.asset, rows, signature, sign_request_id
                )
                c.execute(
                    update(iso_settlements)
                    .where(iso_settlements.c.id == s.id)
                    .values(status="sent", signed=xml.decode(), sign_request_id=sign_request_id)
                )
        if void:
            return self._void(s.id, f"payments changed before release: {', '.join(moved)}")
        log.info("payments.settlement_sent", settlement_id=s.id, counterparty=s.counterparty)
        return "sent"

    def _void(self, sid: str, why: str) -> str:
        """Nothing released; the payments are free for the next window."""
        with self.engine.begin() as c:
            c.execute(
                delete(iso_settlement_items).where(iso_settlement_items.c.settlement_id == sid)
            )
            c.execute(
                update(iso_settlements)
                .where(iso_settlements.c.id == sid)
                .values(status="void", detail=why)
            )
        log.warning("payments.settlement_void", settlement_id=sid, reason=why)
        return "void"

    def _fail(self, sid: str, why: str) -> str:
        """Custody will not sign it: its payments fail (their holds released)."""
        with self.engine.connect() as c:
            ids = (
                c.execute(
                    select(iso_settlement_items.c.payment_id).where(
                        iso_settlement_items.c.settlement_id == sid
                    )
                )
                .scalars()
                .all()
            )
        self._fail_payments(list(ids), why)
        with self.engine.begin() as c:
            c.execute(
                update(iso_settlements)
                .where(iso_settlements.c.id == sid)
                .values(status="failed", detail=why)
            )
        log.warning("payments.settlement_failed", settlement_id=sid, reason=why)
        return "failed"

    def run(self) -> list[str]:
        """One window: open the new settlements, then advance every open one (new and
        waiting); the ids touched."""
        self.open_windows()
        with self.engine.connect() as c:
            ids = (
                c.execute(
                    select(iso_settlements.c.id)
                    .where(iso_settlements.c.status.in_(OPEN))
                    .order_by(iso_settlements.c.created_at)
                )
                .scalars()
                .all()
            )
        for sid in ids:
            try:
                self.advance(sid)
            except IsoError as exc:
                self._void(sid, str(exc))
            except CustodyError as exc:  # unreachable or busy: the next run asks again
                log.warning("payments.custody_unavailable", settlement_id=sid, error=str(exc))
        return list(ids)

    def ids(self) -> list[str]:
        with self.engine.connect() as c:
            q = select(iso_settlements.c.id).order_by(iso_settlements.c.created_at)
            return list(c.execute(q).scalars())

    def get(self, sid: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            r = c.execute(select(iso_settlements).where(iso_settlements.c.id == sid)).first()
            if r is None:
                return None
            n = len(
                c.execute(
                    select(iso_settlement_items.c.payment_id).where(
                        iso_settlement_items.c.settlement_id == sid
                    )
                ).all()
            )
        return {**r._asdict(), "payment_count": n}
