"""Coin selection (Core's algorithms through btclib-wallet, priced exactly here): change and
dust, fee math, refusals. Exact examples worked by hand, then the invariants over random
wallets (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.btc.fees import FeeRate, dust_threshold, tx_vsize
from payments.btc.selection import (
    ALGORITHMS,
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
RNG = random.Random(20261201)  # knapsack's and single random draw's shuffles, reproducible


def coins(*amounts: int) -> list[Utxo]:
    return [Utxo(f"{i:064x}", i % 3, a, CHANGE) for i, a in enumerate(amounts)]


def balanced(s: Selection) -> bool:
    return s.total_in == sum(p.amount for p in s.payments) + s.change + s.fee


def test_a_near_match_needs_no_change() -> None:
    rate = FeeRate.sat_per_vb(2)
    # 2 inputs + 1 P2WPKH output: 4*(8+1+82+1+31)+2+132 = 626 WU, 157 vB, 314 sat
    assert tx_vsize(2, [P2WPKH]) == 157
    wallet = coins(100_000, 50_000, 20_000, 7_000)
    # 50 000 + 20 000 leave 100 sat over the exact fee: within the cost of change (a change
    # output and its later spend, about 101 vB, 201 sat), so branch and bound makes no
    # change and the 100 sat go to the fee; so does the least-waste pick of all three
    for algorithms in (("bnb",), ALGORITHMS):
        s = select_coins(
            wallet, [TxOut(P2WPKH, 69_586)], rate, CHANGE, algorithms=algorithms, rng=RNG
        )
        assert s.change == 0 and sorted(u.amount for u in s.inputs) == [20_000, 50_000]
        assert s.fee == 414 and s.vsize == 157 and balanced(s)
    assert select_coins(wallet, [TxOut(P2WPKH, 69_586)], rate, CHANGE, algorithms=("bnb",)
                        ).algorithm == "bnb"  # fmt: skip


def test_change_goes_back_to_the_key_and_the_fee_is_exactly_the_rate() -> None:
    rate = FeeRate.sat_per_vb(3)
    wallet = coins(50_000, 30_000, 120_000)
    s = select_coins(wallet, [TxOut(P2WPKH, 140_000)], rate, CHANGE, rng=RNG)
    assert s.change > 0 and len(s.inputs) >= 2
    assert s.vsize == tx_vsize(len(s.inputs), [P2WPKH, CHANGE])
    assert s.fee == rate.fee(s.vsize) and balanced(s)


def test_funds_within_a_vbyte_of_the_need_are_still_spent_exactly() -> None:
    """btclib-wallet prices each input at 58 vB; with exactly the funds the exact 57.5 vB
    needs, the largest-first fallback spends them, the fee exactly the rate."""
    rate = FeeRate.sat_per_vb(10)
    fee = rate.fee(tx_vsize(2, [P2WPKH]))
    s = select_coins(coins(60_000, 40_000), [TxOut(P2WPKH, 100_000 - fee)], rate, CHANGE)
    assert s.algorithm == "largest-first" and s.change == 0 and s.fee == fee
    assert len(s.inputs) == 2 and balanced(s)


def test_change_below_dust_goes_to_the_fee() -> None:
    rate = FeeRate.sat_per_vb(1)
    fee0 = rate.fee(tx_vsize(1, [P2WPKH]))  # 111 vB
    # one coin: an excess of 300 would make change of 300 - 43 (the change output) = 257
    # sat, below P2TR dust (330): no change, the 300 go to the fee
    amount = 100_000 - fee0 - 300
    s = select_coins(coins(100_000), [TxOut(P2WPKH, amount)], rate, CHANGE, rng=RNG)
    assert s.change == 0 and s.fee == fee0 + 300
    assert s.vsize == tx_vsize(1, [P2WPKH]) and balanced(s)
    # with 100 sat more excess the change (357) is no longer dust: it is made
    s = select_coins(coins(100_000), [TxOut(P2WPKH, amount - 100)], rate, CHANGE, rng=RNG)
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
    # branch and bound alone (knapsack over 1 800 coins is slow): no changeless match,
    # so the largest coins are taken until the exact fee is paid
    s = select_coins(wallet, [TxOut(P2WPKH, 1_000_000)], rate, CHANGE, algorithms=("bnb",))
    assert len(s.inputs) == 1_062 and s.vsize * 4 <= 400_000 and balanced(s)
    with pytest.raises(SelectionError) as e:
        select_coins(wallet, [TxOut(P2WPKH, 1_640_000)], rate, CHANGE, algorithms=("bnb",))
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
        # branch and bound's window (the cost of change, 43 + 57.5 vB) as btclib-wallet
        # prices it, which rounds each input up by 0.5 vB and the segwit marker by 0.5
        cost_of_change = rate.fee_for_weight(4 * 43 + 230)
        slack = rate.fee(len(s.inputs) // 2 + 3)
        assert overpaid <= max(cost_of_change + slack, dust_threshold(CHANGE) - 1 + change_cost)


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
        s = select_coins(coins(*amounts), payments, rate, CHANGE, rng=RNG)
    except InsufficientFunds as e:
        assert e.shortfall > 0
        assert sum(amounts) < sum(pay) + rate.fee(tx_vsize(len(amounts), [P2WPKH] * len(pay)))
        return
    check(s, rate)
