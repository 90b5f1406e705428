"""``iso20022``: an ISO 20022 pacs.008 (FI to FI customer credit transfer) message.

Payload ``{"xml": "..."}``: one ``Document`` in a ``urn:iso:std:iso:20022:tech:xsd:
pacs.008.001.NN`` namespace with one ``FIToFICstmrCdtTrf`` holding exactly one
``CdtTrfTxInf`` (``GrpHdr/NbOfTxs`` = 1). Decoded: message id, end-to-end id, UETR,
interbank settlement amount and currency, debtor and creditor agents (BICFI) and accounts
(IBAN), the debtor's and creditor's names when present, and the unstructured remittance
lines (``RmtInf/Ustrd``; a net settlement lists the end-to-end ids it nets there, see
:mod:`payments.iso20022.pacs008`). One transaction per request keeps what the policy and
the approver see exact: one creditor, one amount.

What is signed: a W3C XML Signature (XMLDSig 1.1, section 3.1 "Core Generation") over the
document, whose ``SignedInfo`` the signer builds itself from a fixed template
(:func:`signed_info`), never takes from the coordinator:

1. ``digest = SHA-256(exc-c14n(Document))``: exclusive XML canonicalization 1.0 without
   comments (W3C xml-exc-c14n), so formatting that C14N removes does not change it
   (XMLDSig section 3.1.1 "Reference Generation", DigestMethod ``xmlenc#sha256``);
2. the message is the exclusive C14N of ``SignedInfo`` (section 3.1.2 "Signature
   Generation"): CanonicalizationMethod exc-c14n, SignatureMethod
   ``http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519`` (RFC 9231 section 2.3,
   EdDSA: PureEdDSA over the canonical SignedInfo octets, RFC 8032 section 5.1.6), one
   ``Reference`` without a ``URI`` (the ISO 20022 Business Application Header convention:
   the application resolves it to the ``Document`` beside the ``AppHdr``), one exc-c14n
   ``Transform`` and the digest of step 1. The template is already canonical: its exc-c14n
   is itself, byte for byte.

So the coordinator cannot make a node sign anything but a SignedInfo over the document the
node decoded and showed to its policy, and the signature verifies as a standard XMLDSig
(:func:`custody.xmldsig.verify_settlement`). Only Ed25519 keys sign this kind (the one
XMLDSig signature method we emit). Before: the message was ``SHA-256(exc-c14n(Document))``
itself, which no XMLDSig verifier accepts; no data depended on it (dev only).

Parsing is defused: a DTD, an entity declaration or reference, a processing instruction
or anything that could reach the network is refused; lxml never loads a DTD, resolves an
entity or builds a huge tree. Nothing that would move money or name a party the policy and
the approver do not see is accepted (an allowlist of elements: no intermediary or
reimbursement agent, ultimate party, agent instruction, supplementary data, or account
identification other than the IBAN; a group total must equal the transaction). Each field
must occur exactly once where it belongs, and is
checked against its ISO 20022 pattern (BIC, IBAN with its mod-97 check digits, UETR as a
version-4 UUID, amount with at most 5 fraction digits and 18 digits in all, ISO 4217 code).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lxml import etree

from custody.kinds._common import Intent, KindError, only_fields

__all__ = [
    "KIND",
    "Pacs008",
    "decode",
    "canonical_form",
    "signed_info",
    "MAX_XML",
    "DSIG_NS",
    "EXC_C14N",
    "EDDSA_ED25519",
    "SHA256",
]

KIND: Final = "iso20022"
MAX_XML: Final = 1024 * 1024  # characters
NAMESPACE: Final = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:pacs\.008\.001\.\d{2}$")
_BIC: Final = re.compile(r"^[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$")
_IBAN: Final = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Za-z0-9]{1,30}$")
_UETR: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_CCY: Final = re.compile(r"^[A-Z]{3}$")
_AMOUNT: Final = re.compile(r"^(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,5})?$")
MAX_REMITTANCE_LINES: Final = 64  # RmtInf/Ustrd lines decoded (each 1-140 characters)

# XMLDSig algorithm identifiers (W3C XMLDSig 1.1 section 6; RFC 9231 section 2.3 for EdDSA)
DSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
EDDSA_ED25519: Final = "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
SHA256: Final = "http://www.w3.org/2001/04/xmlenc#sha256"
_FORBIDDEN: Final = re.compile(
    r"<!DOCTYPE|<!ENTITY|<\?(?!xml[ \t\r\n])|&(?!(?:lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)"
)


@dataclass(frozen=True)
class Pacs008(Intent):
    namespace: str
    message_id: str
    end_to_end_id: str
    uetr: str
    amount: Decimal
    currency: str
    debtor_agent: str  # BIC
    creditor_agent: str  # BIC
    debtor_account: str  # IBAN
    creditor_account: str  # IBAN
    debtor_name: str | None
    creditor_name: str | None
    remittance: tuple[str, ...]  # RmtInf/Ustrd lines, in order
    digest: bytes  # SHA-256 of the exclusive C14N form (the Reference's DigestValue)

    def summary(self) -> dict[str, Any]:
        return {
            "message_type": self.namespace.rsplit(":", 1)[1],
            "message_id": self.message_id,
            "end_to_end_id": self.end_to_end_id,
            "uetr": self.uetr,
            "amount": str(self.amount),
            "currency": self.currency,
            "debtor_agent": self.debtor_agent,
            "creditor_agent": self.creditor_agent,
            "debtor_account": self.debtor_account,
            "creditor_account": self.creditor_account,
            "debtor_name": self.debtor_name,
            "creditor_name": self.creditor_name,
            "remittance": list(self.remittance),
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


def signed_info(digest: bytes) -> bytes:
    """The canonical (exclusive C14N 1.0) ``ds:SignedInfo`` over a document whose
    ``SHA-256(exc-c14n(Document))`` is ``digest``: the octets an Ed25519 key signs (XMLDSig
    1.1 section 3.1.2 step 1-2; RFC 9231 section 2.3, EdDSA signs them directly, no
    pre-hash). A fixed template: one Reference (no ``URI``: the ``Document`` beside the
    ``AppHdr``), one exc-c14n Transform, SHA-256. The ``ds`` prefix is declared here
    because exclusive C14N puts a namespace on the first element that uses it, so the
    bytes are the same wherever the element sits in an envelope."""
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    value = base64.b64encode(digest).decode("ascii")
    return (
        f'<ds:SignedInfo xmlns:ds="{DSIG_NS}">'
        f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"></ds:CanonicalizationMethod>'
        f'<ds:SignatureMethod Algorithm="{EDDSA_ED25519}"></ds:SignatureMethod>'
        "<ds:Reference>"
        f'<ds:Transforms><ds:Transform Algorithm="{EXC_C14N}"></ds:Transform></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
        f"<ds:DigestValue>{value}</ds:DigestValue>"
        "</ds:Reference>"
        "</ds:SignedInfo>"
    ).encode("ascii")


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
    if pattern is not None and not pattern.fullmatch(text):
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


def _remittance(tx: etree._Element, ns: str) -> tuple[str, ...]:
    found = tx.findall(f"{{{ns}}}RmtInf")
    if not found:
        return ()
    if len(found) > 1:
        raise KindError(KIND, "RmtInf", "occurs more than once")
    lines = found[0].findall(f"{{{ns}}}Ustrd")
    if len(lines) > MAX_REMITTANCE_LINES:
        raise KindError(KIND, "RmtInf.Ustrd", f"more than {MAX_REMITTANCE_LINES} lines")
    if len(found[0]) != len(lines):
        raise KindError(KIND, "RmtInf", "only Ustrd lines are accepted")
    return tuple(_text(line, f"RmtInf.Ustrd[{i}]", None, 140) for i, line in enumerate(lines))


# What a message may hold besides what is decoded: elements that neither move money nor name
# another party (the policy and the approver see every field that does). Anything else (an
# intermediary or reimbursement agent, an ultimate creditor, instructions for an agent,
# supplementary data, another account identification) is refused rather than signed unseen.
_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "FIToFICstmrCdtTrf": frozenset({"GrpHdr", "CdtTrfTxInf"}),
    "GrpHdr": frozenset(
        {"MsgId", "CreDtTm", "BtchBookg", "NbOfTxs", "CtrlSum", "TtlIntrBkSttlmAmt"}
        | {"IntrBkSttlmDt", "SttlmInf", "PmtTpInf"}
    ),
    "GrpHdr.SttlmInf": frozenset({"SttlmMtd", "ClrSys"}),
    "CdtTrfTxInf": frozenset(
        {"PmtId", "PmtTpInf", "IntrBkSttlmAmt", "IntrBkSttlmDt", "ChrgBr", "Dbtr", "DbtrAcct"}
        | {"DbtrAgt", "CdtrAgt", "Cdtr", "CdtrAcct", "RmtInf"}
    ),
    "Dbtr": frozenset({"Nm"}),
    "Cdtr": frozenset({"Nm"}),
    "DbtrAcct": frozenset({"Id"}),
    "CdtrAcct": frozenset({"Id"}),
    "DbtrAcct.Id": frozenset({"IBAN"}),
    "CdtrAcct.Id": frozenset({"IBAN"}),
    "DbtrAgt": frozenset({"FinInstnId"}),
    "CdtrAgt": frozenset({"FinInstnId"}),
    "DbtrAgt.FinInstnId": frozenset({"BICFI"}),
    "CdtrAgt.FinInstnId": frozenset({"BICFI"}),
}


def _only_allowed(el: etree._Element, ns: str, name: str) -> None:
    """``el``'s child elements are all in this namespace and in ``_ALLOWED[name]``."""
    for child in el:
        if not isinstance(child.tag, str):
            continue  # comments (the parser refused everything else)
        q = etree.QName(child)
        if q.namespace != ns or q.localname not in _ALLOWED[name]:
            raise KindError(
                KIND,
                f"{name}.{q.localname}",
                "not shown to the policy and approvers, so it is refused",
            )


def _check_structure(msg: etree._Element, tx: etree._Element, ns: str) -> None:
    _only_allowed(msg, ns, "FIToFICstmrCdtTrf")
    for path, name in (
        ("^GrpHdr", "GrpHdr"),
        ("^GrpHdr/SttlmInf", "GrpHdr.SttlmInf"),
    ):
        for el in msg.findall(path.replace("/", f"/{{{ns}}}").replace("^", f"{{{ns}}}")):
            _only_allowed(el, ns, name)
    _only_allowed(tx, ns, "CdtTrfTxInf")
    for name in _ALLOWED:
        if name.split(".")[0] in ("Dbtr", "Cdtr", "DbtrAcct", "CdtrAcct", "DbtrAgt", "CdtrAgt"):
            path = "^" + name.replace(".", "/")
            for el in tx.findall(path.replace("/", f"/{{{ns}}}").replace("^", f"{{{ns}}}")):
                _only_allowed(el, ns, name)


def _check_total(msg: etree._Element, ns: str, amount: Decimal, currency: str) -> None:
    """A ``GrpHdr/TtlIntrBkSttlmAmt``, when present, says the transaction's amount."""
    found = msg.findall(f"{{{ns}}}GrpHdr/{{{ns}}}TtlIntrBkSttlmAmt")
    if not found:
        return
    name = "GrpHdr.TtlIntrBkSttlmAmt"
    if len(found) > 1:
        raise KindError(KIND, name, "occurs more than once")
    total = found[0]
    text = _text(total, name, _AMOUNT, 24)
    attrs = {str(k): str(v) for k, v in total.attrib.items()}
    if attrs != {"Ccy": currency} or Decimal(text) != amount:
        raise KindError(KIND, name, "must equal the transaction's IntrBkSttlmAmt and Ccy")


def decode(payload: Mapping[str, Any]) -> Pacs008:
    """Decode an ``iso20022`` payload; :class:`KindError` names the field."""
    only_fields(KIND, payload, {"xml"}, {"xml"})
    root = _parse(payload["xml"])
    tag = etree.QName(root)
    ns = tag.namespace or ""
    if tag.localname != "Document" or not NAMESPACE.fullmatch(ns):
        raise KindError(KIND, "xml.Document", "must be a pacs.008.001.NN Document")
    if len(root) != 1:
        raise KindError(KIND, "xml.Document", "must hold exactly one FIToFICstmrCdtTrf")
    msg = _one(root, "^FIToFICstmrCdtTrf", ns, "FIToFICstmrCdtTrf")
    message_id = _text(_one(msg, "^GrpHdr/MsgId", ns, "GrpHdr.MsgId"), "GrpHdr.MsgId", None)
    if _text(_one(msg, "^GrpHdr/NbOfTxs", ns, "GrpHdr.NbOfTxs"), "GrpHdr.NbOfTxs", None) != "1":
        raise KindError(KIND, "GrpHdr.NbOfTxs", "must be 1 (one transaction per request)")
    tx = _one(msg, "^CdtTrfTxInf", ns, "CdtTrfTxInf")
    _check_structure(msg, tx, ns)
    e2e = _text(_one(tx, "^PmtId/EndToEndId", ns, "PmtId.EndToEndId"), "PmtId.EndToEndId", None)
    uetr = _text(_one(tx, "^PmtId/UETR", ns, "PmtId.UETR"), "PmtId.UETR", _UETR, 36)
    amt = _one(tx, "^IntrBkSttlmAmt", ns, "IntrBkSttlmAmt")
    if set(amt.attrib) != {"Ccy"}:
        raise KindError(KIND, "IntrBkSttlmAmt.Ccy", "must be the one attribute")
    currency = str(amt.attrib["Ccy"])
    if not _CCY.fullmatch(currency):
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
    _check_total(msg, ns, amount, currency)
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
        messages=(signed_info(digest),),
        namespace=ns,
        message_id=message_id,
        end_to_end_id=e2e,
        uetr=uetr,
        amount=amount,
        currency=currency,
        debtor_agent=bics["DbtrAgt"],
        creditor_agent=bics["CdtrAgt"],
        debtor_account=ibans["DbtrAcct"],
        creditor_account=ibans["CdtrAcct"],
        debtor_name=_optional_name(tx, "^Dbtr/Nm", ns, "Dbtr.Nm"),
        creditor_name=_optional_name(tx, "^Cdtr/Nm", ns, "Cdtr.Nm"),
        remittance=_remittance(tx, ns),
        digest=digest,
    )
