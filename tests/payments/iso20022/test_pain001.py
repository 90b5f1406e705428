"""pain.001.001.09 intake: a valid batch (four transactions in two PmtInf blocks, three
currencies) and malformed files, each refused naming the line and the field (XPath)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from payments.iso20022 import IsoError, parse_pain001

BATCH = (Path(__file__).parent / "fixtures" / "pain001_batch.xml").read_text()
TX = "/Document/CstmrCdtTrfInitn/PmtInf[{}]/CdtTrfTxInf[{}]"


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` occurrence of ``needle`` in ``text``."""
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    return text.count("\n", 0, at) + 1


def refused(text: str) -> IsoError:
    with pytest.raises(IsoError) as err:
        parse_pain001(text.encode())
    return err.value


def test_a_valid_batch_becomes_one_instruction_per_transaction() -> None:
    batch = parse_pain001(BATCH.encode())
    assert batch.message_id == "BATCH-2026-12-01-001"
    assert batch.initiating_party == "Alice GmbH"
    got = [
        (p.payment_info_id, p.end_to_end_id, p.amount, p.currency, p.creditor_account)
        for p in batch.payments
    ]
    assert got == [
        ("PMTINF-EUR-1", "E2E-INV-1001", Decimal("1250.00"), "EUR", "FR1420041010050500013M02606"),
        ("PMTINF-EUR-1", "E2E-INV-1002", Decimal("500.25"), "EUR", "FR7630006000011234567890189"),
        ("PMTINF-MIX-2", "E2E-INV-2001", Decimal("100.25"), "GBP", "GB29NWBK60161331926819"),
        ("PMTINF-MIX-2", "E2E-INV-2002", Decimal("2001"), "JPY", "DE44500105175407324931"),
    ]
    first, second, third, fourth = batch.payments
    assert first.instruction_id == "INSTR-1" and second.instruction_id is None
    assert (first.debtor_name, first.debtor_account, first.debtor_agent) == (
        "Alice GmbH",
        "DE89370400440532013000",
        "COBADEFFXXX",
    )
    assert (first.creditor_name, first.creditor_agent) == ("Bob SA", "BNPAFRPP")
    assert first.requested_execution_date == dt.date(2026, 12, 2)
    assert third.requested_execution_date == dt.date(2026, 12, 3)  # from ReqdExctnDt/DtTm
    assert first.remittance_info == ("Invoice 1001",)
    assert third.remittance_info == ("PO 77", "second line") and second.remittance_info == ()
    assert fourth.line == line_of(BATCH, "<CdtTrfTxInf>", 4)


def test_bad_iban_check_digits() -> None:
    text = BATCH.replace("FR7630006000011234567890189", "FR7630006000011234567890188")
    (p,) = refused(text).problems
    assert p.line == line_of(text, "FR7630006000011234567890188")
    assert p.field == TX.format(1, 2) + "/CdtrAcct/Id/IBAN"
    assert "checksum" in p.reason


def test_iban_outside_its_xsd_pattern() -> None:
    text = BATCH.replace("GB29NWBK60161331926819", "GB29 NWBK")
    (p,) = refused(text).problems
    assert (p.line, p.field) == (line_of(text, "GB29 NWBK"), TX.format(2, 1) + "/CdtrAcct/Id/IBAN")
    assert "pattern" in p.reason


def test_missing_end_to_end_id() -> None:
    text = BATCH.replace("<EndToEndId>E2E-INV-1002</EndToEndId>", "")
    (p,) = refused(text).problems
    assert (p.line, p.field) == (line_of(text, "<PmtId>", 2), TX.format(1, 2) + "/PmtId")
    assert "EndToEndId" in p.reason and "{" not in p.reason


def test_wrong_namespace() -> None:
    text = BATCH.replace("pain.001.001.09", "pain.001.001.03")
    (p,) = refused(text).problems
    assert (p.line, p.field) == (2, "/Document")
    assert "pain.001.001.03" in p.reason


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("500.25", "500.255", "EUR has 2 decimals, not 3"),
        (">2001<", ">2001.5<", "JPY has 0 decimals, not 1"),
        ("1250.00", "12345678901234567890.00", "digits"),  # the XSD's totalDigits 18
    ],
)
def test_amounts_beyond_the_currency_or_the_schema(old: str, new: str, why: str) -> None:
    text = BATCH.replace(old, new)
    problems = refused(text).problems
    assert len(problems) == 1, problems  # no follow-on CtrlSum noise
    (p,) = problems
    assert p.line == line_of(text, new.strip("<>"))
    assert p.field.endswith("/Amt/InstdAmt") and why in p.reason


def test_unknown_currency() -> None:
    text = BATCH.replace('Ccy="GBP"', 'Ccy="QQQ"')
    (p,) = refused(text).problems
    assert (p.line, p.field) == (line_of(text, "QQQ"), TX.format(2, 1) + "/Amt/InstdAmt")
    assert "ISO 4217" in p.reason


def test_counts_sums_duplicates_and_method() -> None:
    err = refused(
        BATCH.replace("<NbOfTxs>4<", "<NbOfTxs>5<")
        .replace("<CtrlSum>1750.25<", "<CtrlSum>1750.26<")
        .replace("E2E-INV-2002", "E2E-INV-1001")
    )
    got = {(p.field, p.line) for p in err.problems}
    assert got == {
        ("/Document/CstmrCdtTrfInitn/GrpHdr/NbOfTxs", line_of(BATCH, "<NbOfTxs>4<")),
        ("/Document/CstmrCdtTrfInitn/PmtInf[1]/CtrlSum", line_of(BATCH, "<CtrlSum>1750.25<")),
        (TX.format(2, 2) + "/PmtId/EndToEndId", line_of(BATCH, "E2E-INV-2002")),
    }
    dup = next(p for p in err.problems if p.field.endswith("EndToEndId"))
    assert f"line {line_of(BATCH, 'E2E-INV-1001')}" in dup.reason
    cheque = refused(BATCH.replace("<PmtMtd>TRF</PmtMtd>", "<PmtMtd>CHK</PmtMtd>", 1))
    assert [p.field for p in cheque.problems] == ["/Document/CstmrCdtTrfInitn/PmtInf[1]/PmtMtd"]


def test_a_transaction_without_creditor_agent_or_iban() -> None:
    block = BATCH[BATCH.index("<CdtrAgt>") : BATCH.index("</CdtrAgt>") + len("</CdtrAgt>")]
    text = BATCH.replace(block, "", 1).replace(
        "<IBAN>FR1420041010050500013M02606</IBAN>", "<Othr><Id>12345</Id></Othr>"
    )
    got = {(p.field, p.line) for p in refused(text).problems}
    assert got == {
        (TX.format(1, 1) + "/CdtrAgt/FinInstnId/BICFI", line_of(text, "<CdtTrfTxInf>")),
        (TX.format(1, 1) + "/CdtrAcct/Id/IBAN", line_of(text, "<CdtTrfTxInf>")),
    }


XXE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Document [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">&x;</Document>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE d [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">&b;</Document>
"""


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (XXE, 2, "DOCTYPE"),
        (BOMB, 2, "DOCTYPE"),
        (
            BATCH.replace("<CstmrCdtTrfInitn>", '<?xml-stylesheet href="x"?><CstmrCdtTrfInitn>'),
            3,
            "<?",
        ),
        (BATCH.replace("Bob SA", "&ext;"), line_of(BATCH, "Bob SA"), "Entity 'ext' not defined"),
        ("<Document", 1, "not well-formed"),
    ],
)
def test_dtd_entities_and_broken_xml_refused_with_their_line(
    text: str, line: int, what: str
) -> None:
    (p,) = refused(text).problems
    assert p.line == line and what in p.reason, p
    assert "root:" not in p.reason  # nothing from /etc/passwd was read


def test_problems_read_as_line_field_reason() -> None:
    err = refused(BATCH.replace("<EndToEndId>E2E-INV-1002</EndToEndId>", ""))
    assert str(err).startswith(f"line {line_of(BATCH, '<PmtId>', 2)}: {TX.format(1, 2)}/PmtId: ")


@pytest.mark.parametrize(
    ("old", "new", "when"),
    [
        ("<Dt>2026-12-02</Dt>", "<Dt>2026-12-02+01:00</Dt>", dt.date(2026, 12, 2)),
        ("2026-12-03T09:00:00Z", "2026-12-03T23:30:00.123456789-05:00", dt.date(2026, 12, 3)),
    ],
)
def test_execution_dates_with_zones_read_as_written(old: str, new: str, when: dt.date) -> None:
    """xs:date and xs:dateTime may carry a zone or nine fraction digits: the date is the
    one the initiator wrote (no conversion that could move it a day)."""
    batch = parse_pain001(BATCH.replace(old, new).encode())
    dates = {p.payment_info_id: p.requested_execution_date for p in batch.payments}
    assert when in dates.values()
