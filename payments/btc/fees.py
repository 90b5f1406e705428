"""Sizes, fee rates and dust for transactions spending BIP-86 key-path outputs.

Sizes follow BIP-141 ("Transaction size calculations"): ``weight = 3 * base_size +
total_size`` and ``vsize = ceil(weight / 4)``, where ``base_size`` is the serialization
without the segwit marker, flag and witnesses. A BIP-86 key-path input spending with
``SIGHASH_DEFAULT`` has a witness of exactly one 64-byte BIP-340 signature (BIP-341 "Script
validation rules": a 65th byte would be a sighash type, which ``SIGHASH_DEFAULT`` omits), so
its size is known before signing: 41 non-witness bytes (outpoint 36, empty scriptSig 1,
sequence 4) and 66 witness bytes (item count 1, length 1, signature 64), 230 weight units,
57.5 vB. The tx's size is therefore exact, not an estimate: :func:`tx_weight` equals the
weight of the finalized transaction byte for byte (tests check it).

Fee rates are kept like Bitcoin Core's ``CFeeRate`` (``policy/feerate.h``): satoshis per
1000 virtual bytes, an integer, so a rate in sat/vB may have up to three decimals. A fee for
``vsize`` is rounded up, so a transaction never pays less than its rate.

Dust follows Bitcoin Core's ``GetDustThreshold`` (``policy/policy.cpp``) at the default
``-dustrelayfee`` of 3000 sat/kvB: the cost of an output plus the input that would spend it
(witness programs: 67 bytes on top of the serialized output, other scripts 148); provably
unspendable outputs (``OP_RETURN``, or longer than 10 000 bytes) have no dust threshold.
An output below its threshold is dust: Core's mempool refuses a transaction carrying one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from embit import compact

__all__ = [
    "FeeRate",
    "FeeRateError",
    "MIN_RELAY_FEE",
    "DUST_RELAY_FEE",
    "INPUT_WEIGHT",
    "MAX_STANDARD_TX_WEIGHT",
    "output_size",
    "tx_weight",
    "tx_vsize",
    "vsize_of_weight",
    "dust_threshold",
    "is_witness_program",
]

# One BIP-86 key-path input: (36 + 1 + 4) * 4 + (1 + 1 + 64) weight units = 57.5 vB.
INPUT_BASE_SIZE: Final = 36 + 1 + 4
INPUT_WITNESS_SIZE: Final = 1 + 1 + 64
INPUT_WEIGHT: Final = 4 * INPUT_BASE_SIZE + INPUT_WITNESS_SIZE  # 230
# version and locktime; the segwit marker and flag count once, as witness bytes.
TX_FIXED_BASE: Final = 4 + 4
SEGWIT_MARKER_FLAG: Final = 2
MAX_STANDARD_TX_WEIGHT: Final = 400_000  # Bitcoin Core policy/policy.h
MAX_SCRIPT_SIZE: Final = 10_000


class FeeRateError(ValueError):
    """A fee rate that is not a non-negative number of sat/vB with at most 3 decimals."""


@dataclass(frozen=True, order=True)
class FeeRate:
    """A fee rate in satoshis per 1000 vB (Bitcoin Core's ``CFeeRate`` unit)."""

    sat_per_kvb: int

    def __post_init__(self) -> None:
        if (
            not isinstance(self.sat_per_kvb, int)
            or isinstance(self.sat_per_kvb, bool)
            or self.sat_per_kvb < 0
        ):
            raise FeeRateError(f"fee rate must be a non-negative integer sat/kvB, got {self!r}")

    @classmethod
    def sat_per_vb(cls, value: int | str | Decimal) -> FeeRate:
        """``FeeRate.sat_per_vb("2.5")``: a rate in sat/vB, at most three decimals (a float
        is refused: 0.1 is not exactly representable)."""
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            raise FeeRateError(f"fee rate: give an int, a str or a Decimal, not {value!r}")
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise FeeRateError(f"fee rate: {value!r} is not a number") from None
        if not d.is_finite() or d < 0:
            raise FeeRateError(f"fee rate: {value!r} must be a finite, non-negative number")
        kvb = d * 1000
        if kvb != kvb.to_integral_value():
            raise FeeRateError(f"fee rate: {value!r} has more than 3 decimals (sat/vB)")
        return cls(int(kvb))

    def fee(self, vsize: int) -> int:
        """The fee for ``vsize`` virtual bytes at this rate, rounded up to a whole satoshi."""
        return -(-self.sat_per_kvb * vsize // 1000)

    def fee_for_weight(self, weight: int) -> int:
        """The fee for a transaction of ``weight`` weight units (its vsize rounded up)."""
        return self.fee(vsize_of_weight(weight))

    def __str__(self) -> str:
        return f"{Decimal(self.sat_per_kvb) / 1000:f} sat/vB"


MIN_RELAY_FEE: Final = FeeRate(1000)  # -minrelaytxfee: 1 sat/vB, Core's long-standing default
DUST_RELAY_FEE: Final = FeeRate(3000)  # -dustrelayfee default (policy/policy.h)


def vsize_of_weight(weight: int) -> int:
    """BIP-141: virtual size = weight / 4, rounded up."""
    return -(-weight // 4)


def output_size(script: bytes) -> int:
    """Serialized size of a transaction output: 8-byte amount, compact length, script."""
    return 8 + len(compact.to_bytes(len(script))) + len(script)


def tx_weight(n_inputs: int, output_scripts: Sequence[bytes]) -> int:
    """Exact weight of a transaction (segwit serialization) with ``n_inputs`` BIP-86
    key-path inputs, each witnessed by one 64-byte signature, and these output scripts."""
    if n_inputs < 1:
        raise ValueError("a transaction needs at least one input")
    base = (
        TX_FIXED_BASE
        + len(compact.to_bytes(n_inputs))
        + n_inputs * INPUT_BASE_SIZE
        + len(compact.to_bytes(len(output_scripts)))
        + sum(output_size(s) for s in output_scripts)
    )
    return 4 * base + SEGWIT_MARKER_FLAG + n_inputs * INPUT_WITNESS_SIZE


def tx_vsize(n_inputs: int, output_scripts: Sequence[bytes]) -> int:
    """Exact virtual size of the transaction :func:`tx_weight` describes."""
    return vsize_of_weight(tx_weight(n_inputs, output_scripts))


def is_witness_program(script: bytes) -> bool:
    """BIP-141: ``OP_0``..``OP_16``, then one push of 2 to 40 bytes
    (``CScript::IsWitnessProgram``)."""
    if not 4 <= len(script) <= 42:
        return False
    if script[0] != 0 and not 0x51 <= script[0] <= 0x60:
        return False
    return script[1] + 2 == len(script)


def dust_threshold(script: bytes, rate: FeeRate = DUST_RELAY_FEE) -> int:
    """Bitcoin Core's ``GetDustThreshold``: the smallest amount an output to ``script`` may
    carry without being dust (0 for a provably unspendable script)."""
    if (script and script[0] == 0x6A) or len(script) > MAX_SCRIPT_SIZE:
        return 0  # CScript::IsUnspendable
    size = output_size(script)
    # outpoint 32 + 4, scriptSig length 1, sequence 4, and the signature data: 107 bytes
    # for a legacy input, a quarter of that (witness discount, integer division) for segwit
    size += 32 + 4 + 1 + (107 // 4 if is_witness_program(script) else 107) + 4
    return rate.fee(size)
