"""Sanctions list (OFAC SDN CSV layout) and the risk rules, with their readable reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments import risk
from payments.sanctions import SanctionsList, SanctionsListError, normalize
from payments.settings import PACKAGE_DATA

FIXTURE = PACKAGE_DATA / "sanctions"


def test_fixture_list_loads_crypto_addresses_and_ibans() -> None:
    sl = SanctionsList.load(FIXTURE)
    e = sl.match("0x1111111111111111111111111111111111111111")
    assert e is not None and e.ent_num == 9001 and e.id_type == "ETH" and e.country == "Neverland"
    assert sl.match("0x2222222222222222222222222222222222222222").programs == ("SDGT", "CYBER2")
    assert sl.match("0x3333333333333333333333333333333333333333").id_type == "USDT"
    assert sl.match("bc1qfixturesanctioned0000000000000000000xyz").id_type == "XBT"
    assert sl.match("DE89370400440532013000").id_type == "IBAN"  # listed with spaces
    assert sl.match("GB33BUKB20201555555555").ent_num == 9003
    assert sl.match("0x4444444444444444444444444444444444444444") is None


def test_matching_ignores_case_and_spacing() -> None:
    sl = SanctionsList.load(FIXTURE)
    assert sl.match("0x1111111111111111111111111111111111111111".upper().replace("0X", "0x"))
    assert sl.match("de89 3704 0044 0532 0130 00")
    assert sl.match("BC1QFIXTURESANCTIONED0000000000000000000XYZ")
    assert normalize(" GB33 BUKB 2020 1555 5555 55 ") == "GB33BUKB20201555555555"


def test_malformed_list_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    good = (FIXTURE / "sdn.csv").read_text()
    (tmp_path / "sdn.csv").write_text(good + '9009,"SHORT ROW","-0- "\n')
    with pytest.raises(SanctionsListError, match=r"sdn.csv line 4, field row: 3 fields, not 12"):
        SanctionsList.load(tmp_path)
    (tmp_path / "sdn.csv").write_text('x1,"N","-0- ","P","","","","","","","",""\n')
    with pytest.raises(SanctionsListError, match=r"line 1, field ent_num: 'x1' is not an integer"):
        SanctionsList.load(tmp_path)


def facts(**kw: object) -> risk.Facts:
    base: dict[str, object] = dict(
        amount=100, asset="USDC", decimals=2, destination="acct_x", sanctioned=None,
        per_payment_limit=None, daily_limit=None, spent_today=0, recent_count=0,
        known_destination=True, history=[],
    )  # fmt: skip
    base.update(kw)
    return risk.Facts(**base)  # type: ignore[arg-type]


S = risk.Settings()


def test_clean_payment_scores_zero() -> None:
    a = risk.assess(facts(), S)
    assert (a.score, a.reasons, a.declined(S)) == (0, [], False)


def test_sanctioned_destination_is_a_hard_decline_naming_the_entry() -> None:
    e = SanctionsList.load(FIXTURE).match("GB33BUKB20201555555555")
    a = risk.assess(facts(destination="GB33BUKB20201555555555", sanctioned=e), S)
    assert a.declined(S) and a.hard
    assert (
        "GB33BUKB20201555555555 is on the sanctions list: FIXTURE SHELL TRADING CO "
        "(SDN entry 9003, programs IRAN, Atlantis)" in a.reasons[0]
    )


def test_limits_are_hard_declines_with_amounts_in_units() -> None:
    a = risk.assess(facts(amount=150_00, per_payment_limit=100_00), S)
    assert a.declined(S)
    assert a.reasons == ["amount 150 USDC is above the per-payment limit 100 USDC"]
    a = risk.assess(facts(amount=60_00, daily_limit=100_00, spent_today=50_00), S)
    assert (
        a.declined(S)
        and "50 USDC already sent in the last 24 hours is above the daily limit 100 USDC"
        in a.reasons[0]
    )
    assert not risk.assess(facts(amount=50_00, daily_limit=100_00, spent_today=50_00), S).declined(
        S
    )


def test_scored_rules_add_up_and_decline_at_the_threshold() -> None:
    a = risk.assess(facts(known_destination=False), S)
    assert (
        a.score == 15 and not a.declined(S) and a.reasons == ["first payment to destination acct_x"]
    )
    a = risk.assess(facts(recent_count=5, known_destination=False), S)
    assert a.score == 45 and not a.declined(S)
    hist = [100, 110, 90, 105, 95, 100]
    a = risk.assess(facts(amount=1000, history=hist, recent_count=5), S)
    assert a.score == 75 and a.declined(S)
    assert any(
        "standard deviations above this customer's mean of 1 USDC over 6 payments" in r
        for r in a.reasons
    )


def test_zscore_needs_history_and_spread() -> None:
    assert risk.zscore(5, [5]) is None
    assert risk.zscore(5, [5, 5, 5]) is None
    z = risk.zscore(130, [100, 110, 90, 105, 95])
    assert z is not None and round(z, 3) == round((130 - 100) / 7.905694150420948, 3)
    few = risk.assess(facts(amount=10**6, history=[1, 2, 3]), S)  # under zscore_min_history
    assert few.score == 0
