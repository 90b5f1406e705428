"""Coin selection: branch and bound, largest first, change and dust, fee math, refusals.
Exact examples worked by hand, then the invariants over random wallets (hypothesis) and
branch and bound against a brute-force search of every subset."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.btc.fees import FeeRate, dust_threshold, tx_vsize
from payments.btc.selection import (
    MAX_MONEY,
    DustOutput,
    InsufficientFunds,
    Selection,
    SelectionError,
    TxOut,
    Utxo,
    select_coins,
)

CHANGE = b"\x51\x20" + b"\x11" * 32  # the key's BIP-86 output
P2WPKH = b"\x00\x14" + b"\x22" * 20
P2PKH = b"\x76\xa9\x14" + b"\x33" * 20 + b"\x88\xac"


def coins(*amounts: int) -> list[Utxo]:
    return [Utxo(f"{i:064x}", i % 3, a, CHANGE) for i, a in enumerate(amounts)]


def balanced(s: Selection) -> bool:
    return s.total_in == sum(p.amount for p in s.payments) + s.change + s.fee


def test_branch_and_bound_finds_a_changeless_match() -> None:
    rate = FeeRate.sat_per_vb(2)
    # 2 inputs + 1 P2WPKH output: 4*(8+1+82+1+31)+2+132 = 626 WU, 157 vB, 314 sat
    assert tx_vsize(2, [P2WPKH]) == 157
    s = select_coins(coins(100_000, 50_000, 20_000, 7_000), [TxOut(P2WPKH, 69_686)], rate, CHANGE)
    assert s.algorithm == "bnb" and s.change == 0
    assert sorted(u.amount for u in s.inputs) == [20_000, 50_000]
    assert s.fee == 314 and s.vsize == 157 and balanced(s)
    # 100 sat more than the exact fee stays within cost_of_change (a change output and its
    # later spend: 100.5 vB, 201 sat at 2 sat/vB) and goes to the fee
    s = select_coins(coins(100_000, 50_000, 20_000, 7_000), [TxOut(P2WPKH, 69_586)], rate, CHANGE)
    assert s.algorithm == "bnb" and s.fee == 414 and s.change == 0


def test_a_match_whose_fee_rounds_up_past_the_effective_window_is_found() -> None:
    # at 3 sat/vB the 2-input tx is 156.5 -> 157 vB: its exact excess (303 sat, the cost of
    # change) is reached although the effective values (which carry no rounding) put the
    # set 1.5 sat past the window; a search in effective values alone prunes it
    rate = FeeRate.sat_per_vb(3)
    s = select_coins(coins(4_067, 10_358, 5_863), [TxOut(P2WPKH, 13_651)], rate, CHANGE)
    assert s.algorithm == "bnb" and sorted(u.amount for u in s.inputs) == [4_067, 10_358]
    assert s.fee - rate.fee(s.vsize) == 303 == rate.fee_for_weight(4 * 43 + 230)


def test_largest_first_with_change_back_to_the_key() -> None:
    rate = FeeRate.sat_per_vb(3)
    s = select_coins(coins(50_000, 30_000, 120_000), [TxOut(P2WPKH, 140_000)], rate, CHANGE)
    assert s.algorithm == "largest-first"
    assert [u.amount for u in s.inputs] == [120_000, 50_000]
    assert s.vsize == tx_vsize(2, [P2WPKH, CHANGE]) == 200
    assert s.fee == 600 and s.change == 170_000 - 140_000 - 600 and balanced(s)


def test_change_below_dust_goes_to_the_fee() -> None:
    rate = FeeRate.sat_per_vb(1)
    fee0 = rate.fee(tx_vsize(1, [P2WPKH]))  # 111 vB
    # excess 300: above cost_of_change (101 sat, so not a BnB match), and the change it
    # would make (300 - 43 for the change output = 257) is below P2TR dust (330)
    amount = 100_000 - fee0 - 300
    s = select_coins(coins(100_000), [TxOut(P2WPKH, amount)], rate, CHANGE)
    assert s.algorithm == "largest-first" and s.change == 0
    assert s.fee == fee0 + 300 and s.vsize == tx_vsize(1, [P2WPKH]) and balanced(s)
    # with 100 sat more excess the change (357) is no longer dust: it is made
    s = select_coins(coins(100_000), [TxOut(P2WPKH, amount - 100)], rate, CHANGE)
    assert s.change == 357 >= dust_threshold(CHANGE) and s.fee == rate.fee(s.vsize)


def test_insufficient_funds_names_the_shortfall() -> None:
    rate = FeeRate.sat_per_vb(2)
    fee = rate.fee(tx_vsize(2, [P2WPKH]))
    with pytest.raises(InsufficientFunds) as e:
        select_coins(coins(40_000, 30_000), [TxOut(P2WPKH, 70_000)], rate, CHANGE)
    assert e.value.shortfall == fee and e.value.needed == 70_000 + fee
    assert e.value.available == 70_000 and e.value.field == "amount"
    assert f"short by {fee} sat" in str(e.value)
    with pytest.raises(InsufficientFunds) as e:
        select_coins([], [TxOut(P2WPKH, 1_000)], rate, CHANGE)
    assert e.value.available == 0


def test_uneconomic_coins_are_left_out() -> None:
    rate = FeeRate.sat_per_vb(100)  # a coin costs 5750 sat to spend
    with pytest.raises(InsufficientFunds) as e:
        select_coins(coins(5_750, 5_000), [TxOut(P2WPKH, 1_000)], rate, CHANGE)
    assert "in 0 economic coin(s)" in str(e.value)
    s = select_coins(coins(5_000, 60_000), [TxOut(P2WPKH, 1_000)], rate, CHANGE)
    assert [u.amount for u in s.inputs] == [60_000]


def test_dust_and_bad_amounts_are_refused_naming_the_payment() -> None:
    rate = FeeRate.sat_per_vb(1)
    wallet = coins(100_000)
    with pytest.raises(DustOutput) as e:
        select_coins(wallet, [TxOut(P2WPKH, 5_000), TxOut(P2WPKH, 293)], rate, CHANGE)
    assert e.value.field == "payments[1].amount" and e.value.threshold == 294
    assert select_coins(wallet, [TxOut(P2WPKH, 294)], rate, CHANGE).payments[0].amount == 294
    with pytest.raises(DustOutput) as e:
        select_coins(wallet, [TxOut(P2PKH, 545)], rate, CHANGE)
    assert e.value.threshold == 546
    for bad in (0, -1, MAX_MONEY + 1, True):
        with pytest.raises(SelectionError) as refused:
            select_coins(wallet, [TxOut(P2WPKH, bad)], rate, CHANGE)
        assert refused.value.field == "payments[0].amount", bad
    with pytest.raises(SelectionError) as refused:
        select_coins(wallet, [], rate, CHANGE)
    assert refused.value.field == "payments"
    with pytest.raises(SelectionError) as refused:
        select_coins([*wallet, wallet[0]], [TxOut(P2WPKH, 1_000)], rate, CHANGE)
    assert refused.value.field == "utxos[1]"


def test_a_transaction_over_the_standard_weight_is_refused_before_signing() -> None:
    rate = FeeRate.sat_per_vb(1)
    wallet = coins(*([1_000] * 1_800))  # 942 sat effective each
    s = select_coins(wallet, [TxOut(P2WPKH, 1_000_000)], rate, CHANGE)
    assert len(s.inputs) == 1_062 and s.vsize * 4 <= 400_000 and balanced(s)
    with pytest.raises(SelectionError) as e:
        select_coins(wallet, [TxOut(P2WPKH, 1_640_000)], rate, CHANGE)
    assert e.value.field == "payments" and "over the standard 400000 WU" in e.value.detail


def check(s: Selection, rate: FeeRate) -> None:
    """What every selection must satisfy."""
    scripts = [p.script for p in s.payments]
    assert balanced(s)
    assert len({u.outpoint for u in s.inputs}) == len(s.inputs)
    if s.change:
        assert s.change >= dust_threshold(CHANGE)
        assert s.vsize == tx_vsize(len(s.inputs), [*scripts, CHANGE])
        assert s.fee == rate.fee(s.vsize)  # exactly the rate (rounded up), no more
    else:
        assert s.vsize == tx_vsize(len(s.inputs), scripts)
        overpaid = s.fee - rate.fee(s.vsize)
        assert overpaid >= 0
        change_cost = rate.fee(tx_vsize(len(s.inputs), [*scripts, CHANGE])) - rate.fee(s.vsize)
        cost_of_change = rate.fee_for_weight(4 * 43 + 230)
        assert overpaid <= max(cost_of_change, dust_threshold(CHANGE) - 1 + change_cost)


@settings(max_examples=150, deadline=None)
@given(
    amounts=st.lists(st.integers(2_000, 5_000_000), min_size=1, max_size=25),
    pay=st.lists(st.integers(300, 3_000_000), min_size=1, max_size=3),
    rate=st.integers(1_000, 10_000).map(lambda r: FeeRate(sats_per_kvbyte=r)),
)
def test_every_selection_balances_and_meets_its_rate(
    amounts: list[int], pay: list[int], rate: FeeRate
) -> None:
    payments = [TxOut(P2WPKH, a) for a in pay]
    try:
        s = select_coins(coins(*amounts), payments, rate, CHANGE)
    except InsufficientFunds as e:
        assert e.shortfall > 0
        assert sum(amounts) < sum(pay) + rate.fee(tx_vsize(len(amounts), [P2WPKH] * len(pay)))
        return
    check(s, rate)


def brute_force_best(wallet: list[Utxo], target: int, rate: FeeRate) -> tuple[int, int] | None:
    """(excess, size) of the best changeless set over every subset of the economic coins."""
    cost_of_change = rate.fee_for_weight(4 * 43 + 230)
    wallet = [u for u in wallet if u.amount > rate.fee_for_weight(230)]
    best = None
    for n in range(1, len(wallet) + 1):
        for subset in itertools.combinations(wallet, n):
            excess = sum(u.amount for u in subset) - target - rate.fee(tx_vsize(n, [P2WPKH]))
            if 0 <= excess <= cost_of_change and (best is None or (excess, n) < best):
                best = (excess, n)
    return best


@settings(max_examples=120, deadline=None)
@given(
    amounts=st.lists(st.integers(2_000, 60_000), min_size=1, max_size=9),
    pick=st.lists(st.booleans(), min_size=9, max_size=9),
    slack=st.integers(0, 250),
    rate=st.integers(1_000, 10_000).map(lambda r: FeeRate(sats_per_kvbyte=r)),
)
def test_branch_and_bound_finds_the_best_changeless_set(
    amounts: list[int], pick: list[bool], slack: int, rate: FeeRate
) -> None:
    wallet = coins(*amounts)
    # a target that some subset nearly matches, so that changeless sets often exist
    chosen = [a for a, p in zip(amounts, pick, strict=False) if p] or amounts[:1]
    target = sum(chosen) - rate.fee(tx_vsize(len(chosen), [P2WPKH])) - slack
    if target < 294:
        return
    best = brute_force_best(wallet, target, rate)
    s = select_coins(wallet, [TxOut(P2WPKH, target)], rate, CHANGE)
    check(s, rate)
    if best is None:
        assert s.algorithm == "largest-first"
    else:
        assert s.algorithm == "bnb"
        assert (s.fee - rate.fee(s.vsize), len(s.inputs)) == best
