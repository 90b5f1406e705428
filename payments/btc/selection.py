"""UTXO selection, change and fee for a payment from the key's BIP-86 outputs.

Every coin the rail spends is one of the key's own BIP-86 outputs, so every input has the
same, exactly known weight (:data:`payments.btc.fees.INPUT_WEIGHT`, 57.5 vB) and the fee of
a candidate transaction depends only on how many inputs it has and on its output scripts:
``fee(n) = rate.fee(tx_vsize(n, outputs))``, exact, with no estimate to pad.

The algorithm:

1. **Validation.** Each payment positive, within ``MAX_MONEY``, and not dust for its script
   (:func:`payments.btc.fees.dust_threshold`); at least one payment; no coin listed twice.
2. **Uneconomic coins are left out**: a coin whose *effective value* (amount minus the fee
   of spending it) is not positive costs more than it brings.
3. **Insufficient funds** are found first, exactly: the error names the shortfall, the
   amount needed to pay the outputs and the fee with every economic coin spent and no
   change.
4. **Bitcoin Core's coin selection, as btclib-wallet ports it**
   (``btclib_wallet.coin_selection``, from Core's ``wallet/coinselection.cpp``): branch
   and bound (Murch's changeless match within the cost of change), knapsack and single
   random draw, the result of least *waste* (Core's ``GetWaste``) kept. Each candidate
   carries the exact input weight (230 WU); the long-term fee rate is the current one
   unless given; the change is the key's own BIP-86 output.
5. **Exact pricing.** btclib-wallet prices a selection conservatively (each input rounded
   up to 58 vB, the segwit marker to a whole vB), so the selection is re-priced here with
   the exact weight: with change, ``change = inputs - payments - fee(n, with change)``,
   the fee exactly the rate; a change below the dust threshold of the change script is not
   made and goes to the fee (the transaction then valued without the change output, so the
   fee still meets the rate); without change, the excess goes to the fee.
6. **Largest first** only where the conservative pricing finds no selection but the exact
   one does (a selection within a vB or two of the funds): the largest coins until the
   outputs and the fee are paid, change as in 5.
7. **Weight**: a transaction over the standard 400 000 WU (about 1 700 inputs) is refused
   here, before anything is signed, rather than by the mempool.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from btclib.exceptions import BTClibValueError
from btclib.tx import OutPoint
from btclib.tx import TxOut as BtclibTxOut
from btclib_wallet import coin_selection as btclib_selection
from btclib_wallet.coin_selection import Candidate

from payments.btc.fees import (
    INPUT_WEIGHT,
    MAX_STANDARD_TX_WEIGHT,
    FeeRate,
    dust_threshold,
    tx_vsize,
)

__all__ = [
    "MAX_MONEY",
    "Utxo",
    "TxOut",
    "Selection",
    "SelectionError",
    "InsufficientFunds",
    "DustOutput",
    "select_coins",
]

MAX_MONEY: Final = 21_000_000 * 100_000_000
ALGORITHMS: Final = ("bnb", "knapsack", "srd")


@dataclass(frozen=True)
class Utxo:
    """One spendable output of the key: its outpoint, amount and scriptPubKey."""

    txid: str  # display (reversed) hex
    vout: int
    amount: int  # satoshis
    script: bytes

    @property
    def outpoint(self) -> tuple[str, int]:
        return (self.txid, self.vout)


@dataclass(frozen=True)
class TxOut:
    script: bytes
    amount: int  # satoshis


class SelectionError(ValueError):
    """A payment that cannot be built; ``field`` names the payment or parameter at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class DustOutput(SelectionError):
    def __init__(self, field: str, amount: int, threshold: int) -> None:
        super().__init__(
            field, f"{amount} sat is dust (the threshold for this script is {threshold} sat)"
        )
        self.amount = amount
        self.threshold = threshold


class InsufficientFunds(SelectionError):
    def __init__(self, needed: int, available: int, coins: int, fee: int) -> None:
        self.needed = needed
        self.available = available
        self.shortfall = needed - available
        super().__init__(
            "amount",
            f"insufficient funds: short by {self.shortfall} sat (need {needed} sat, of which "
            f"{fee} sat fee, have {available} sat in {coins} economic coin(s))",
        )


@dataclass(frozen=True)
class Selection:
    """The chosen coins and the money flow: ``sum(inputs) == sum(payments) + change + fee``."""

    inputs: tuple[Utxo, ...]
    payments: tuple[TxOut, ...]
    change: int  # satoshis back to the key, 0 when no change output is made
    fee: int
    vsize: int  # of the finalized transaction (exact)
    algorithm: str  # "bnb" or "largest-first"

    @property
    def total_in(self) -> int:
        return sum(u.amount for u in self.inputs)


def _check_payments(payments: Sequence[TxOut]) -> None:
    if not payments:
        raise SelectionError("payments", "at least one payment is needed")
    total = 0
    for i, p in enumerate(payments):
        field = f"payments[{i}].amount"
        if not isinstance(p.amount, int) or isinstance(p.amount, bool):
            raise SelectionError(field, "must be an integer number of satoshis")
        if not 0 < p.amount <= MAX_MONEY:
            raise SelectionError(field, f"must be between 1 and {MAX_MONEY} sat, not {p.amount}")
        threshold = dust_threshold(p.script)
        if p.amount < threshold:
            raise DustOutput(field, p.amount, threshold)
        total += p.amount
    if total > MAX_MONEY:
        raise SelectionError("payments", f"total {total} sat exceeds {MAX_MONEY} sat")


def select_coins(
    utxos: Sequence[Utxo],
    payments: Sequence[TxOut],
    rate: FeeRate,
    change_script: bytes,
    *,
    long_term_rate: FeeRate | None = None,
    rng: random.Random | None = None,
    algorithms: Sequence[str] = ALGORITHMS,
) -> Selection:
    """Choose coins for ``payments`` at fee ``rate`` (module docstring for the algorithm);
    ``rng`` seeds knapsack's and single random draw's shuffles (system entropy if None);
    ``algorithms`` names which of Core's to run (all by default)."""
    _check_payments(payments)
    seen: set[tuple[str, int]] = set()
    for i, u in enumerate(utxos):
        if u.outpoint in seen:
            raise SelectionError(f"utxos[{i}]", f"{u.txid}:{u.vout} listed twice")
        seen.add(u.outpoint)
        if not 0 < u.amount <= MAX_MONEY:
            raise SelectionError(f"utxos[{i}].amount", f"out of range: {u.amount}")
    scripts = [p.script for p in payments]
    target = sum(p.amount for p in payments)

    def fee_without_change(n: int) -> int:
        return rate.fee(tx_vsize(n, scripts))

    def fee_with_change(n: int) -> int:
        return rate.fee(tx_vsize(n, [*scripts, change_script]))

    coins = sorted(
        (u for u in utxos if u.amount > rate.fee_for_weight(INPUT_WEIGHT)),
        key=lambda u: (-u.amount, u.txid, u.vout),
    )
    available = sum(u.amount for u in coins)
    if not coins or available < target + fee_without_change(len(coins)):
        n = max(len(coins), 1)
        raise InsufficientFunds(
            target + fee_without_change(n), available, len(coins), fee_without_change(n)
        )
    by_outpoint = {(bytes.fromhex(u.txid), u.vout): u for u in coins}
    candidates = [
        Candidate(
            OutPoint(bytes.fromhex(u.txid), u.vout), BtclibTxOut(u.amount, u.script), INPUT_WEIGHT
        )
        for u in coins
    ]
    try:
        result = btclib_selection.select_coins(
            candidates,
            [BtclibTxOut(p.amount, p.script) for p in payments],
            rate,
            long_term_rate or rate,
            change_script,
            INPUT_WEIGHT,
            rng=rng,
            algorithms=algorithms,
        )
    except BTClibValueError:
        chosen = _largest_first(
            coins, payments, target, fee_without_change, fee_with_change, change_script, scripts
        )
    else:
        picked = tuple(by_outpoint[(c.outpoint.tx_id, c.outpoint.vout)] for c in result.selected)
        chosen = _priced(
            picked,
            payments,
            target,
            fee_without_change,
            fee_with_change,
            change_script,
            scripts,
            result.algorithm,
            with_change=result.change > 0,
        )
    if chosen.vsize * 4 > MAX_STANDARD_TX_WEIGHT:
        raise SelectionError(
            "payments",
            f"the transaction would need {len(chosen.inputs)} inputs and weigh about "
            f"{4 * chosen.vsize} WU, over the standard {MAX_STANDARD_TX_WEIGHT} WU: pay in "
            "smaller parts or consolidate coins first",
        )
    return chosen


def _priced(
    picked: tuple[Utxo, ...],
    payments: Sequence[TxOut],
    target: int,
    fee_without_change: Callable[[int], int],
    fee_with_change: Callable[[int], int],
    change_script: bytes,
    scripts: list[bytes],
    algorithm: str,
    *,
    with_change: bool,
) -> Selection:
    """``picked`` priced exactly (module docstring, step 5)."""
    n = len(picked)
    total = sum(u.amount for u in picked)
    if with_change:
        change = total - target - fee_with_change(n)
        if change >= dust_threshold(change_script):
            vsize = tx_vsize(n, [*scripts, change_script])
            return Selection(
                picked, tuple(payments), change, total - target - change, vsize, algorithm
            )
    excess = total - target - fee_without_change(n)
    if excess < 0:  # pragma: no cover - btclib-wallet's pricing is never below the exact one
        raise AssertionError(f"{algorithm} chose {n} coins short of the exact fee")
    return Selection(
        picked, tuple(payments), 0, excess + fee_without_change(n), tx_vsize(n, scripts), algorithm
    )


def _largest_first(
    coins: list[Utxo],
    payments: Sequence[TxOut],
    target: int,
    fee_without_change: Callable[[int], int],
    fee_with_change: Callable[[int], int],
    change_script: bytes,
    scripts: list[bytes],
) -> Selection:
    """The largest coins until the payments and the exact fee are paid (step 6)."""
    total = 0
    for n, coin in enumerate(coins, start=1):
        total += coin.amount
        if total - target - fee_without_change(n) >= 0:
            return _priced(
                tuple(coins[:n]),
                payments,
                target,
                fee_without_change,
                fee_with_change,
                change_script,
                scripts,
                "largest-first",
                with_change=True,
            )
    raise AssertionError("unreachable: the funds were checked to suffice")  # pragma: no cover
