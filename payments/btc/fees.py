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

Fee rates, fees and dust are btclib's (``btclib.fee``, a port of Bitcoin Core's
``CFeeRate`` and ``GetDustThreshold``): a rate is an integer number of sat/kvB, a fee for
``vsize`` is rounded up (a transaction never pays less than its rate), and an output is
dust below the fee, at ``-dustrelayfee`` (3000 sat/kvB), of itself plus the input that
would spend it (P2TR 330 sat, P2WPKH 294, P2PKH 546; ``OP_RETURN`` none). :class:`FeeRate`
adds to btclib's class only the two spellings this package uses, ``rate.fee(vsize)`` and
``rate.fee_for_weight(weight)``. Written here: the exact weight of a key-path spend of
``n`` inputs before any PSBT exists (:func:`tx_weight`), which coin selection prices every
candidate with (btclib-wallet's ``SolutionSizer`` sizes a PSBT already built, and its coin
selection rounds each input up to 58 vB); btclib measures the finalized transaction in
the tests, byte for byte the same weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from btclib import fee as btclib_fee
from embit import compact

__all__ = [
    "FeeRate",
    "MIN_RELAY_FEE",
    "DUST_RELAY_FEE",
    "INPUT_WEIGHT",
    "MAX_STANDARD_TX_WEIGHT",
    "output_size",
    "tx_weight",
    "tx_vsize",
    "vsize_of_weight",
    "dust_threshold",
]

# One BIP-86 key-path input: (36 + 1 + 4) * 4 + (1 + 1 + 64) weight units = 57.5 vB.
INPUT_BASE_SIZE: Final = 36 + 1 + 4
INPUT_WITNESS_SIZE: Final = 1 + 1 + 64
INPUT_WEIGHT: Final = 4 * INPUT_BASE_SIZE + INPUT_WITNESS_SIZE  # 230
# version and locktime; the segwit marker and flag count once, as witness bytes.
TX_FIXED_BASE: Final = 4 + 4
SEGWIT_MARKER_FLAG: Final = 2
MAX_STANDARD_TX_WEIGHT: Final = 400_000  # Bitcoin Core policy/policy.h


@dataclass(frozen=True, order=True)
class FeeRate(btclib_fee.FeeRate):
    """btclib's fee rate (``FeeRate(sats_per_kvbyte=...)``), with the fee of a size."""

    @classmethod
    def sat_per_vb(cls, value: int | str | Decimal) -> FeeRate:
        """``FeeRate.sat_per_vb("2.5")``: btclib's ``from_sats_per_vbyte``, which refuses a
        rate finer than 1 sat/kvB rather than round it; a float is refused here (0.1 is not
        exactly representable)."""
        if isinstance(value, float):
            raise ValueError(f"fee rate: give an int, a str or a Decimal, not the float {value}")
        rate = btclib_fee.FeeRate.from_sats_per_vbyte(value)
        return cls(sats_per_kvbyte=rate.sats_per_kvbyte)

    def fee(self, vsize: int) -> int:
        """The fee for ``vsize`` virtual bytes at this rate, rounded up (Core's GetFee)."""
        return btclib_fee.fee_from_vsize(vsize, self)

    def fee_for_weight(self, weight: int) -> int:
        """The fee for ``weight`` weight units (the vsize rounded up first, as Core does)."""
        return self.fee(vsize_of_weight(weight))

    def __str__(self) -> str:
        rate: Decimal = self.sats_per_vbyte
        return f"{rate:f} sat/vB"


# -minrelaytxfee: 1 sat/vB, Core's long-standing default (Core 30 lowered it to 0.1)
MIN_RELAY_FEE: Final = FeeRate(sats_per_kvbyte=1000)
DUST_RELAY_FEE: Final = FeeRate(sats_per_kvbyte=btclib_fee.DUST_RELAY_FEE_RATE.sats_per_kvbyte)


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


def dust_threshold(script: bytes, rate: FeeRate = DUST_RELAY_FEE) -> int:
    """Bitcoin Core's ``GetDustThreshold`` (btclib's port): the smallest amount an output
    to ``script`` may carry without being dust (0 for a provably unspendable script)."""
    threshold: int = btclib_fee.dust_threshold(script, rate)
    return threshold
