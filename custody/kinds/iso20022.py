"""``iso20022``: an ISO 20022 pacs.008 (FI to FI customer credit transfer) message.

Payload ``{"xml": "..."}``: one ``Document`` in a ``urn:iso:std:iso:20022:tech:xsd:
pacs.008.001.NN`` namespace with one ``FIToFICstmrCdtTrf`` holding exactly one
``CdtTrfTxInf`` (``GrpHdr/NbOfTxs`` = 1). Decoded: message id, UETR, interbank settlement
amount and currency, debtor and creditor agents (BICFI) and accounts (IBAN), and the
debtor's and creditor's names when present. The one message signed is
``SHA-256(exclusive XML canonicalization 1.0 of the document, without comments)``
(W3C xml-exc-c14n), so formatting that C14N removes does not change it.

Parsing is defused: a DTD, an entity declaration or reference, a processing instruction
or anything that could reach the network is refused; lxml never loads a DTD, resolves an
entity or builds a huge tree. Each field must occur exactly once where it belongs, and is
checked against its ISO 20022 pattern (BIC, IBAN with its mod-97 check digits, UETR as a
version-4 UUID, amount with at most 5 fraction digits and 18 digits in all, ISO 4217 code).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lxml import etree

from custody.kinds._common import Intent, KindError, only_fields

__all__ = ["KIND", "Pacs008", "decode", "canonical_form", "MAX_XML"]

KIND: Final = "iso20022"
MAX_XML: Final = 1024 * 1024  # characters
NAMESPACE: Final = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:pacs\.008\.001\.\d{2}$")
_BIC: Final = re.compile(r"^[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$")
_IBAN: Final = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Za-z0-9]{1,30}$")
_UETR: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_CCY: Final = re.compile(r"^[A-Z]{3}$")
_AMOUNT: Final = re.compile(r"^(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,5})?$")
_FORBIDDEN: Final = re.compile(
    r"<!DOCTYPE|<!ENTITY|<\?(?!xml[ \t\r\n])|&(?!(?:lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)"
)


@dataclass(frozen=True)
class Pacs008(Intent):
    namespace: str
    message_id: str
    uetr: str
    amount: Decimal
    currency: str
    debtor_agent: str  # BIC
    creditor_agent: str  # BIC
    debtor_account: str  # IBAN
    creditor_account: str  # IBAN
    debtor_name: str | None
    creditor_name: str | None
    digest: bytes  # SHA-256 of the exclusive C14N form

    def summary(self) -> dict[str, Any]:
        return {
            "message_type": self.namespace.rsplit(":", 1)[1],
            "message_id": self.message_id,
            "uetr": self.uetr,
            "amount": str(self.amount),
            "currency": self.currency,
            "debtor_agent": self.debtor_agent,
            "creditor_agent": self.creditor_agent,
            "debtor_account": self.debtor_account,
            "creditor_account": self.creditor_account,
            "debtor_name": self.debtor_name,
            "creditor_name": self.creditor_name,
            "digest": self.digest.hex(),
        }


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def _parse(xml: object) -> etree._Element:
    if not isinstance(xml, str):
        raise KindError(KIND, "xml", "must be a string")
    if len(xml) > MAX_XML:
        raise KindError(KIND, "xml", f"longer than {MAX_XML} characters")
    bad = _FORBIDDEN.search(xml)
    if bad:
        raise KindError(
            KIND, "xml", f"{bad.group(0)!r}: DTDs, entities and processing instructions are refused"
        )
    try:
        data = xml.encode("utf-8")
    except UnicodeEncodeError:
        raise KindError(KIND, "xml", "not encodable as UTF-8") from None
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise KindError(KIND, "xml", f"not well-formed XML: {str(exc)[:120]}") from None
    tree = root.getroottree()
    if getattr(tree.docinfo, "doctype", "") or tree.docinfo.internalDTD is not None:
        raise KindError(KIND, "xml", "DTDs are refused")
    encoding = tree.docinfo.encoding
    if encoding and encoding.upper() not in ("UTF-8", "UTF8"):
        raise KindError(KIND, "xml", "only UTF-8 is accepted")
    for node in root.iter():
        if not isinstance(node.tag, str):  # comment, PI or entity reference
            if isinstance(node, etree._Comment):
                continue
            raise KindError(KIND, "xml", "processing instructions and entities are refused")
    return root


def canonical_form(root: etree._Element) -> bytes:
    """Exclusive XML canonicalization 1.0 without comments of the document of ``root``."""
    out = etree.tostring(root.getroottree(), method="c14n", exclusive=True, with_comments=False)
    assert isinstance(out, bytes)
    return out


def _one(parent: etree._Element, path: str, ns: str, name: str) -> etree._Element:
    found = parent.findall(path.replace("/", f"/{{{ns}}}").replace("^", f"{{{ns}}}"))
    if len(found) != 1:
        raise KindError(KIND, name, "missing" if not found else "occurs more than once")
    el = found[0]
    assert isinstance(el, etree._Element)
    return el


def _text(el: etree._Element, name: str, pattern: re.Pattern[str] | None, max_len: int = 35) -> str:
    if len(el):
        raise KindError(KIND, name, "must be text, not elements")
    text = el.text or ""
    if not text or len(text) > max_len or text != text.strip():
        raise KindError(KIND, name, f"must be 1-{max_len} characters without surrounding spaces")
    if pattern is not None and not pattern.match(text):
        raise KindError(KIND, name, "does not match its ISO 20022 pattern")
    return text


def _iban(text: str, name: str) -> str:
    digits = "".join(str(int(c, 36)) for c in (text[4:] + text[:4]).upper())
    if int(digits) % 97 != 1:
        raise KindError(KIND, name, "IBAN check digits are wrong")
    return text


def _optional_name(tx: etree._Element, path: str, ns: str, name: str) -> str | None:
    found = tx.findall(path.replace("/", f"/{{{ns}}}").replace("^", f"{{{ns}}}"))
    if not found:
        return None
    if len(found) > 1:
        raise KindError(KIND, name, "occurs more than once")
    return _text(found[0], name, None, 140)


def decode(payload: Mapping[str, Any]) -> Pacs008:
    """Decode an ``iso20022`` payload; :class:`KindError` names the field."""
    only_fields(KIND, payload, {"xml"}, {"xml"})
    root = _parse(payload["xml"])
    tag = etree.QName(root)
    ns = tag.namespace or ""
    if tag.localname != "Document" or not NAMESPACE.match(ns):
        raise KindError(KIND, "xml.Document", "must be a pacs.008.001.NN Document")
    if len(root) != 1:
        raise KindError(KIND, "xml.Document", "must hold exactly one FIToFICstmrCdtTrf")
    msg = _one(root, "^FIToFICstmrCdtTrf", ns, "FIToFICstmrCdtTrf")
    message_id = _text(_one(msg, "^GrpHdr/MsgId", ns, "GrpHdr.MsgId"), "GrpHdr.MsgId", None)
    if _text(_one(msg, "^GrpHdr/NbOfTxs", ns, "GrpHdr.NbOfTxs"), "GrpHdr.NbOfTxs", None) != "1":
        raise KindError(KIND, "GrpHdr.NbOfTxs", "must be 1 (one transaction per request)")
    tx = _one(msg, "^CdtTrfTxInf", ns, "CdtTrfTxInf")
    uetr = _text(_one(tx, "^PmtId/UETR", ns, "PmtId.UETR"), "PmtId.UETR", _UETR, 36)
    amt = _one(tx, "^IntrBkSttlmAmt", ns, "IntrBkSttlmAmt")
    if set(amt.attrib) != {"Ccy"}:
        raise KindError(KIND, "IntrBkSttlmAmt.Ccy", "must be the one attribute")
    currency = str(amt.attrib["Ccy"])
    if not _CCY.match(currency):
        raise KindError(KIND, "IntrBkSttlmAmt.Ccy", "must be an ISO 4217 code")
    text = _text(amt, "IntrBkSttlmAmt", _AMOUNT, 24)
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise KindError(KIND, "IntrBkSttlmAmt", "not a decimal") from None
    if len(text.replace(".", "").lstrip("0")) > 18:
        raise KindError(KIND, "IntrBkSttlmAmt", "more than 18 digits")
    if amount <= 0:
        raise KindError(KIND, "IntrBkSttlmAmt", "must be positive")
    bics = {}
    for role in ("DbtrAgt", "CdtrAgt"):
        name = f"{role}.FinInstnId.BICFI"
        bics[role] = _text(_one(tx, f"^{role}/FinInstnId/BICFI", ns, name), name, _BIC, 11)
    ibans = {}
    for role in ("DbtrAcct", "CdtrAcct"):
        name = f"{role}.Id.IBAN"
        ibans[role] = _iban(_text(_one(tx, f"^{role}/Id/IBAN", ns, name), name, _IBAN, 34), name)
    digest = hashlib.sha256(canonical_form(root)).digest()
    return Pacs008(
        kind=KIND,
        messages=(digest,),
        namespace=ns,
        message_id=message_id,
        uetr=uetr,
        amount=amount,
        currency=currency,
        debtor_agent=bics["DbtrAgt"],
        creditor_agent=bics["CdtrAgt"],
        debtor_account=ibans["DbtrAcct"],
        creditor_account=ibans["CdtrAcct"],
        debtor_name=_optional_name(tx, "^Dbtr/Nm", ns, "Dbtr.Nm"),
        creditor_name=_optional_name(tx, "^Cdtr/Nm", ns, "Cdtr.Nm"),
        digest=digest,
    )
