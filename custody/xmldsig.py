"""Signed ISO 20022 settlement files: the envelope, placing the signature, and verifying it.

A settlement file is one business message in an envelope (the SWIFT MX ``RequestPayload``
convention: no namespace of its own)::

    <RequestPayload>
      <AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">   (the BAH)
        <Fr>..BICFI..</Fr> <To>..BICFI..</To> <BizMsgIdr/> <MsgDefIdr>pacs.008.001.08</..>
        <CreDt/> <Sgntr><ds:Signature>..</ds:Signature></Sgntr>
      </AppHdr>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08">..</Document>
    </RequestPayload>

``ds:Signature`` is a W3C XML Signature (XMLDSig 1.1) whose ``SignedInfo`` is exactly the
template of :func:`custody.kinds.iso20022.signed_info` (the bytes a signer node builds and
signs, EdDSA-Ed25519 per RFC 9231 section 2.3 over its exclusive C14N), then
``SignatureValue`` (base64 of the 64-byte Ed25519 signature) and an optional ``KeyInfo``
holding a ``KeyName`` (a hint only; the verifier is given the public key it trusts).

The header is not covered by the signature (the Reference is the ``Document``); instead
:func:`verify_settlement` checks that what it says agrees with the signed document: ``Fr``
is the debtor agent, ``To`` the creditor agent, ``BizMsgIdr`` the document's ``MsgId``,
``MsgDefIdr`` its message definition. Only the ``Document`` is validated against an XSD
(the BAH's XSD is not shipped); the header's fields are checked by hand here.

:func:`verify_settlement` is what a receiving bank could run (and what
``custody pay verify-settlement FILE`` calls): XMLDSig 1.1 section 3.2 "Core Validation"
(3.2.1 Reference Validation, 3.2.2 Signature Validation) under a strict profile that
refuses anything that could move the signed content (signature wrapping): one envelope, one
``AppHdr``, one ``Document`` in the whole file, one ``ds:Signature`` where it belongs, one
Reference without ``URI`` and without ``Id`` attributes, the one exc-c14n Transform, the
algorithms above and nothing else. Parsing is defused as in :mod:`custody.kinds.iso20022`.

May import: ``custody`` (the kind), lxml, PyNaCl; an ``xmlschema`` schema is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.exceptions
import nacl.signing
from lxml import etree

from custody.kinds import iso20022 as kind
from custody.kinds._common import KindError

__all__ = [
    "BAH_NS",
    "PACS008_NS",
    "ENVELOPE",
    "MSG_DEF",
    "Check",
    "SettlementReport",
    "SettlementError",
    "envelope",
    "insert_signature",
    "verify_settlement",
]

BAH_NS: Final = "urn:iso:std:iso:20022:tech:xsd:head.001.001.02"
PACS008_NS: Final = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"
MSG_DEF: Final = "pacs.008.001.08"
ENVELOPE: Final = "RequestPayload"
_DS: Final = f"{{{kind.DSIG_NS}}}"
_H: Final = f"{{{BAH_NS}}}"
# the AppHdr children this profile writes and accepts, in head.001.001.02's order
_HEADER: Final = ("Fr", "To", "BizMsgIdr", "MsgDefIdr", "CreDt", "Sgntr")


class SettlementError(ValueError):
    """A settlement file refused: ``check`` names the step, ``detail`` says why."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"{check}: {detail}")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class SettlementReport:
    """What :func:`verify_settlement` found. ``valid`` only when every check passed;
    ``checks`` in the order run (it stops at the first failure); ``summary`` the decoded
    document (:meth:`custody.kinds.iso20022.Pacs008.summary`) and ``header`` the AppHdr
    fields, both only for a valid file; ``schema_checked`` whether an XSD was applied."""

    valid: bool
    checks: tuple[Check, ...]
    summary: dict[str, Any] | None = None
    header: dict[str, str] = field(default_factory=dict)
    schema_checked: bool = False

    @property
    def failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "summary": self.summary,
            "header": self.header,
            "schema_checked": self.schema_checked,
        }


def _c14n(el: etree._Element) -> bytes:
    out = etree.tostring(el, method="c14n", exclusive=True, with_comments=False)
    assert isinstance(out, bytes)
    return out


def _parse(xml: bytes | str, check: str) -> etree._Element:
    """Defused parse: the kind's parser and refusals (no DTD, entity, PI, network)."""
    try:
        text = xml.decode("utf-8", errors="strict") if isinstance(xml, bytes) else xml
    except UnicodeDecodeError as exc:
        raise SettlementError(check, f"not UTF-8 (byte {exc.start})") from None
    if not isinstance(text, str):
        raise SettlementError(check, "must be bytes or a string")
    try:
        return kind._parse(text)
    except KindError as exc:
        raise SettlementError(check, exc.detail) from None


def envelope(
    *, document: str, sender_bic: str, receiver_bic: str, message_id: str, created: str
) -> bytes:
    """An unsigned settlement file: the ``AppHdr`` (``Fr``/``To`` BICFI, ``BizMsgIdr``,
    ``MsgDefIdr`` ``pacs.008.001.08``, ``CreDt``) and the ``Document`` (the exact element
    of ``document``, the XML a signer node was given). ``Sgntr`` is added by
    :func:`insert_signature`."""
    doc = _parse(document, "document")
    if etree.QName(doc).text != f"{{{PACS008_NS}}}Document":
        raise SettlementError("document", f"must be a {MSG_DEF} Document")
    root = etree.Element(ENVELOPE)
    hdr = etree.SubElement(root, f"{_H}AppHdr", nsmap={None: BAH_NS})  # type: ignore[dict-item]
    for role, bic in (("Fr", sender_bic), ("To", receiver_bic)):
        party = etree.SubElement(etree.SubElement(hdr, f"{_H}{role}"), f"{_H}FIId")
        etree.SubElement(etree.SubElement(party, f"{_H}FinInstnId"), f"{_H}BICFI").text = bic
    etree.SubElement(hdr, f"{_H}BizMsgIdr").text = message_id
    etree.SubElement(hdr, f"{_H}MsgDefIdr").text = MSG_DEF
    etree.SubElement(hdr, f"{_H}CreDt").text = created
    root.append(doc)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def insert_signature(unsigned: bytes, signature: bytes, *, key_name: str | None = None) -> bytes:
    """``unsigned`` (from :func:`envelope`) with ``AppHdr/Sgntr/ds:Signature``: the
    SignedInfo template over its Document's digest and ``signature`` (64 bytes, Ed25519
    over that SignedInfo, as the custody ``iso20022`` kind signs it). Nothing is verified
    here: run :func:`verify_settlement` on the result."""
    if len(signature) != 64:
        raise SettlementError("signature", "an Ed25519 signature is 64 bytes")
    root = _parse(unsigned, "xml")
    hdr, doc = _parts(root)
    if hdr.find(f"{_H}Sgntr") is not None:
        raise SettlementError("AppHdr.Sgntr", "already signed")
    info = etree.fromstring(kind.signed_info(hashlib.sha256(_c14n(doc)).digest()))
    sgntr = etree.SubElement(hdr, f"{_H}Sgntr")
    sig = etree.SubElement(sgntr, f"{_DS}Signature", nsmap={"ds": kind.DSIG_NS})
    sig.append(info)
    etree.SubElement(sig, f"{_DS}SignatureValue").text = base64.b64encode(signature).decode()
    if key_name is not None:
        etree.SubElement(etree.SubElement(sig, f"{_DS}KeyInfo"), f"{_DS}KeyName").text = key_name
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _parts(root: etree._Element) -> tuple[etree._Element, etree._Element]:
    """The envelope's AppHdr and Document, refusing every other shape."""
    if root.tag != ENVELOPE:
        raise SettlementError("envelope", f"the root must be {ENVELOPE} (no namespace)")
    if root.attrib:
        raise SettlementError("envelope", "the envelope takes no attributes")
    kids = [k for k in root if not isinstance(k, etree._Comment)]
    tags = [k.tag for k in kids]
    if tags != [f"{_H}AppHdr", f"{{{PACS008_NS}}}Document"]:
        raise SettlementError(
            "envelope", f"must hold exactly AppHdr ({BAH_NS}) then Document ({PACS008_NS})"
        )
    if (root.text or "").strip() or any((k.tail or "").strip() for k in kids):
        raise SettlementError("envelope", "text outside the AppHdr and Document")
    return kids[0], kids[1]


def _text(parent: etree._Element, path: str, name: str) -> str:
    found = parent.findall(path)
    if len(found) != 1:
        raise SettlementError("header", f"{name}: {'missing' if not found else 'repeated'}")
    el = found[0]
    if len(el) or not el.text or el.text != el.text.strip():
        raise SettlementError("header", f"{name}: must be text without surrounding spaces")
    return el.text


def _header(hdr: etree._Element) -> tuple[dict[str, str], etree._Element]:
    names = [etree.QName(k).localname if isinstance(k.tag, str) else "#" for k in hdr]
    ns_ok = all(etree.QName(k).namespace == BAH_NS for k in hdr if isinstance(k.tag, str))
    if names != list(_HEADER) or not ns_ok or hdr.attrib:
        raise SettlementError(
            "header", f"AppHdr must hold exactly {', '.join(_HEADER)} in that order"
        )
    bic = f"{_H}FIId/{_H}FinInstnId/{_H}BICFI"
    out = {
        "from": _text(hdr, f"{_H}Fr/{bic}", "Fr.FIId.FinInstnId.BICFI"),
        "to": _text(hdr, f"{_H}To/{bic}", "To.FIId.FinInstnId.BICFI"),
        "business_message_id": _text(hdr, f"{_H}BizMsgIdr", "BizMsgIdr"),
        "message_definition": _text(hdr, f"{_H}MsgDefIdr", "MsgDefIdr"),
        "created": _text(hdr, f"{_H}CreDt", "CreDt"),
    }
    for role in ("Fr", "To"):  # Fr/FIId/FinInstnId/BICFI and nothing else
        chain = hdr.find(f"{_H}{role}")
        assert chain is not None
        for _ in range(3):
            if len(chain) != 1:
                raise SettlementError("header", f"{role}: only FIId/FinInstnId/BICFI")
            chain = chain[0]
    if out["message_definition"] != MSG_DEF:
        raise SettlementError("header", f"MsgDefIdr must be {MSG_DEF}")
    sgntr = hdr.find(f"{_H}Sgntr")
    assert sgntr is not None
    sigs = [k for k in sgntr if isinstance(k.tag, str)]
    if len(sigs) != 1 or sigs[0].tag != f"{_DS}Signature" or (sgntr.text or "").strip():
        raise SettlementError("signature", "AppHdr/Sgntr must hold exactly one ds:Signature")
    return out, sigs[0]


def _signature_parts(sig: etree._Element) -> tuple[etree._Element, bytes, str | None]:
    """SignedInfo, the 64 signature bytes and the KeyName hint of ``ds:Signature``."""
    if sig.attrib:
        raise SettlementError("signature", "ds:Signature takes no attributes (no Id)")
    kids = [k for k in sig if isinstance(k.tag, str)]
    tags = [k.tag for k in kids]
    if tags not in (
        [f"{_DS}SignedInfo", f"{_DS}SignatureValue"],
        [f"{_DS}SignedInfo", f"{_DS}SignatureValue", f"{_DS}KeyInfo"],
    ):
        raise SettlementError(
            "signature", "ds:Signature must be SignedInfo, SignatureValue[, KeyInfo] (no Object)"
        )
    value = kids[1]
    if value.attrib or len(value):
        raise SettlementError("signature", "SignatureValue: base64 text only")
    try:
        raw = base64.b64decode("".join((value.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise SettlementError("signature", "SignatureValue is not base64") from None
    if len(raw) != 64:
        raise SettlementError("signature", f"SignatureValue is {len(raw)} bytes, not 64")
    key_name = None
    if len(kids) == 3:
        info = kids[2]
        names = [k for k in info if isinstance(k.tag, str)]
        if [k.tag for k in names] != [f"{_DS}KeyName"] or info.attrib:
            raise SettlementError("signature", "KeyInfo: one KeyName only")
        if len(names[0]) or names[0].attrib:
            raise SettlementError("signature", "KeyInfo: KeyName is text only")
        key_name = names[0].text or ""
    return kids[0], raw, key_name


def _signed_info_digest(info: etree._Element) -> bytes:
    """The DigestValue of a SignedInfo that follows the profile, field by field so that
    the refusal names what differs (the final template comparison is the real gate)."""
    if info.attrib:
        raise SettlementError("signed-info", "SignedInfo takes no attributes (no Id)")
    kids = [k for k in info if isinstance(k.tag, str)]
    tags = [etree.QName(k).localname for k in kids]
    refs = tags.count("Reference")
    if refs != 1:
        raise SettlementError("reference", f"{refs} References: exactly one is signed")
    if tags != ["CanonicalizationMethod", "SignatureMethod", "Reference"]:
        raise SettlementError("signed-info", f"unexpected SignedInfo children {tags}")
    c14n, method, ref = kids
    if c14n.get("Algorithm") != kind.EXC_C14N:
        raise SettlementError("c14n", f"CanonicalizationMethod must be {kind.EXC_C14N}")
    if method.get("Algorithm") != kind.EDDSA_ED25519:
        raise SettlementError("algorithm", f"SignatureMethod must be {kind.EDDSA_ED25519}")
    if ref.attrib:
        raise SettlementError(
            "reference", f"the Reference takes no attributes (got {sorted(ref.attrib)})"
        )
    elements = [k for k in ref if isinstance(k.tag, str)]  # comments are not signed
    parts = [etree.QName(k).localname for k in elements]
    if parts != ["Transforms", "DigestMethod", "DigestValue"]:
        raise SettlementError("reference", f"unexpected Reference children {parts}")
    transforms_el, method_el, value_el = elements
    transforms = [t for t in transforms_el if isinstance(t.tag, str)]
    if len(transforms) != 1 or transforms[0].get("Algorithm") != kind.EXC_C14N:
        raise SettlementError("transforms", f"exactly one Transform, {kind.EXC_C14N}")
    if method_el.get("Algorithm") != kind.SHA256:
        raise SettlementError("digest-method", f"DigestMethod must be {kind.SHA256}")
    try:
        digest = base64.b64decode(value_el.text or "", validate=True)
    except (binascii.Error, ValueError):
        raise SettlementError("digest", "DigestValue is not base64") from None
    if len(digest) != 32:
        raise SettlementError("digest", "DigestValue is not a SHA-256 digest")
    return digest


def _no_strays(root: etree._Element) -> None:
    """Signature wrapping: exactly one Document, one AppHdr and one ds:Signature in the
    whole file, and no ``Id``/``ID``/``URI`` attribute anywhere (this profile needs none, so
    nothing can point a Reference or a reader at other content)."""
    counts = {"Document": 0, "AppHdr": 0, "Signature": 0}
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        q = etree.QName(el)
        if q.localname in counts:
            counts[q.localname] += 1
        for name in el.attrib:
            local = etree.QName(name).localname
            if local in ("Id", "ID", "id", "URI"):
                raise SettlementError("wrapping", f"a {local} attribute on {q.localname}")
    for name, n in counts.items():
        if n != 1:
            raise SettlementError("wrapping", f"{n} {name} elements in the file, not one")


def verify_settlement(
    xml: bytes | str, public_key: bytes, *, schema: Any | None = None
) -> SettlementReport:
    """Verify a signed settlement file under ``public_key`` (32-byte Ed25519, the custody
    key's public key). Steps, stopping at the first failure: defused parse; the envelope
    shape and no wrapping; the header fields; the signature's SignedInfo (one Reference, the
    algorithms, no URI or extra Transform) and equality with the canonical template; the
    Document decoded strictly (:func:`custody.kinds.iso20022.decode`); its digest against
    DigestValue (XMLDSig 3.2.1); the Ed25519 signature over c14n(SignedInfo) with PyNaCl
    (3.2.2); the header against the document; and, when ``schema`` (an
    ``xmlschema.XMLSchema`` of pacs.008.001.08) is given, the Document against it. Never
    raises for a bad file: the report says which check failed. ``schema`` may also be the
    path of the XSD file (loaded with ``xmlschema``, local files only), for a caller that
    cannot import the package that ships it (the custody CLI: :mod:`payments` ships it as
    package data, ``payments/iso20022/schemas/pacs.008.001.08.xsd``)."""
    if isinstance(schema, str | os.PathLike):
        import xmlschema

        schema = xmlschema.XMLSchema(os.fspath(schema), allow="local")
    checks: list[Check] = []
    summary: dict[str, Any] | None = None
    header: dict[str, str] = {}

    def done(ok: bool) -> SettlementReport:
        # what the file says is reported only once everything holds: nobody reads an
        # unverified amount or creditor off a refused file's report
        return SettlementReport(
            ok,
            tuple(checks),
            summary if ok else None,
            header if ok else {},
            schema is not None and ok,
        )

    try:
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise SettlementError("public-key", "an Ed25519 public key is 32 bytes")
        root = _parse(xml, "xml")
        _no_strays(root)
        hdr, doc = _parts(root)
        checks.append(Check("envelope", True, "one AppHdr, one Document, one Signature"))
        header, sig = _header(hdr)
        checks.append(Check("header", True, f"{header['from']} -> {header['to']}"))
        info, signature, key_name = _signature_parts(sig)
        digest = _signed_info_digest(info)
        signed = _c14n(info)
        if signed != kind.signed_info(digest):
            raise SettlementError("signed-info", "SignedInfo differs from the canonical profile")
        checks.append(Check("signed-info", True, f"{kind.EDDSA_ED25519}, exc-c14n, SHA-256"))
        doc_c14n = _c14n(doc)
        try:
            intent = kind.decode({"xml": doc_c14n.decode("utf-8")})
        except KindError as exc:
            raise SettlementError("document", f"{exc.field}: {exc.detail}") from None
        summary = intent.summary()
        checks.append(Check("document", True, f"{intent.amount} {intent.currency}"))
        if hashlib.sha256(doc_c14n).digest() != digest or intent.digest != digest:
            raise SettlementError("digest", "the Document's SHA-256 is not the DigestValue")
        checks.append(Check("digest", True, digest.hex()))
        try:
            nacl.signing.VerifyKey(public_key).verify(signed, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            raise SettlementError("signature", "the Ed25519 signature does not verify") from None
        hint = f" (KeyName {key_name})" if key_name else ""
        checks.append(Check("signature", True, f"Ed25519 over c14n(SignedInfo){hint}"))
        if header["from"] != intent.debtor_agent or header["to"] != intent.creditor_agent:
            raise SettlementError("header", "Fr/To are not the document's DbtrAgt/CdtrAgt")
        if header["business_message_id"] != intent.message_id:
            raise SettlementError("header", "BizMsgIdr is not the document's GrpHdr/MsgId")
        checks.append(Check("header-binding", True, "Fr, To, BizMsgIdr agree with the Document"))
        if schema is not None:
            errors = [
                f"line {getattr(e.elem, 'sourceline', '?')}: {e.path}: {e.reason}"
                for e in schema.iter_errors(doc)
            ]
            if errors:
                raise SettlementError("xsd", "; ".join(errors[:5]))
            checks.append(Check("xsd", True, f"valid {MSG_DEF}"))
    except SettlementError as exc:
        checks.append(Check(exc.check, False, exc.detail))
        return done(False)
    return done(True)
