"""pain.001.001.09 intake: a customer credit transfer initiation file, validated against the
ISO 20022 XSD, each ``CdtTrfTxInf`` becoming a :class:`PaymentInstruction`.

:func:`parse_pain001` refuses a file with every fault it finds, each naming the line and the
field as an XPath (:class:`payments.iso20022.IsoError`, :class:`Problem`):

1. defused parsing (no DTD, entity or processing instruction, nothing from the network);
2. the namespace (``urn:iso:std:iso:20022:tech:xsd:pain.001.001.09``) and root;
3. the XSD (``xmlschema``; each error carries the element's ``sourceline``);
4. what the XSD cannot say: IBAN check digits and country lengths, BIC country codes
   (schwifty), the currency an ISO 4217 code with at most its exponent's decimals (the XSD
   allows five for every currency), credit transfers only (``PmtMtd`` ``TRF``), the
   ``NbOfTxs`` and ``CtrlSum`` of the group and of each ``PmtInf`` equal to what the file
   holds, and end-to-end ids unique in the file.

A payment needs a creditor agent BIC and a creditor IBAN (the settlement rail,
:mod:`payments.iso20022.pacs008`, sends it to that bank); a transaction without them is
refused with its line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lxml import etree

from payments.iso20022._xml import (
    IsoError,
    Problem,
    check_amount,
    check_bic,
    check_iban,
    parse_defused,
    schema,
    xpath,
)

__all__ = ["NAMESPACE", "PaymentInstruction", "Pain001", "parse_pain001"]

NAMESPACE: Final = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
_N: Final = f"{{{NAMESPACE}}}"
MAX_TRANSACTIONS: Final = 10_000


@dataclass(frozen=True)
class PaymentInstruction:
    """One ``CdtTrfTxInf`` with what its ``PmtInf`` says for it."""

    message_id: str  # GrpHdr/MsgId
    payment_info_id: str  # PmtInf/PmtInfId
    instruction_id: str | None  # PmtId/InstrId
    end_to_end_id: str  # PmtId/EndToEndId
    debtor_name: str | None
    debtor_account: str  # IBAN
    debtor_agent: str  # BIC
    creditor_name: str | None
    creditor_account: str  # IBAN
    creditor_agent: str  # BIC
    amount: Decimal
    currency: str  # ISO 4217
    requested_execution_date: dt.date
    remittance_info: tuple[str, ...]  # RmtInf/Ustrd lines
    line: int  # where the CdtTrfTxInf starts in the file


@dataclass(frozen=True)
class Pain001:
    message_id: str
    created: str  # GrpHdr/CreDtTm as written
    initiating_party: str | None
    payments: tuple[PaymentInstruction, ...]


def _line(el: etree._Element) -> int:
    return int(getattr(el, "sourceline", 0) or 0)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, el: etree._Element, reason: str, child: str | None = None) -> None:
        path = xpath(el) + (f"/{child}" if child else "")
        self.problems.append(Problem(_line(el), path, reason))

    def checked(
        self, parent: etree._Element, path: str, check: Callable[[str], str], missing: str
    ) -> str:
        """The text at ``path`` under ``parent`` through ``check``; a missing element (named
        by ``parent`` and ``path``) or a refused value is recorded, and gives ``""``."""
        el = _opt(parent, "^" + path)
        if el is None:
            self.add(parent, missing, path)
            return ""
        try:
            return check(el.text or "")
        except ValueError as exc:
            self.add(el, str(exc))
            return ""


MAX_PROBLEMS: Final = 100  # reported per file; a file this wrong is refused either way


def _xsd_problems(root: etree._Element) -> list[Problem]:
    out: list[Problem] = []
    for err in schema("pain.001.001.09").iter_errors(root):
        if len(out) == MAX_PROBLEMS:
            out.append(Problem(0, "/", f"more than {MAX_PROBLEMS} schema errors; stopped"))
            break
        el: Any = err.elem
        if el is not None and isinstance(getattr(el, "tag", None), str):
            line, path = _line(el), xpath(el)
        else:
            line, path = 0, str(err.path or "/")
        # "{urn:...}PmtId" -> "PmtId": the namespace is the file's, said once at the root
        reason = re.sub(r"\{[^}]*\}", "", (err.reason or str(err)).strip())
        out.append(Problem(line, path, reason))
    return out


def _opt(el: etree._Element, path: str) -> etree._Element | None:
    found = el.find(path.replace("/", f"/{_N}").replace("^", _N))
    return found


def _req_text(el: etree._Element, path: str) -> str:
    found = _opt(el, path)
    assert found is not None and found.text is not None  # the XSD made sure
    return found.text


def _opt_text(el: etree._Element, path: str) -> str | None:
    found = _opt(el, path)
    return None if found is None else found.text


def parse_pain001(data: bytes) -> Pain001:
    """Parse and validate a pain.001.001.09 file (module docstring); raises
    :class:`IsoError` listing every problem with its line and field."""
    root = parse_defused(data)
    q = etree.QName(root)
    if q.localname != "Document" or q.namespace != NAMESPACE:
        raise IsoError(
            [
                Problem(
                    _line(root),
                    "/" + q.localname,
                    f"the root must be Document in {NAMESPACE} "
                    f"(got {q.namespace or 'no namespace'})",
                )
            ]
        )
    xsd = _xsd_problems(root)
    if xsd:
        raise IsoError(xsd)
    c = _Collector()
    msg = root[0]
    grp = msg.find(f"{_N}GrpHdr")
    assert grp is not None
    message_id = _req_text(grp, "^MsgId")
    payments: list[PaymentInstruction] = []
    seen: dict[str, int] = {}
    total = Decimal(0)
    blocks = msg.findall(f"{_N}PmtInf")
    sums_known = True  # False once an amount is refused: its CtrlSum would only echo that
    for block in blocks:
        block_sum: Decimal | None = Decimal(0)
        txs = block.findall(f"{_N}CdtTrfTxInf")
        method = _opt(block, "^PmtMtd")
        if method is not None and method.text != "TRF":
            c.add(method, f"{method.text}: only credit transfers (TRF) are accepted")
        debtor_iban = c.checked(
            block, "DbtrAcct/Id/IBAN", check_iban, "the debtor account must be an IBAN"
        )
        debtor_bic = c.checked(
            block, "DbtrAgt/FinInstnId/BICFI", check_bic, "the debtor agent needs a BIC"
        )
        when = _execution_date(c, block)
        for tx in txs:
            if len(payments) >= MAX_TRANSACTIONS:
                c.add(tx, f"more than {MAX_TRANSACTIONS} transactions in one file")
                break
            e2e_el = _opt(tx, "^PmtId/EndToEndId")
            assert e2e_el is not None and e2e_el.text is not None
            e2e = e2e_el.text
            if e2e in seen:
                c.add(e2e_el, f"{e2e!r} already used on line {seen[e2e]}")
            seen.setdefault(e2e, _line(e2e_el))
            amt = _opt(tx, "^Amt/InstdAmt")
            amount, currency = Decimal(0), ""
            if amt is None:
                c.add(tx, "only an instructed amount (InstdAmt) is accepted", "Amt/InstdAmt")
            else:
                currency = str(amt.get("Ccy"))
                try:
                    amount = check_amount(amt.text or "", currency)
                except (ValueError, InvalidOperation) as exc:
                    c.add(amt, str(exc))
                    block_sum = None
            creditor_bic = c.checked(
                tx, "CdtrAgt/FinInstnId/BICFI", check_bic, "the creditor agent needs a BIC"
            )
            creditor_iban = c.checked(
                tx, "CdtrAcct/Id/IBAN", check_iban, "the creditor account must be an IBAN"
            )
            if block_sum is not None:
                block_sum += amount
            payments.append(
                PaymentInstruction(
                    message_id=message_id,
                    payment_info_id=_req_text(block, "^PmtInfId"),
                    instruction_id=_opt_text(tx, "^PmtId/InstrId"),
                    end_to_end_id=e2e,
                    debtor_name=_opt_text(block, "^Dbtr/Nm"),
                    debtor_account=debtor_iban,
                    debtor_agent=debtor_bic,
                    creditor_name=_opt_text(tx, "^Cdtr/Nm"),
                    creditor_account=creditor_iban,
                    creditor_agent=creditor_bic,
                    amount=amount,
                    currency=currency,
                    requested_execution_date=when,
                    remittance_info=tuple(
                        u.text or "" for u in tx.findall(f"{_N}RmtInf/{_N}Ustrd")
                    ),
                    line=_line(tx),
                )
            )
        _totals(c, block, len(txs), block_sum)
        if block_sum is None:
            sums_known = False
        else:
            total += block_sum
    _totals(c, grp, len(payments), total if sums_known else None)
    if c.problems:
        raise IsoError(c.problems[:MAX_PROBLEMS])
    return Pain001(
        message_id=message_id,
        created=_req_text(grp, "^CreDtTm"),
        initiating_party=_opt_text(grp, "^InitgPty/Nm"),
        payments=tuple(payments),
    )


def _execution_date(c: _Collector, block: etree._Element) -> dt.date:
    """``ReqdExctnDt``: ``Dt`` (an ISO date) or ``DtTm`` (its date as written); an XSD date
    with a time zone or a fraction Python cannot read is refused, naming it."""
    el = _opt(block, "^ReqdExctnDt/Dt")
    if el is None:
        el = _opt(block, "^ReqdExctnDt/DtTm")
    assert el is not None  # the XSD's choice
    try:
        return dt.date.fromisoformat((el.text or "")[:10])
    except ValueError:
        c.add(el, f"{el.text!r}: not a date (YYYY-MM-DD)")
        return dt.date.min


def _totals(c: _Collector, el: etree._Element, count: int, total: Decimal | None) -> None:
    """``NbOfTxs`` and ``CtrlSum`` (the plain sum of the amounts, any currencies) of a group
    header or a ``PmtInf`` agree with the transactions it holds (``total`` None: an amount
    was refused, the sum is not checked)."""
    nb = _opt(el, "^NbOfTxs")
    if nb is not None and int(nb.text or "0") != count:
        c.add(nb, f"says {nb.text} transactions, the file holds {count}")
    cs = _opt(el, "^CtrlSum")
    if cs is not None and total is not None and Decimal(cs.text or "0") != total:
        c.add(cs, f"says {cs.text}, the amounts sum to {total}")
