"""The pain.001 intake adapter and the settlement rail's authorization checks, against a
real SQLite ledger (no cluster: nothing here is signed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payments import ledger
from payments.db import create_schema, make_engine
from payments.intake import Pain001Intake, destination, split_destination
from payments.iso20022 import IsoError
from payments.rails import Instruction
from payments.settlement import Counterparty, SettlementRail, load_counterparties
from tests.payments.test_iso_service import BOB, DAVE, OUR_BIC, pain001

FIXTURE = Path(__file__).parent / "iso20022" / "fixtures" / "pain001_batch.xml"
ALICE_FIXTURE = "DE89370400440532013000"  # the fixture's debtor, at COBADEFFXXX
ALICE = "DE62370400440532013001"


def _engine(tmp_path: Path, accounts: list[tuple[str, str, int]]) -> tuple[Engine, dict[str, str]]:
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    create_schema(eng)
    ids = {}
    with eng.begin() as c:
        for owner, asset, decimals in accounts:
            ledger.ensure_asset(c, asset, decimals)
            ids[f"{owner}:{asset}"] = ledger.open_account(c, owner, asset).id
    return eng, ids


def test_the_fixture_batch_maps_to_settlement_payments_in_base_units(tmp_path: Path) -> None:
    eng, ids = _engine(
        tmp_path, [(ALICE_FIXTURE, "EUR", 2), (ALICE_FIXTURE, "GBP", 2), (ALICE_FIXTURE, "JPY", 0)]
    )
    msg_id, txs = Pain001Intake(eng, "COBADEFF").parse(FIXTURE.read_bytes())  # BIC8 = XXX
    assert msg_id == "BATCH-2026-12-01-001"
    got = [(t.end_to_end_id, t.account_id, t.amount, t.rail, t.destination) for t in txs]
    assert got == [
        ("E2E-INV-1001", ids[f"{ALICE_FIXTURE}:EUR"], 125_000, "iso20022",
         "BNPAFRPPXXX/FR1420041010050500013M02606"),
        ("E2E-INV-1002", ids[f"{ALICE_FIXTURE}:EUR"], 50_025, "iso20022",
         "BNPAFRPPXXX/FR7630006000011234567890189"),
        ("E2E-INV-2001", ids[f"{ALICE_FIXTURE}:GBP"], 10_025, "iso20022",
         "NWBKGB2LXXX/GB29NWBK60161331926819"),
        ("E2E-INV-2002", ids[f"{ALICE_FIXTURE}:JPY"], 2001, "iso20022",
         "BOTKJPJTXXX/" + txs[3].destination.split("/")[1]),
    ]  # fmt: skip


def test_every_mapping_fault_is_named_with_line_and_field(tmp_path: Path) -> None:
    # EUR kept in whole euros here: 500.25 cannot be booked; no GBP or JPY account at all
    eng, _ = _engine(tmp_path, [(ALICE_FIXTURE, "EUR", 0)])
    with pytest.raises(IsoError) as err:
        Pain001Intake(eng, "COBADEFFXXX").parse(FIXTURE.read_bytes())
    got = [(p.line, p.field) for p in err.value.problems]
    assert got == [
        (59, "/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[2]/Amt/InstdAmt"),
        (100, "/Document/CstmrCdtTrfInitn/PmtInf[2]/DbtrAcct/Id/IBAN"),
        (125, "/Document/CstmrCdtTrfInitn/PmtInf[2]/DbtrAcct/Id/IBAN"),
    ], err.value.problems
    assert "not a whole number" in err.value.problems[0].reason
    assert "no GBP customer account" in err.value.problems[1].reason
    # another bank's customers do not initiate payments here
    (tmp_path / "b").mkdir()
    eng2, _ = _engine(tmp_path / "b", [(ALICE_FIXTURE, "EUR", 2)])
    with pytest.raises(IsoError) as err:
        Pain001Intake(eng2, OUR_BIC).parse(FIXTURE.read_bytes())
    first = err.value.problems[0]
    assert first.field == "/Document/CstmrCdtTrfInitn/PmtInf[1]/DbtrAgt/FinInstnId/BICFI"
    assert "COBADEFFXXX is not this bank (DEUTDEFFXXX)" in first.reason


def test_a_creditor_of_this_bank_is_a_book_transfer_to_its_account(tmp_path: Path) -> None:
    eng, ids = _engine(tmp_path, [(ALICE, "EUR", 2), (DAVE, "EUR", 2)])
    intake = Pain001Intake(eng, OUR_BIC)
    _, txs = intake.parse(
        pain001("B-BOOK", [("E-1", "1.00", OUR_BIC, DAVE), ("E-2", "2.00", *BOB)])
    )
    assert [(t.rail, t.destination, t.amount) for t in txs] == [
        ("book", ids[f"{DAVE}:EUR"], 100),
        ("iso20022", destination(*BOB), 200),
    ]
    stranger = "DE08370400440532013003"  # a valid IBAN, but no account of this bank
    with pytest.raises(IsoError) as err:
        intake.parse(pain001("B-WHO", [("E-3", "1.00", OUR_BIC, stranger)]))
    (p,) = err.value.problems
    assert p.field.endswith("CdtTrfTxInf[1]/CdtrAcct/Id/IBAN") and stranger in p.reason


def test_the_settlement_rail_authorizes_only_what_it_can_settle(tmp_path: Path) -> None:
    bob = Counterparty("BNPAFRPPXXX", "Banque Bob SA", "FR1420041010050500013M02606")
    rail = SettlementRail("key_s", {bob.bic: bob})

    def reasons(dest: str, asset: str = "EUR", e2e: str | None = "E-1") -> list[str]:
        return rail.validate(Instruction("pay_1", asset, 100, dest, e2e))

    assert reasons(destination(*BOB)) == []
    assert (
        "no settlement arrangement with NWBKGB2LXXX"
        in reasons(destination("NWBKGB2L", "GB29NWBK60161331926819"))[0]
    )
    assert "is not BIC/IBAN" in reasons("FR7630006000011234567890189")[0]
    assert "not a valid IBAN" in reasons("BNPAFRPP/FR7630006000011234567890188")[0]
    assert "ISO 4217" in reasons(destination(*BOB), asset="ETH")[0]
    assert "end-to-end id" in reasons(destination(*BOB), e2e=None)[0]
    assert rail.fee_estimate(Instruction("pay_1", "EUR", 100, destination(*BOB))) == 0
    assert split_destination(destination(*BOB)) == ("BNPAFRPPXXX", BOB[1])
    bad = tmp_path / "cp.json"
    bad.write_text(json.dumps({"BNPAFRPP": {"name": "x", "iban": "FR00"}}))
    with pytest.raises(SystemExit, match="counterparty 'BNPAFRPP'"):
        load_counterparties(bad)


def test_custody_ships_the_same_pacs008_xsd_as_payments() -> None:
    """``custody pay verify-settlement`` uses custody's own copy (custody cannot import
    payments): it must be byte for byte the schema the builder validates against."""
    from custody.pay_cli import packaged_schema

    ours = Path(__file__).parents[2] / "payments" / "iso20022" / "schemas" / "pacs.008.001.08.xsd"
    assert packaged_schema().read_bytes() == ours.read_bytes()


def test_payments_to_a_bank_no_longer_settled_with_fail_and_release_their_hold(
    tmp_path: Path,
) -> None:
    """The window refuses to build a pacs.008 for a counterparty taken out of the
    arrangements since authorization: the payment fails, its hold released (no custody
    call is made: the client points nowhere)."""
    from custody.client import CustodyClient
    from payments import risk
    from payments.core import PaymentCore
    from payments.iso20022 import Party
    from payments.sanctions import SanctionsList
    from payments.settings import PACKAGE_DATA
    from payments.settlement import Settler

    eng, ids = _engine(tmp_path, [(ALICE, "EUR", 2)])
    bob = Counterparty("BNPAFRPPXXX", "Banque Bob SA", "FR1420041010050500013M02606")
    rail = SettlementRail("key_s", {bob.bic: bob})
    core = PaymentCore(
        eng, SanctionsList.load(PACKAGE_DATA / "sanctions"), risk.Settings(), {}, {},
        {rail.name: rail},
    )  # fmt: skip
    acct = ids[f"{ALICE}:EUR"]
    assert core.deposit(acct, 10_000, "seed")
    body = {"account_id": acct, "amount": 2_500, "destination": destination(*BOB),
            "rail": "iso20022", "end_to_end_id": "E-OLD-1"}  # fmt: skip
    pid, _ = core.create_payment(body, "k1")
    assert core.get(pid)["status"] == "authorized" and core.get(pid)["hold"] == 2_500
    ours = Party("TP Wallet Custody AG", "DEUTDEFFXXX", "DE89370400440532013000")
    settler = Settler(core, CustodyClient("http://127.0.0.1:1", "t" * 20), rail, "00" * 32, ours)
    rail.counterparties.clear()
    assert settler.open_windows() == []
    p = core.get(pid)
    assert p["status"] == "failed" and "no longer settles with BNPAFRPPXXX" in p["reasons"][-1]
    with eng.connect() as c:
        a = ledger.account(c, acct)
    assert (a.balance, a.held) == (10_000, 0)
    with pytest.raises(ValueError, match="not a valid IBAN"):
        Settler(core, CustodyClient("http://127.0.0.1:1", "t" * 20), rail, "00" * 32,
                Party("x", "DEUTDEFFXXX", "DE00"))  # fmt: skip
