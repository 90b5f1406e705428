"""UTXO selection, change and fee for a payment from the key's BIP-86 outputs.

Every coin the rail spends is one of the key's own BIP-86 outputs, so every input has the
same, exactly known weight (:data:`payments.btc.fees.INPUT_WEIGHT`, 57.5 vB) and the fee of
a candidate transaction depends only on how many inputs it has and on its output scripts:
``fee(n) = rate.fee(tx_vsize(n, outputs))``, exact, with no estimate to pad.

The algorithm, after Bitcoin Core's wallet (``wallet/coinselection.cpp``):

1. **Validation.** Each payment positive, within ``MAX_MONEY``, and not dust for its script
   (:func:`payments.btc.fees.dust_threshold`); at least one payment.
2. **Uneconomic coins are left out**: a coin whose *effective value* (amount minus the fee
   of spending it, ``rate * 57.5 vB``) is not positive costs more than it brings.
3. **Branch and bound** (Murch, "An Evaluation of Coin Selection Strategies", 2016; Core's
   ``SelectCoinsBnB``): a depth-first search over the coins sorted by effective value,
   largest first, for a set that pays the outputs and the fee *without change* and leaves
   an excess of at most ``cost_of_change`` (the fee of a change output plus the fee of
   spending it later), which then goes to the fee. The search keeps the set with the least
   excess (Core's waste metric when the long-term fee rate equals the current one), prunes
   a branch that can no longer reach the target or already overshoots the window, and gives
   up after :data:`BNB_MAX_TRIES` steps. Its arithmetic is in units of 1/4000 sat (effective
   values times 4000 are integers); each candidate is then checked with the exact fee.
4. **Largest first** otherwise: add the largest coins until the outputs and the fee with a
   change output are paid; the change goes back to the key's own BIP-86 address. Change
   below the dust threshold of the change script is not made: it goes to the fee (and the
   transaction is then valued without the change output, so the fee still meets the rate).
5. **Insufficient funds**: the error names the shortfall, the amount needed to pay the
   outputs and the fee with every economic coin spent and no change.
6. **Weight**: a transaction over the standard 400 000 WU (about 1 700 inputs) is refused
   here, before anything is signed, rather than by the mempool.

Why by hand: the kept coin-selection packages either select only within their own wallet's
UTXO bookkeeping (bdkpython) or are unmaintained ports without types or tests
(``bitcoin-coin-selection``, ``coinselectpy``); the algorithm is short and is tested here
against its invariants (hypothesis) and exact examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from payments.btc.fees import (
    INPUT_WEIGHT,
    MAX_STANDARD_TX_WEIGHT,
    FeeRate,
    dust_threshold,
    output_size,
    tx_vsize,
    tx_weight,
)

__all__ = [
    "MAX_MONEY",
    "BNB_MAX_TRIES",
    "Utxo",
    "TxOut",
    "Selection",
    "SelectionError",
    "InsufficientFunds",
    "DustOutput",
    "select_coins",
]

MAX_MONEY: Final = 21_000_000 * 100_000_000
BNB_MAX_TRIES: Final = 100_000  # Core's TOTAL_TRIES


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
    max_tries: int = BNB_MAX_TRIES,
) -> Selection:
    """Choose coins for ``payments`` at fee ``rate`` (module docstring for the algorithm)."""
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

    # effective values in 1/4000 sat: a coin's fee is rate(sat/kvB) * weight / 4000
    scale = 4000
    input_cost = rate.sats_per_kvbyte * INPUT_WEIGHT
    coins = sorted(
        (u for u in utxos if u.amount * scale > input_cost),
        key=lambda u: (-u.amount, u.txid, u.vout),
    )
    available = sum(u.amount for u in coins)
    if not coins or available < target + fee_without_change(len(coins)):
        n = max(len(coins), 1)
        raise InsufficientFunds(
            target + fee_without_change(n), available, len(coins), fee_without_change(n)
        )
    cost_of_change = rate.fee_for_weight(4 * output_size(change_script) + INPUT_WEIGHT)

    fixed_weight = tx_weight(1, scripts) - INPUT_WEIGHT  # all but the inputs' weight
    best = _branch_and_bound(
        [u.amount * scale - input_cost for u in coins],
        lo=target * scale + rate.sats_per_kvbyte * fixed_weight,
        # the effective sum undercounts the exact fee (two roundings up) by less than
        # 3/4 vB of fee plus 1 sat, and by 8 WU more from 253 inputs on (a 3-byte input
        # count): the window is widened by that, never pruning a set whose exact excess
        # is in range
        window=cost_of_change * scale + 11 * rate.sats_per_kvbyte + scale,
        exact_excess=lambda chosen: (
            sum(coins[j].amount for j in chosen) - target - fee_without_change(len(chosen))
        ),
        cost_of_change=cost_of_change,
        max_tries=max_tries,
    )
    if best is not None:
        picked = tuple(coins[j] for j in best)
        fee = sum(u.amount for u in picked) - target
        chosen = Selection(picked, tuple(payments), 0, fee, tx_vsize(len(picked), scripts), "bnb")
    else:
        chosen = _largest_first(
            coins, payments, target, fee_without_change, fee_with_change, change_script, scripts
        )
    if chosen.vsize * 4 > MAX_STANDARD_TX_WEIGHT:
        raise SelectionError(
            "payments",
            f"the transaction would need {len(chosen.inputs)} inputs and weigh about "
            f"{4 * chosen.vsize} WU, over the standard {MAX_STANDARD_TX_WEIGHT} WU: pay in "
            "smaller parts or consolidate coins first",
        )
    return chosen


def _branch_and_bound(
    eff: list[int],
    *,
    lo: int,
    window: int,
    exact_excess: Callable[[list[int]], int],
    cost_of_change: int,
    max_tries: int,
) -> list[int] | None:
    """Core's ``SelectCoinsBnB`` over effective values ``eff`` (sorted, largest first): the
    indices of the changeless set whose exact excess is in ``[0, cost_of_change]`` and
    least, or ``None``. Walks the binary tree inclusion branch first; ``lo`` and ``lo +
    window`` bound the effective sum of a changeless set (an effective sum never exceeds
    the exact one: a set below ``lo`` cannot pay, and one above the window pays too much)."""
    hi = lo + window
    available = sum(eff)
    value = 0
    chosen: list[int] = []
    best: list[int] | None = None
    best_key: tuple[int, int] = (0, 0)
    index = 0
    for _ in range(max_tries):
        backtrack = False
        if value + available < lo or value > hi:
            backtrack = True  # cannot reach the target, or past the changeless window
        elif value >= lo:
            excess = exact_excess(chosen)
            if 0 <= excess <= cost_of_change and (best is None or (excess, len(chosen)) < best_key):
                best, best_key = list(chosen), (excess, len(chosen))
            # more coins only add to the excess (each has a positive effective value); a
            # set short of the exact fee goes on, if there is a coin left to add
            backtrack = excess >= 0 or index == len(eff)
        if backtrack:
            if not chosen:
                break  # the whole tree is walked
            # give the coins skipped after the last included one back to the lookahead,
            # then take the exclusion branch of that last included coin
            index -= 1
            while index > chosen[-1]:
                available += eff[index]
                index -= 1
            value -= eff[chosen.pop()]
        else:
            available -= eff[index]
            # the inclusion branch, unless this coin equals the one just excluded (the same
            # sets were already tried with that one)
            if not chosen or index - 1 == chosen[-1] or eff[index] != eff[index - 1]:
                chosen.append(index)
                value += eff[index]
        index += 1
    return best


def _largest_first(
    coins: list[Utxo],
    payments: Sequence[TxOut],
    target: int,
    fee_without_change: Callable[[int], int],
    fee_with_change: Callable[[int], int],
    change_script: bytes,
    scripts: list[bytes],
) -> Selection:
    dust = dust_threshold(change_script)
    total = 0
    for n, coin in enumerate(coins, start=1):
        total += coin.amount
        excess = total - target - fee_without_change(n)
        if excess < 0:
            continue
        change = total - target - fee_with_change(n)
        picked = tuple(coins[:n])
        if change >= dust:
            vsize = tx_vsize(n, [*scripts, change_script])
            return Selection(
                picked, tuple(payments), change, total - target - change, vsize, "largest-first"
            )
        # change below dust is not made: it goes to the fee
        return Selection(
            picked,
            tuple(payments),
            0,
            excess + fee_without_change(n),
            tx_vsize(n, scripts),
            "largest-first",
        )
    raise AssertionError("unreachable: the funds were checked to suffice")  # pragma: no cover
