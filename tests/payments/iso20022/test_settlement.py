"""pacs.008.001.08 settlement files: built per counterparty from a net settlement, XSD-valid,
with the Business Application Header; signed by a 2-of-3 FROST(Ed25519) key over the
SignedInfo the custody kind builds; verified by ``verify_settlement`` and by an independent
check written here (lxml's exclusive C14N and PyNaCl); every tampering and signature
wrapping refused."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import nacl.exceptions
import nacl.signing
import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from custody import xmldsig
from custody.kinds import decode
from mpc import frost
from mpc.testing import run_dkg_local
from payments import iso20022
from payments.iso20022 import IsoError, Party, build_settlement, verify_settlement
from tests.payments.iso20022.conftest import BOB, CREATED, ThresholdKey, net

SCHEMAS = Path(iso20022.__file__).resolve().parent / "schemas"
DS = "http://www.w3.org/2000/09/xmldsig#"
PACS = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"
HEAD = "urn:iso:std:iso:20022:tech:xsd:head.001.001.02"
NS = {"ds": DS, "p": PACS, "h": HEAD}


def independent_verify(xml: bytes, public_key: bytes) -> None:
    """XMLDSig core validation by hand with lxml and PyNaCl (not our verifier): the
    Reference's DigestValue is SHA-256 of the exclusive C14N of the one Document, the
    algorithms are the expected URIs, and Ed25519 verifies over c14n(SignedInfo)."""
    root = etree.fromstring(xml)
    (doc,) = root.findall("p:Document", NS)
    (info,) = root.findall("h:AppHdr/h:Sgntr/ds:Signature/ds:SignedInfo", NS)
    assert info.find("ds:SignatureMethod", NS).get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
    )
    assert info.find("ds:CanonicalizationMethod", NS).get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    (ref,) = info.findall("ds:Reference", NS)
    c14n = etree.tostring(doc, method="c14n", exclusive=True, with_comments=False)
    digest = hashlib.sha256(c14n).digest()
    assert base64.b64decode(ref.findtext("ds:DigestValue", namespaces=NS) or "") == digest
    value = root.findtext("h:AppHdr/h:Sgntr/ds:Signature/ds:SignatureValue", namespaces=NS)
    signed = etree.tostring(info, method="c14n", exclusive=True)
    nacl.signing.VerifyKey(public_key).verify(signed, base64.b64decode(value or ""))


def signed_file(key: ThresholdKey, **kw: object) -> tuple[bytes, object]:
    msg = build_settlement(net(**kw), created=CREATED)  # type: ignore[arg-type]
    intent = decode("iso20022", {"xml": msg.document}, scheme="ed25519")  # the node's view
    (message,) = intent.messages
    return msg.signed(key.sign(message), key_name="key_settlement"), msg


def test_one_message_per_counterparty_valid_against_the_xsd() -> None:
    carol = Party("Carol Bank plc", "NWBKGB2L", "GB29NWBK60161331926819")
    a = build_settlement(net(), created=CREATED)
    b = build_settlement(
        net("99", "GBP", ("E2E-9",), counterparty=carol, sid="SET-20261201-CAROL"),
        created=CREATED,
    )
    schema = xmlschema.XMLSchema(str(SCHEMAS / "pacs.008.001.08.xsd"))
    for m in (a, b):
        schema.validate(m.document)  # raises on any fault
        env = etree.fromstring(m.unsigned)
        (doc,) = env.findall("p:Document", NS)
        schema.validate(etree.tostring(doc).decode())
        assert uuid.UUID(m.uetr).version == 4
        assert env.findtext("h:AppHdr/h:MsgDefIdr", namespaces=NS) == "pacs.008.001.08"
        assert env.findtext("h:AppHdr/h:Fr/h:FIId/h:FinInstnId/h:BICFI", namespaces=NS) == (
            "DEUTDEFFXXX"
        )
        assert env.findtext("h:AppHdr/h:CreDt", namespaces=NS) == "2026-12-01T17:00:00Z"
    assert a.uetr != b.uetr
    doc = etree.fromstring(a.document)
    tx = "p:FIToFICstmrCdtTrf/p:CdtTrfTxInf/"
    assert doc.findtext(tx + "p:PmtId/p:UETR", namespaces=NS) == a.uetr
    assert doc.findtext(tx + "p:PmtId/p:EndToEndId", namespaces=NS) == "SET-20261201-BOB"
    assert [u.text for u in doc.findall(tx + "p:RmtInf/p:Ustrd", NS)] == ["E2E-1", "E2E-2"]
    assert doc.findtext(tx + "p:IntrBkSttlmAmt", namespaces=NS) == "1500.25"
    assert doc.findtext(tx + "p:CdtrAcct/p:Id/p:IBAN", namespaces=NS) == BOB.iban
    assert etree.fromstring(b.document).findtext(tx + "p:IntrBkSttlmAmt", namespaces=NS) == "99.00"
    intent = decode("iso20022", {"xml": a.document}, scheme="ed25519")
    s = intent.summary()
    assert (s["amount"], s["currency"], s["creditor_account"]) == ("1500.25", "EUR", BOB.iban)
    assert s["remittance"] == ["E2E-1", "E2E-2"] and s["uetr"] == a.uetr


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"amount": "0"}, "net_amount"),
        ({"amount": "-5"}, "net_amount"),
        ({"amount": "1.001"}, "net_amount"),
        ({"amount": "1.5", "ccy": "JPY"}, "net_amount"),
        ({"ccy": "QQQ"}, "settlement"),
        ({"counterparty": Party("X", "BNPAXXPP", BOB.iban)}, "settlement"),
        ({"counterparty": Party("X", "BNPAFRPP", "FR1420041010050500013M02607")}, "settlement"),
        ({"ids": ()}, "end_to_end_ids"),
        ({"ids": tuple(f"E{i}" for i in range(65))}, "end_to_end_ids"),
        ({"ids": (" padded",)}, "end_to_end_ids"),
        ({"sid": "x" * 36}, "settlement_id"),
        ({"amount": "1" * 19}, "net_amount"),  # beyond the XSD's 18 digits
        ({"amount": "1" * 40}, "net_amount"),
    ],
)
def test_settlements_that_cannot_be_sent_are_refused(kw: dict, field: str) -> None:
    with pytest.raises(IsoError) as err:
        build_settlement(net(**kw), created=CREATED)
    assert err.value.problems[0].field == field, err.value


def test_signed_file_verifies_with_ours_and_independently(threshold_key: ThresholdKey) -> None:
    xml, msg = signed_file(threshold_key)
    report = verify_settlement(xml, threshold_key.public_key)
    assert report.valid, report.failure
    assert report.schema_checked
    assert [c.name for c in report.checks] == [
        "envelope",
        "header",
        "signed-info",
        "document",
        "digest",
        "signature",
        "header-binding",
        "xsd",
    ]
    assert report.summary is not None and report.summary["uetr"] == msg.uetr  # type: ignore[attr-defined]
    assert report.header["to"] == "BNPAFRPP"
    independent_verify(xml, threshold_key.public_key)
    # the custody-side verifier (what the custody CLI can import) agrees, without the XSD
    bare = xmldsig.verify_settlement(xml, threshold_key.public_key)
    assert bare.valid and not bare.schema_checked
    # formatting outside the Document and comments inside it do not matter (C14N)
    spaced = xml.replace(b"<AppHdr", b"\n  <AppHdr").replace(b"<ChrgBr>", b"<!-- c --><ChrgBr>")
    assert verify_settlement(spaced, threshold_key.public_key).valid
    independent_verify(spaced, threshold_key.public_key)
    # comments inside the SignedInfo are not signed (exc-c14n without comments) either
    noted = xml.replace(b"<ds:Reference>", b"<ds:Reference><!-- r -->").replace(
        b"<ds:KeyName>", b"<!-- k --><ds:KeyName>"
    )
    assert verify_settlement(noted, threshold_key.public_key).valid


def test_another_key_does_not_verify(threshold_key: ThresholdKey) -> None:
    """Another custody key (a second DKG, so still no whole key) and 32 bytes that are not
    a key at all: refused by ours and by PyNaCl."""
    xml, _ = signed_file(threshold_key)
    group = frost.ciphersuite("ed25519").group
    other = ThresholdKey({kp.identifier: kp for kp in run_dkg_local(group, 2, 3)}).public_key
    for wrong in (other, b"\xff" * 32):
        report = verify_settlement(xml, wrong)
        assert not report.valid and report.failure is not None
        assert report.failure.name == "signature", report.failure
    with pytest.raises(nacl.exceptions.BadSignatureError):
        independent_verify(xml, other)
    assert not verify_settlement(xml, b"short").valid


def _swap(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def f(xml: bytes) -> bytes:
        assert old in xml, old
        return xml.replace(old, new, 1)

    return f


def _edit(fn: Callable[[etree._Element], None]) -> Callable[[bytes], bytes]:
    def f(xml: bytes) -> bytes:
        root = etree.fromstring(xml)
        fn(root)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    return f


def _first(root: etree._Element, path: str) -> etree._Element:
    found = root.find(path, NS)
    assert found is not None, path
    return found


def _sig(root: etree._Element) -> etree._Element:
    return _first(root, "h:AppHdr/h:Sgntr/ds:Signature")


def _second_reference(root: etree._Element) -> None:
    info = _first(_sig(root), "ds:SignedInfo")
    ref = _first(info, "ds:Reference")
    info.append(etree.fromstring(etree.tostring(ref)))


def _uri_reference(root: etree._Element) -> None:
    _first(_sig(root), "ds:SignedInfo/ds:Reference").set("URI", "#doc")


def _moved_document(root: etree._Element) -> None:
    """The classic wrapping: the signed Document hidden in a ds:Object, a forged one in its
    place."""
    doc = _first(root, "p:Document")
    obj = etree.SubElement(_sig(root), f"{{{DS}}}Object")
    obj.append(etree.fromstring(etree.tostring(doc)))
    _first(doc, "p:FIToFICstmrCdtTrf/p:CdtTrfTxInf/p:IntrBkSttlmAmt").text = "9999.00"


def _second_document(root: etree._Element) -> None:
    doc = _first(root, "p:Document")
    forged = etree.fromstring(etree.tostring(doc))
    _first(forged, "p:FIToFICstmrCdtTrf/p:CdtTrfTxInf/p:IntrBkSttlmAmt").text = "9999.00"
    root.insert(1, forged)


def _document_in_wrapper(root: etree._Element) -> None:
    doc = _first(root, "p:Document")
    wrapper = etree.SubElement(root, "Wrapper")
    wrapper.append(etree.fromstring(etree.tostring(doc)))


def _duplicate_ids(root: etree._Element) -> None:
    doc = _first(root, "p:Document")
    doc.set("Id", "signed")
    forged = etree.SubElement(root, "Extra", Id="signed")
    forged.text = "x"


def _second_signature(root: etree._Element) -> None:
    sgntr = _first(root, "h:AppHdr/h:Sgntr")
    sgntr.append(etree.fromstring(etree.tostring(_sig(root))))


def _extra_transform(root: etree._Element) -> None:
    transforms = _first(_sig(root), "ds:SignedInfo/ds:Reference/ds:Transforms")
    t = etree.SubElement(transforms, f"{{{DS}}}Transform")
    t.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#enveloped-signature")


def _signature_id(root: etree._Element) -> None:
    _sig(root).set("Id", "sig")


TAMPERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "amount": (
        _swap(
            b'Ccy="EUR">1500.25</IntrBkSttlmAmt><ChrgBr',
            b'Ccy="EUR">1500.26</IntrBkSttlmAmt><ChrgBr',
        ),
        "document",  # the group total no longer says the transaction's amount
    ),
    "both amounts": (lambda x: x.replace(b">1500.25<", b">9500.25<"), "digest"),
    "creditor account": (_swap(BOB.iban.encode(), b"FR7630006000011234567890189"), "digest"),
    "creditor name": (_swap(b"<Nm>Banque Bob SA</Nm>", b"<Nm>Mallory SA</Nm>"), "digest"),
    "netted ids": (_swap(b"<Ustrd>E2E-2</Ustrd>", b"<Ustrd>E2E-3</Ustrd>"), "digest"),
    "digest value": (lambda x: x.replace(b"<ds:DigestValue>", b"<ds:DigestValue>AAAA"), "digest"),
    "signed info method": (
        _swap(b"xmldsig-more#eddsa-ed25519", b"xmldsig-more#eddsa-ed448"),
        "algorithm",
    ),
    "signed info c14n": (
        _swap(
            b'CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"',
            b'CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"',
        ),
        "c14n",
    ),
    "digest method": (
        _swap(
            b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2001/04/xmlenc#sha512"
        ),
        "digest-method",
    ),
    "signature value": (
        lambda x: x.replace(b"<ds:SignatureValue>", b"<ds:SignatureValue>AAAA"),
        "signature",
    ),
    "second reference": (_edit(_second_reference), "reference"),
    "reference URI": (_edit(_uri_reference), "wrapping"),
    "extra transform": (_edit(_extra_transform), "transforms"),
    "moved document": (_edit(_moved_document), "wrapping"),
    "second document": (_edit(_second_document), "wrapping"),
    "document in a wrapper": (_edit(_document_in_wrapper), "wrapping"),
    "duplicate Id": (_edit(_duplicate_ids), "wrapping"),
    "second signature": (_edit(_second_signature), "wrapping"),
    "signature Id": (_edit(_signature_id), "wrapping"),
    "header receiver": (
        lambda x: x.replace(
            b"<To><FIId><FinInstnId><BICFI>BNPAFRPP", b"<To><FIId><FinInstnId><BICFI>NWBKGB2L"
        ),
        "header",
    ),
    "header message id": (
        _swap(b"<BizMsgIdr>SET-20261201-BOB<", b"<BizMsgIdr>SET-OTHER<"),
        "header",
    ),
    "header definition": (
        _swap(b"<MsgDefIdr>pacs.008.001.08<", b"<MsgDefIdr>pacs.009.001.08<"),
        "header",
    ),
    "envelope": (_swap(b"<RequestPayload>", b"<RequestPayload x='1'>"), "envelope"),
    "pretty-printed document": (
        _swap(b"<FIToFICstmrCdtTrf>", b"<FIToFICstmrCdtTrf>\n  "),
        "digest",
    ),
    "DTD": (
        lambda x: x.replace(b"?>", b"?>\n<!DOCTYPE RequestPayload [<!ENTITY e 'x'>]>", 1),
        "xml",
    ),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_and_wrapping_refused(threshold_key: ThresholdKey, name: str) -> None:
    xml, _ = signed_file(threshold_key)
    tamper, check = TAMPERS[name]
    bad = tamper(xml)
    assert bad != xml
    report = verify_settlement(bad, threshold_key.public_key)
    assert not report.valid
    assert report.failure is not None and report.failure.name == check, report.failure
    assert report.checks[-1] == report.failure  # it stopped there


def test_a_document_signed_under_the_old_message_form_does_not_verify(
    threshold_key: ThresholdKey,
) -> None:
    """Migration guard: the kind used to sign SHA-256(exc-c14n(Document)) itself; such a
    signature placed in the header is refused (it is not over the SignedInfo)."""
    msg = build_settlement(net(), created=CREATED)
    intent = decode("iso20022", {"xml": msg.document}, scheme="ed25519")
    old = threshold_key.sign(intent.digest)  # type: ignore[attr-defined]
    report = verify_settlement(msg.signed(old), threshold_key.public_key)
    assert not report.valid and report.failure is not None
    assert report.failure.name == "signature"


def test_insert_signature_refuses_misuse(threshold_key: ThresholdKey) -> None:
    xml, msg = signed_file(threshold_key)
    with pytest.raises(xmldsig.SettlementError):
        xmldsig.insert_signature(xml, b"\x00" * 64)  # already signed
    with pytest.raises(xmldsig.SettlementError):
        msg.signed(b"\x00" * 63)  # type: ignore[attr-defined]
    assert Decimal(msg.amount) == Decimal("1500.25")  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_never_crash_and_never_verify_other_content(
    threshold_key: ThresholdKey, data: st.DataObject
) -> None:
    """Random byte edits of a signed file: verify_settlement always returns a report (never
    raises), and when it says valid the signed content (the Document's and the SignedInfo's
    canonical forms) is exactly the original's (only unsigned hints such as KeyName or
    whitespace outside the Document may differ)."""
    xml, _ = _FUZZ_FILE.setdefault("xml", signed_file(threshold_key))
    raw = bytearray(xml)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i]
        else:
            raw.insert(i, data.draw(st.sampled_from(b"<>/&\"' =x0\n")))
    report = verify_settlement(bytes(raw), threshold_key.public_key)
    if report.valid:

        def signed_parts(b: bytes) -> tuple[bytes, bytes]:
            root = etree.fromstring(b)
            doc = _first(root, "p:Document")
            info = _first(_sig(root), "ds:SignedInfo")
            c = {"method": "c14n", "exclusive": True, "with_comments": False}
            return etree.tostring(doc, **c), etree.tostring(info, **c)  # type: ignore[call-overload]

        assert signed_parts(bytes(raw)) == signed_parts(xml)


_FUZZ_FILE: dict[str, tuple[bytes, object]] = {}


def test_the_custody_side_verifier_takes_the_xsd_by_path(threshold_key: ThresholdKey) -> None:
    """What ``custody pay verify-settlement`` can run without importing payments: the XSD
    given as a file path is applied (and catches a document the schema refuses)."""
    xml, _ = signed_file(threshold_key)
    path = SCHEMAS / "pacs.008.001.08.xsd"
    report = xmldsig.verify_settlement(xml, threshold_key.public_key, schema=path)
    assert report.valid and report.schema_checked
    assert report.checks[-1].name == "xsd"
    # SttlmMtd outside its code list: the kind lets it through, the XSD does not; signed
    # as it is, only the schema check refuses it
    msg = build_settlement(net(), created=CREATED)
    odd = msg.document.replace("<SttlmMtd>INDA</SttlmMtd>", "<SttlmMtd>XXXX</SttlmMtd>")
    (message,) = decode("iso20022", {"xml": odd}, scheme="ed25519").messages
    unsigned = xmldsig.envelope(
        document=odd,
        sender_bic="DEUTDEFFXXX",
        receiver_bic="BNPAFRPP",
        message_id="SET-20261201-BOB",
        created="2026-12-01T17:00:00Z",
    )
    signed = xmldsig.insert_signature(unsigned, threshold_key.sign(message))
    assert xmldsig.verify_settlement(signed, threshold_key.public_key).valid  # no XSD
    bad = xmldsig.verify_settlement(signed, threshold_key.public_key, schema=str(path))
    assert not bad.valid and bad.failure is not None and bad.failure.name == "xsd"
    assert bad.failure.detail.startswith(
        "line 2: /Document/FIToFICstmrCdtTrf/GrpHdr/SttlmInf/SttlmMtd"
    )


def test_a_refused_file_reports_nothing_it_says(threshold_key: ThresholdKey) -> None:
    """No amount or creditor is read off a refused file's report."""
    xml, _ = signed_file(threshold_key)
    report = verify_settlement(xml.replace(b">1500.25<", b">9500.25<"), threshold_key.public_key)
    assert not report.valid
    assert report.summary is None and report.header == {}
    assert report.as_json()["checks"][-1]["ok"] is False
