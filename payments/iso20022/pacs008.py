"""pacs.008.001.08 settlement files: one per counterparty from a netted settlement.

Netting (decided here, and what custody's ``iso20022`` kind keeps strict): a counterparty's
net position over a settlement window becomes ONE interbank credit transfer, one
``CdtTrfTxInf`` carrying the net amount from our agent to the counterparty's, with its own
end-to-end id (the settlement's) and a fresh UETR (UUID v4), and the end-to-end ids of
every payment it nets, one per ``RmtInf/Ustrd`` line, in order. So a signer node's decoded
intent, the policy and the approver see exactly one creditor, one amount and the list of
payments it settles (:class:`custody.kinds.iso20022.Pacs008` ``remittance``). A window
where the counterparty owes us (net <= 0) sends nothing from our side and is refused here.

Each message is wrapped with its Business Application Header (head.001.001.02) in the
envelope of :mod:`custody.xmldsig`; the ``Document`` is validated against the packaged
pacs.008.001.08 XSD before it is returned (only the Document: the BAH XSD is not shipped,
its fields are checked by :func:`custody.xmldsig.verify_settlement`). Signing: the
``document`` string is the custody payload (``kind="iso20022"``, ``{"xml": document}``,
an Ed25519 key); :meth:`SettlementMessage.signed` places the returned signature.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from lxml import etree

from custody import xmldsig
from custody.kinds import iso20022 as kind
from custody.kinds._common import KindError
from payments.iso20022._xml import (
    IsoError,
    Problem,
    check_bic,
    check_iban,
    exponent,
    schema,
    xpath,
)

__all__ = ["NAMESPACE", "Party", "NetSettlement", "SettlementMessage", "build_settlement"]

NAMESPACE: Final = xmldsig.PACS008_NS
_N: Final = f"{{{NAMESPACE}}}"
MAX_NETTED: Final = kind.MAX_REMITTANCE_LINES


@dataclass(frozen=True)
class Party:
    """An institution's side of the transfer: its name, agent BIC and account IBAN."""

    name: str
    bic: str
    iban: str


@dataclass(frozen=True)
class NetSettlement:
    """One counterparty's net position: ``net_amount`` of ``currency`` that we (``ours``)
    pay ``counterparty``, settling the payments ``end_to_end_ids``. ``settlement_id`` (1-35
    characters) is the message id and the transfer's end-to-end id."""

    settlement_id: str
    currency: str
    net_amount: Decimal
    ours: Party
    counterparty: Party
    end_to_end_ids: tuple[str, ...]
    settlement_date: dt.date
    settlement_method: str = "INDA"  # the instructed agent settles (SettlementMethod1Code)


@dataclass(frozen=True)
class SettlementMessage:
    """A pacs.008 ready to sign: ``document`` (the custody payload's ``xml``), ``unsigned``
    (the envelope with the AppHdr, no signature yet)."""

    settlement_id: str
    counterparty_bic: str
    uetr: str
    amount: Decimal
    currency: str
    end_to_end_ids: tuple[str, ...]
    document: str
    unsigned: bytes

    def signed(self, signature: bytes, *, key_name: str | None = None) -> bytes:
        """The settlement file with the Ed25519 ``signature`` custody returned for the
        ``iso20022`` request of :attr:`document` in ``AppHdr/Sgntr``."""
        return xmldsig.insert_signature(self.unsigned, signature, key_name=key_name)


def _refuse(field: str, reason: str) -> IsoError:
    return IsoError([Problem(0, field, reason)])


def _check(s: NetSettlement) -> str:
    if not 1 <= len(s.settlement_id) <= 35 or s.settlement_id != s.settlement_id.strip():
        raise _refuse("settlement_id", "1-35 characters without surrounding spaces")
    try:
        exp = exponent(s.currency)
        for side, p in (("ours", s.ours), ("counterparty", s.counterparty)):
            check_bic(p.bic)
            check_iban(p.iban)
            if not 1 <= len(p.name) <= 140:
                raise ValueError(f"{side}.name: 1-140 characters")
    except ValueError as exc:
        raise _refuse("settlement", str(exc)) from None
    if s.net_amount <= 0:
        raise _refuse(
            "net_amount", f"{s.net_amount}: the counterparty owes us; nothing is sent from our side"
        )
    try:
        q = s.net_amount.quantize(Decimal(1).scaleb(-exp))
    except InvalidOperation:
        raise _refuse("net_amount", f"{s.net_amount}: too many digits") from None
    if q != s.net_amount:
        raise _refuse("net_amount", f"{s.net_amount} has more than {exp} decimals")
    if len(q.as_tuple().digits) > 18:  # ActiveCurrencyAndAmount: totalDigits 18
        raise _refuse("net_amount", f"{s.net_amount}: more than 18 digits")
    if not s.end_to_end_ids or len(s.end_to_end_ids) > MAX_NETTED:
        raise _refuse("end_to_end_ids", f"1-{MAX_NETTED} netted payments per message")
    for e2e in s.end_to_end_ids:
        if not 1 <= len(e2e) <= 35 or e2e != e2e.strip():
            raise _refuse("end_to_end_ids", f"{e2e!r}: 1-35 characters without spaces around")
    return f"{q:f}"


def build_settlement(
    s: NetSettlement, *, created: dt.datetime, uetr: uuid.UUID | None = None
) -> SettlementMessage:
    """The pacs.008.001.08 of one net settlement (module docstring), XSD-validated."""
    amount = _check(s)
    if created.tzinfo is None:
        raise _refuse("created", "must be timezone-aware")
    stamp = created.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    uid = str(uetr or uuid.uuid4())
    if uuid.UUID(uid).version != 4:
        raise _refuse("uetr", "must be a version-4 UUID")

    def el(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        child = etree.SubElement(parent, _N + name)
        if text is not None:
            child.text = text
        return child

    doc = etree.Element(_N + "Document", nsmap={None: NAMESPACE})  # type: ignore[dict-item]
    msg = el(doc, "FIToFICstmrCdtTrf")
    grp = el(msg, "GrpHdr")
    el(grp, "MsgId", s.settlement_id)
    el(grp, "CreDtTm", stamp)
    el(grp, "NbOfTxs", "1")
    el(grp, "TtlIntrBkSttlmAmt", amount).set("Ccy", s.currency)
    el(grp, "IntrBkSttlmDt", s.settlement_date.isoformat())
    el(el(grp, "SttlmInf"), "SttlmMtd", s.settlement_method)
    tx = el(msg, "CdtTrfTxInf")
    pmt = el(tx, "PmtId")
    el(pmt, "InstrId", s.settlement_id)
    el(pmt, "EndToEndId", s.settlement_id)
    el(pmt, "UETR", uid)
    el(tx, "IntrBkSttlmAmt", amount).set("Ccy", s.currency)
    el(tx, "ChrgBr", "SLEV")
    for role, party in (("Dbtr", s.ours), ("Cdtr", s.counterparty)):
        if role == "Cdtr":
            el(el(el(tx, "CdtrAgt"), "FinInstnId"), "BICFI", party.bic)
        el(el(tx, role), "Nm", party.name)
        el(el(el(tx, f"{role}Acct"), "Id"), "IBAN", party.iban)
        if role == "Dbtr":
            el(el(el(tx, "DbtrAgt"), "FinInstnId"), "BICFI", party.bic)
    rmt = el(tx, "RmtInf")
    for e2e in s.end_to_end_ids:
        el(rmt, "Ustrd", e2e)
    errors = [
        Problem(0, xpath(e.elem) if e.elem is not None else "/", e.reason or str(e))  # type: ignore[arg-type]
        for e in schema("pacs.008.001.08").iter_errors(doc)
    ]
    if errors:  # our own builder is wrong: never hand out an invalid message
        raise IsoError(errors)
    document = etree.tostring(doc, encoding="unicode")
    try:
        kind.decode({"xml": document})  # what a signer node will decode, refused here first
    except KindError as exc:
        raise _refuse(f"document.{exc.field}", exc.detail) from None
    unsigned = xmldsig.envelope(
        document=document,
        sender_bic=s.ours.bic,
        receiver_bic=s.counterparty.bic,
        message_id=s.settlement_id,
        created=stamp,
    )
    return SettlementMessage(
        settlement_id=s.settlement_id,
        counterparty_bic=s.counterparty.bic,
        uetr=uid,
        amount=Decimal(amount),
        currency=s.currency,
        end_to_end_ids=s.end_to_end_ids,
        document=document,
        unsigned=unsigned,
    )


def build_settlements(
    settlements: Iterable[NetSettlement], *, created: dt.datetime
) -> list[SettlementMessage]:
    """:func:`build_settlement` for each counterparty's net settlement."""
    return [build_settlement(s, created=created) for s in settlements]
