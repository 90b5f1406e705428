"""Attack tests for ``custody/kinds/iso20022.py`` (the pacs.008 decoder every node
recomputes), written against the survivors of its mutation run (docs/MUTATION.md, issue 16).

The parser's defences are layered: a pattern refuses DTDs, entities and processing
instructions in the text; lxml's parser is set to resolve no entity, load no DTD, reach no
network and build no huge tree; the tree is then checked for a doctype and for nodes that
are not elements or comments. Each layer is tested here on its own (the text pattern
replaced by one that matches nothing, or lxml's parser used directly with the module's
settings), as a defence in depth must hold when the layer before it is gone.
Documents are built with lxml's ElementMaker by ``tests/custody/kinds/test_iso20022.py``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from custody.kinds import KindError, iso20022
from tests.custody.kinds.test_iso20022 import NS, iban_with_check, pacs008

NOTHING = re.compile(r"(?!)")  # a pattern that never matches


def refused(xml: object, field: str, detail: str | None = None) -> str:
    with pytest.raises(KindError) as err:
        iso20022.decode({"xml": xml})
    assert (err.value.kind, err.value.field) == ("iso20022", field), err.value
    if detail is not None:
        assert detail in err.value.detail, err.value
    return err.value.detail


def ok(xml: str) -> iso20022.Pacs008:
    return iso20022.decode({"xml": xml})


# -- sizes -------------------------------------------------------------------------------


def test_a_document_of_exactly_max_xml_characters_is_accepted_one_more_refused() -> None:
    assert iso20022.MAX_XML == 1024 * 1024
    base = pacs008()
    padded = base + "\n" * (1024 * 1024 - len(base))  # whitespace after the root element
    assert len(padded) == 1024 * 1024
    assert ok(padded).digest == ok(base).digest
    assert refused(padded + "\n", "xml") == f"longer than {1024 * 1024} characters"


def test_sixty_four_remittance_lines_are_accepted_and_sixty_five_refused() -> None:
    assert iso20022.MAX_REMITTANCE_LINES == 64
    lines = tuple(f"E2E-{i}" for i in range(64))
    assert ok(pacs008(remittance=lines)).remittance == lines
    refused(pacs008(remittance=(*lines, "E2E-64")), "RmtInf.Ustrd", "more than 64 lines")


def test_field_lengths_at_their_bounds() -> None:
    assert ok(pacs008(msg_id="M" * 35)).message_id == "M" * 35
    refused(pacs008(msg_id="M" * 36), "GrpHdr.MsgId", "1-35 characters")
    refused(pacs008(msg_id="").replace("<MsgId></MsgId>", "<MsgId/>"), "GrpHdr.MsgId")
    name = "N" * 140
    intent = ok(pacs008(names=(name, name), remittance=("R" * 140,)))
    assert intent.debtor_name == intent.creditor_name == name
    assert intent.remittance == ("R" * 140,)
    refused(pacs008(names=("N" * 141, "Bob")), "Dbtr.Nm", "1-140 characters")
    refused(pacs008(names=("Alice", "N" * 141)), "Cdtr.Nm", "1-140 characters")
    iban = iban_with_check("DE", "1" * 30)  # 34 characters, ISO 13616's longest
    assert len(iban) == 34
    assert ok(pacs008(cdtr_iban=iban)).creditor_account == iban
    bic = "DEUTDEFFXXX"
    assert ok(pacs008(dbtr_bic=bic, cdtr_bic="BNPAFRPP")).debtor_agent == bic


def test_amounts_of_18_digits_are_accepted_and_19_refused() -> None:
    assert ok(pacs008(amount="1234567890123.12345")).amount == Decimal("1234567890123.12345")
    assert ok(pacs008(amount="123456789012345678")).amount == Decimal("123456789012345678")
    assert ok(pacs008(amount="0.00001")).amount == Decimal("0.00001")  # leading zeros ignored
    refused(pacs008(amount="12345678901234.12345"), "IntrBkSttlmAmt", "more than 18 digits")
    refused(pacs008(amount="0.0"), "IntrBkSttlmAmt", "must be positive")


# -- the parser's layers, each on its own ------------------------------------------------


def module_parser(xml: bytes) -> etree._Element:
    return etree.fromstring(xml, iso20022._parser())


def test_the_parser_alone_resolves_no_entity() -> None:
    root = module_parser(b'<!DOCTYPE d [<!ENTITY a "SECRET">]><d>&a;</d>')
    assert "SECRET" not in "".join(root.itertext())


def test_the_parser_alone_loads_no_external_dtd(tmp_path: Path) -> None:
    dtd = tmp_path / "x.dtd"
    dtd.write_text('<!ENTITY e "FROMDTD">\n')
    root = module_parser(f'<!DOCTYPE d SYSTEM "{dtd}"><d>&e;</d>'.encode())
    assert root.getroottree().docinfo.externalDTD is None  # the file was never read
    assert "FROMDTD" not in "".join(root.itertext())


def test_the_parser_alone_builds_no_huge_tree() -> None:
    deep = b"<a>" * 300 + b"</a>" * 300  # libxml2 refuses depth > 256 without XML_PARSE_HUGE
    with pytest.raises(etree.XMLSyntaxError):
        module_parser(deep)
    xml = f'<Document xmlns="{NS}">' + "<a>" * 300 + "</a>" * 300 + "</Document>"
    assert "not well-formed" in refused(xml, "xml")


def test_the_parser_alone_keeps_processing_instructions_for_the_tree_check() -> None:
    root = module_parser(b"<d><?evil x?></d>")
    assert [type(n) for n in root] == [etree._ProcessingInstruction]


def test_without_the_text_pattern_the_tree_check_refuses_dtds_and_pis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(iso20022, "_FORBIDDEN", NOTHING)
    body = pacs008().split("?>", 1)[1]
    # a DOCTYPE with no internal subset (only the doctype is set), and one with one
    refused('<!DOCTYPE Document SYSTEM "urn:x:none">' + body, "xml", "DTDs are refused")
    refused("<!DOCTYPE Document [<!ELEMENT Document ANY>]>" + body, "xml", "DTDs are refused")
    pi = body.replace("<ChrgBr>", "<?evil x?><ChrgBr>")
    refused(pi, "xml", "processing instructions and entities are refused")
    # a comment before it does not end the check
    both = body.replace("<ChrgBr>", "<!-- c --><?evil x?><ChrgBr>")
    refused(both, "xml", "processing instructions and entities are refused")


def test_comments_are_accepted_anywhere_and_sign_nothing() -> None:
    base = ok(pacs008())
    xml = pacs008().replace("<ChrgBr>", "<!-- a --><ChrgBr>").replace("<BICFI>", "<!--b--><BICFI>")
    assert ok(xml).digest == base.digest
    assert ok(xml.replace("<GrpHdr>", "<!-- c --><GrpHdr>")).digest == base.digest


def test_only_utf8_is_accepted() -> None:
    body = pacs008().split("?>", 1)[1]
    for name in ("UTF-8", "utf-8", "UTF8"):
        assert ok(f'<?xml version="1.0" encoding="{name}"?>' + body).message_id == "MSG-1"
    assert ok(body.lstrip()).message_id == "MSG-1"  # no declaration: UTF-8
    for name in ("ISO-8859-1", "US-ASCII"):
        refused(f'<?xml version="1.0" encoding="{name}"?>' + body, "xml", "only UTF-8")


def test_non_text_and_unencodable_xml_are_refused() -> None:
    assert refused(pacs008().encode(), "xml") == "must be a string"
    assert refused(None, "xml") == "must be a string"
    lone = pacs008().replace("Alice GmbH", "Alice \ud800")
    assert refused(lone, "xml") == "not encodable as UTF-8"


# -- structure -----------------------------------------------------------------------------


def test_the_root_must_be_one_document_of_one_credit_transfer() -> None:
    xml = pacs008()
    refused(xml.replace("<Document", "<Doc").replace("</Document>", "</Doc>"), "xml.Document")
    refused(pacs008(ns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.8"), "xml.Document")
    two = xml.replace("</Document>", "<FIToFICstmrCdtTrf/></Document>")
    refused(two, "xml.Document", "exactly one FIToFICstmrCdtTrf")
    other = xml.replace("FIToFICstmrCdtTrf>", "FIToFIPmtStsRpt>")
    refused(other, "FIToFICstmrCdtTrf", "missing")


def test_one_and_only_one_of_each_field() -> None:
    xml = pacs008()
    refused(xml.replace("<MsgId>MSG-1</MsgId>", ""), "GrpHdr.MsgId", "missing")
    refused(
        xml.replace("<MsgId>MSG-1</MsgId>", "<MsgId>A</MsgId><MsgId>B</MsgId>"),
        "GrpHdr.MsgId",
        "occurs more than once",
    )
    two_names = xml.replace("<Nm>Alice GmbH</Nm>", "<Nm>Alice GmbH</Nm><Nm>Mallory</Nm>")
    refused(two_names, "Dbtr.Nm", "occurs more than once")
    two_rmt = pacs008(remittance=("a",)).replace("</RmtInf>", "</RmtInf><RmtInf/>")
    refused(two_rmt, "RmtInf", "occurs more than once")
    total = '<TtlIntrBkSttlmAmt Ccy="EUR">1234.50</TtlIntrBkSttlmAmt>'
    twice = xml.replace("<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>1</NbOfTxs>" + total * 2)
    refused(twice, "GrpHdr.TtlIntrBkSttlmAmt", "occurs more than once")
    extra = '<TtlIntrBkSttlmAmt Ccy="EUR" X="1">1234.50</TtlIntrBkSttlmAmt>'
    refused(
        xml.replace("<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>1</NbOfTxs>" + extra),
        "GrpHdr.TtlIntrBkSttlmAmt",
        "must equal",
    )
    refused(xml.replace('Ccy="EUR"', 'Ccy="EUR" X="1"'), "IntrBkSttlmAmt.Ccy", "the one attribute")


def test_summary_names_the_message_type_and_every_field() -> None:
    intent = ok(pacs008(remittance=("E2E-A",)))
    assert intent.summary() == {
        "message_type": "pacs.008.001.08",
        "message_id": "MSG-1",
        "end_to_end_id": "E2E-1",
        "uetr": "2b2e5c3f-2f4a-4d2b-9f7e-1c2d3e4f5a6b",
        "amount": "1234.50",
        "currency": "EUR",
        "debtor_agent": "DEUTDEFFXXX",
        "creditor_agent": "BNPAFRPP",
        "debtor_account": "DE89370400440532013000",
        "creditor_account": "FR1420041010050500013M02606",
        "debtor_name": "Alice GmbH",
        "creditor_name": "Bob SA",
        "remittance": ["E2E-A"],
        "digest": intent.digest.hex(),
    }


def test_signed_info_takes_a_32_byte_digest_only() -> None:
    assert b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" in iso20022.signed_info(bytes(32))
    for n in (0, 31, 33):
        with pytest.raises(ValueError, match="32 bytes"):
            iso20022.signed_info(bytes(n))


def test_a_parse_error_is_shown_cut_to_120_characters() -> None:
    xml = f'<Document xmlns="{NS}"><{"a" * 200}></b></Document>'
    with pytest.raises(etree.XMLSyntaxError) as lxml_err:
        etree.fromstring(xml.encode())
    assert len(str(lxml_err.value)) > 121
    assert refused(xml, "xml") == f"not well-formed XML: {str(lxml_err.value)[:120]}"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        # a comment just before an element nobody was shown must not end the allowlist check
        (
            "<CdtrAgt>",
            "<!-- routing --><IntrmyAgt1><FinInstnId><BICFI>COBADEFFXXX</BICFI></FinInstnId>"
            "</IntrmyAgt1><CdtrAgt>",
            "CdtTrfTxInf.IntrmyAgt1",
        ),
        ("<MsgId>", "<!-- c --><InstgAgt/><MsgId>", "GrpHdr.InstgAgt"),
        ("<IBAN>FR14", "<!-- c --><Othr/><IBAN>FR14", "CdtrAcct.Id.Othr"),
    ],
)
def test_a_comment_does_not_hide_the_element_after_it(old: str, new: str, field: str) -> None:
    xml = pacs008()
    assert old in xml
    refused(xml.replace(old, new, 1), field, "not shown to the policy and approvers")


def test_a_group_total_of_24_characters_is_read() -> None:
    # 18 digits and five zero decimals: the longest text the amount pattern admits (24)
    total = '<TtlIntrBkSttlmAmt Ccy="EUR">123456789012345678.00000</TtlIntrBkSttlmAmt>'
    xml = pacs008(amount="123456789012345678")
    intent = ok(xml.replace("<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>1</NbOfTxs>" + total))
    assert intent.amount == Decimal("123456789012345678")


def test_an_amount_of_24_characters_is_refused_for_its_digits_not_its_length() -> None:
    refused(pacs008(amount="123456789012345678.00000"), "IntrBkSttlmAmt", "more than 18 digits")
