"""iso20022 pacs.008: built with lxml, decoded by ours; C14N digest checked two ways, and the
message signed is the canonical XMLDSig SignedInfo over that digest (checked with lxml)."""

from __future__ import annotations

import base64
import hashlib
import string
import uuid
import xml.etree.ElementTree as StdET
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml.builder import ElementMaker

from custody.kinds import KindError, decode, iso20022

NS = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"


def iban_with_check(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


CCY = st.from_regex(r"\A[A-Z]{3}\Z")
bics = st.from_regex(r"\A[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?\Z")
ibans = st.builds(
    iban_with_check,
    st.from_regex(r"\A[A-Z]{2}\Z"),
    st.text(string.ascii_uppercase + string.digits, min_size=4, max_size=30),
)
amounts = st.decimals(
    min_value=Decimal("0.00001"), max_value=Decimal("9999999999999.99999"), places=5
)
texts = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=35,
)


def pacs008(
    msg_id: str = "MSG-1",
    uetr: str = "2b2e5c3f-2f4a-4d2b-9f7e-1c2d3e4f5a6b",
    amount: str = "1234.50",
    ccy: str = "EUR",
    dbtr_bic: str = "DEUTDEFFXXX",
    cdtr_bic: str = "BNPAFRPP",
    dbtr_iban: str = "DE89370400440532013000",
    cdtr_iban: str = "FR1420041010050500013M02606",
    names: tuple[str, str] | None = ("Alice GmbH", "Bob SA"),
    ns: str = NS,
    remittance: tuple[str, ...] = (),
) -> str:
    """A pacs.008 built with lxml's ElementMaker (not by our code)."""
    E = ElementMaker(namespace=ns, nsmap={None: ns})
    tx = [
        E.PmtId(E.InstrId("I1"), E.EndToEndId("E2E-1"), E.UETR(uetr)),
        E.IntrBkSttlmAmt(amount, Ccy=ccy),
        E.ChrgBr("SLEV"),
    ]
    if names:
        tx.append(E.Dbtr(E.Nm(names[0])))
    tx += [E.DbtrAcct(E.Id(E.IBAN(dbtr_iban))), E.DbtrAgt(E.FinInstnId(E.BICFI(dbtr_bic)))]
    tx += [E.CdtrAgt(E.FinInstnId(E.BICFI(cdtr_bic)))]
    if names:
        tx.append(E.Cdtr(E.Nm(names[1])))
    tx.append(E.CdtrAcct(E.Id(E.IBAN(cdtr_iban))))
    if remittance:
        tx.append(E.RmtInf(*(E.Ustrd(line) for line in remittance)))
    doc = E.Document(
        E.FIToFICstmrCdtTrf(
            E.GrpHdr(E.MsgId(msg_id), E.CreDtTm("2026-12-01T08:00:00Z"), E.NbOfTxs("1")),
            E.CdtTrfTxInf(*tx),
        )
    )
    return etree.tostring(doc, xml_declaration=True, encoding="UTF-8").decode()


@settings(max_examples=80, deadline=None)
@given(
    texts, st.uuids(version=4), amounts, st.from_regex(r"\A[A-Z]{3}\Z"), bics, bics, ibans, ibans
)
def test_round_trip_every_field(
    msg_id: str, uetr: uuid.UUID, amount: Decimal, ccy: str, b1: str, b2: str, i1: str, i2: str
) -> None:
    text = f"{amount.normalize():f}"
    xml = pacs008(msg_id, str(uetr), text, ccy, b1, b2, i1, i2)
    intent = decode("iso20022", {"xml": xml}, scheme="ed25519")
    assert isinstance(intent, iso20022.Pacs008)
    assert (intent.message_id, intent.uetr, intent.currency) == (msg_id, str(uetr), ccy)
    assert intent.amount == amount
    assert (intent.debtor_agent, intent.creditor_agent) == (b1, b2)
    assert (intent.debtor_account, intent.creditor_account) == (i1, i2)
    assert (intent.debtor_name, intent.creditor_name) == ("Alice GmbH", "Bob SA")
    # second computation: the standard library's canonicalizer (C14N 2.0) gives the same
    # bytes as exclusive C14N 1.0 for a document with one default namespace and no comments
    std = StdET.canonicalize(xml_data=xml, with_comments=False).encode()
    assert intent.digest == hashlib.sha256(std).digest()
    assert intent.messages == (iso20022.signed_info(intent.digest),)
    assert intent.end_to_end_id == "E2E-1" and intent.remittance == ()


DS = "{http://www.w3.org/2000/09/xmldsig#}"


def test_the_message_is_a_canonical_signed_info_over_the_document_digest() -> None:
    """What a node signs, read back with lxml: a ds:SignedInfo that is its own exclusive
    C14N, with the RFC 9231 EdDSA-Ed25519 method, exc-c14n, one URI-less Reference with one
    exc-c14n Transform and SHA-256 of the document's exclusive C14N."""
    xml = pacs008(remittance=("E2E-A", "E2E-B"))
    intent = iso20022.decode({"xml": xml})
    assert isinstance(intent, iso20022.Pacs008)
    assert intent.remittance == ("E2E-A", "E2E-B")
    assert intent.summary()["remittance"] == ["E2E-A", "E2E-B"]
    (message,) = intent.messages
    info = etree.fromstring(message)
    assert etree.tostring(info, method="c14n", exclusive=True) == message
    assert info.tag == f"{DS}SignedInfo"
    algs = [
        (etree.QName(e).localname, e.get("Algorithm")) for e in info.iter() if e.get("Algorithm")
    ]
    assert algs == [
        ("CanonicalizationMethod", "http://www.w3.org/2001/10/xml-exc-c14n#"),
        ("SignatureMethod", "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"),
        ("Transform", "http://www.w3.org/2001/10/xml-exc-c14n#"),
        ("DigestMethod", "http://www.w3.org/2001/04/xmlenc#sha256"),
    ]
    (ref,) = info.findall(f"{DS}Reference")
    assert ref.attrib == {}  # no URI: the Document beside the AppHdr
    c14n = etree.tostring(
        etree.fromstring(xml.encode()).getroottree(), method="c14n", exclusive=True
    )
    value = ref.findtext(f"{DS}DigestValue")
    assert base64.b64decode(value or "") == hashlib.sha256(c14n).digest() == intent.digest
    with pytest.raises(ValueError):
        iso20022.signed_info(b"\x00" * 31)


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_only_ed25519_keys_sign_an_xml_signature(scheme: str) -> None:
    with pytest.raises(KindError) as err:
        decode("iso20022", {"xml": pacs008()}, scheme=scheme)
    assert err.value.field == "scheme"


def test_digest_ignores_what_c14n_removes_and_binds_the_rest() -> None:
    base = iso20022.decode({"xml": pacs008()})
    # another serialization of the same document: no declaration, an unused prefix
    # declared, a comment, empty-element tag and attribute quoting changed
    variant = pacs008().replace("<?xml version='1.0' encoding='UTF-8'?>\n", "")
    variant = variant.replace("<Document ", '<Document xmlns:unused="urn:x" ')
    variant = variant.replace("<ChrgBr>", "<!-- note --><ChrgBr>")
    variant = variant.replace('Ccy="EUR"', "Ccy='EUR'")
    assert variant != pacs008()
    assert iso20022.decode({"xml": variant}).digest == base.digest
    other = iso20022.decode({"xml": pacs008(amount="1234.51")})
    assert other.digest != base.digest
    assert iso20022.decode({"xml": pacs008(names=None)}).debtor_name is None


def refused(xml: str, field: str) -> KindError:
    with pytest.raises(KindError) as err:
        iso20022.decode({"xml": xml})
    assert (err.value.kind, err.value.field) == ("iso20022", field), err.value
    return err.value


XXE = """<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08">&x;</Document>"""
BOMB = """<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><d>&b;</d>"""


def test_defused_and_strict() -> None:
    refused(XXE, "xml")
    refused(BOMB, "xml")
    refused(pacs008().replace("<Document", "<?evil x?><Document"), "xml")
    refused(pacs008().replace("I1", "I&unknown;"), "xml")
    refused("<a>", "xml")
    refused("", "xml")
    refused("x" * (iso20022.MAX_XML + 1), "xml")
    refused(pacs008(ns="urn:iso:std:iso:20022:tech:xsd:pacs.009.001.08"), "xml.Document")
    refused(pacs008(uetr="not-a-uuid"), "PmtId.UETR")
    refused(pacs008(uetr="2b2e5c3f-2f4a-1d2b-9f7e-1c2d3e4f5a6b"), "PmtId.UETR")  # v1
    refused(pacs008(amount="1,00"), "IntrBkSttlmAmt")
    refused(pacs008(amount="0"), "IntrBkSttlmAmt")
    refused(pacs008(amount="1.123456"), "IntrBkSttlmAmt")
    refused(pacs008(amount="01.5"), "IntrBkSttlmAmt")
    refused(pacs008(amount="1" * 19), "IntrBkSttlmAmt")
    refused(pacs008(ccy="eur"), "IntrBkSttlmAmt.Ccy")
    refused(pacs008(dbtr_bic="DEUT"), "DbtrAgt.FinInstnId.BICFI")
    refused(pacs008(cdtr_bic="bnpafrpp"), "CdtrAgt.FinInstnId.BICFI")
    refused(pacs008(dbtr_iban="DE88370400440532013000"), "DbtrAcct.Id.IBAN")  # check digits
    refused(pacs008(cdtr_iban="FR14 2004"), "CdtrAcct.Id.IBAN")
    refused(pacs008(msg_id=" padded "), "GrpHdr.MsgId")
    refused(pacs008(msg_id="x" * 36), "GrpHdr.MsgId")
    refused(pacs008().replace("<NbOfTxs>1<", "<NbOfTxs>2<"), "GrpHdr.NbOfTxs")
    twice = pacs008().replace("<ChrgBr>", '<IntrBkSttlmAmt Ccy="EUR">1</IntrBkSttlmAmt><ChrgBr>')
    refused(twice, "IntrBkSttlmAmt")
    refused(pacs008().replace("<UETR>", "<UETR><b/>").replace("</UETR>", "</UETR>"), "PmtId.UETR")
    refused(pacs008().replace("<EndToEndId>E2E-1</EndToEndId>", ""), "PmtId.EndToEndId")
    refused(pacs008(remittance=("x" * 141,)), "RmtInf.Ustrd[0]")
    refused(pacs008(remittance=("ok", " pad")), "RmtInf.Ustrd[1]")
    many = tuple(f"E{i}" for i in range(iso20022.MAX_REMITTANCE_LINES + 1))
    refused(pacs008(remittance=many), "RmtInf.Ustrd")
    refused(pacs008(remittance=("a",)).replace("</RmtInf>", "<Strd/></RmtInf>"), "RmtInf")
    with pytest.raises(KindError) as err:
        iso20022.decode({"xml": pacs008(), "signature": "x"})
    assert err.value.field == "signature"


AGENT = "<FinInstnId><BICFI>COBADEFFXXX</BICFI></FinInstnId>"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        # an intermediary agent would route the money through a bank nobody was shown
        ("<CdtrAgt>", f"<IntrmyAgt1>{AGENT}</IntrmyAgt1><CdtrAgt>", "CdtTrfTxInf.IntrmyAgt1"),
        (
            "</CdtrAcct>",
            "</CdtrAcct><UltmtCdtr><Nm>Mallory</Nm></UltmtCdtr>",
            "CdtTrfTxInf.UltmtCdtr",
        ),
        ("</CdtrAcct>", "</CdtrAcct><InstrForCdtrAgt/>", "CdtTrfTxInf.InstrForCdtrAgt"),
        ("</CdtTrfTxInf>", "</CdtTrfTxInf><SplmtryData/>", "FIToFICstmrCdtTrf.SplmtryData"),
        (
            "<NbOfTxs>1</NbOfTxs>",
            f"<NbOfTxs>1</NbOfTxs><SttlmInf><SttlmMtd>INDA</SttlmMtd>"
            f"<InstgRmbrsmntAgt>{AGENT}</InstgRmbrsmntAgt></SttlmInf>",
            "GrpHdr.SttlmInf.InstgRmbrsmntAgt",
        ),
        ("<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>1</NbOfTxs><InstgAgt/>", "GrpHdr.InstgAgt"),
        (
            "<BICFI>BNPAFRPP</BICFI>",
            "<BICFI>BNPAFRPP</BICFI><ClrSysMmbId/>",
            "CdtrAgt.FinInstnId.ClrSysMmbId",
        ),
        ("</CdtrAcct>", "<Prxy/></CdtrAcct>", "CdtrAcct.Prxy"),
        ("<IBAN>FR14", "<Othr/><IBAN>FR14", "CdtrAcct.Id.Othr"),
        ("<Nm>Bob SA</Nm>", "<Nm>Bob SA</Nm><Id/>", "Cdtr.Id"),
        ("<ChrgBr>", '<x:ChrgBr xmlns:x="urn:other"/><ChrgBr>', "CdtTrfTxInf.ChrgBr"),
        (
            "<NbOfTxs>1</NbOfTxs>",
            '<NbOfTxs>1</NbOfTxs><TtlIntrBkSttlmAmt Ccy="EUR">9999.00</TtlIntrBkSttlmAmt>',
            "GrpHdr.TtlIntrBkSttlmAmt",
        ),
        (
            "<NbOfTxs>1</NbOfTxs>",
            '<NbOfTxs>1</NbOfTxs><TtlIntrBkSttlmAmt Ccy="USD">1234.50</TtlIntrBkSttlmAmt>',
            "GrpHdr.TtlIntrBkSttlmAmt",
        ),
    ],
)
def test_what_the_approver_would_not_see_is_refused(old: str, new: str, field: str) -> None:
    xml = pacs008()
    assert old in xml
    refused(xml.replace(old, new, 1), field)


def test_a_matching_group_total_is_accepted() -> None:
    total = '<NbOfTxs>1</NbOfTxs><TtlIntrBkSttlmAmt Ccy="EUR">1234.5</TtlIntrBkSttlmAmt>'
    intent = iso20022.decode({"xml": pacs008().replace("<NbOfTxs>1</NbOfTxs>", total)})
    assert intent.amount == Decimal("1234.50")
