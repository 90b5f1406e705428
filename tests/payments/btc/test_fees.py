"""Sizes, fee rates and dust, against Bitcoin Core's known numbers and against the real
serialization of finalized transactions (weights measured by btclib, not by our code)."""

from __future__ import annotations

import secrets
from decimal import Decimal

import pytest
from btclib.tx import Tx
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.btc.fees import (
    INPUT_WEIGHT,
    FeeRate,
    dust_threshold,
    tx_vsize,
    tx_weight,
)
from payments.btc.tx import TxDecodeError, parse_tx

P2TR = b"\x51\x20" + bytes(range(32))
P2WPKH = b"\x00\x14" + bytes(20)
P2WSH = b"\x00\x20" + bytes(32)
P2PKH = b"\x76\xa9\x14" + bytes(20) + b"\x88\xac"
P2SH = b"\xa9\x14" + bytes(20) + b"\x87"
OP_RETURN = b"\x6a\x08" + b"tp-test!"


def test_dust_thresholds_are_bitcoin_cores() -> None:
    # Core's well-known values at -dustrelayfee=3000 sat/kvB (policy/policy.cpp)
    assert dust_threshold(P2PKH) == 546
    assert dust_threshold(P2SH) == 540
    assert dust_threshold(P2WPKH) == 294
    assert dust_threshold(P2WSH) == 330
    assert dust_threshold(P2TR) == 330
    assert dust_threshold(OP_RETURN) == 0  # unspendable: no threshold
    assert dust_threshold(b"\x51" * 10_001) == 0  # over MAX_SCRIPT_SIZE: unspendable
    assert dust_threshold(P2TR, FeeRate(sats_per_kvbyte=0)) == 0


def test_fee_rates_parse_exactly_and_round_up() -> None:
    assert FeeRate.sat_per_vb(1) == FeeRate(sats_per_kvbyte=1000)
    assert FeeRate.sat_per_vb("2.5") == FeeRate(sats_per_kvbyte=2500)
    assert FeeRate.sat_per_vb(Decimal("0.001")) == FeeRate(sats_per_kvbyte=1)
    assert str(FeeRate.sat_per_vb("12.25")) == "12.25 sat/vB"
    assert FeeRate(sats_per_kvbyte=1500).fee(141) == 212  # 211.5 up: never under the rate
    assert FeeRate(sats_per_kvbyte=1000).fee(141) == 141
    assert FeeRate(sats_per_kvbyte=1).fee(1) == 1
    assert FeeRate(sats_per_kvbyte=0).fee(1000) == 0
    assert FeeRate(sats_per_kvbyte=1000).fee_for_weight(230) == 58  # 57.5 vB rounds up to 58
    assert isinstance(FeeRate.sat_per_vb("3"), FeeRate)  # ours, with .fee()
    for bad in (0.1, "1.0001", "-1", "nan", "inf", "x", True, None):
        with pytest.raises(ValueError):
            FeeRate.sat_per_vb(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FeeRate(sats_per_kvbyte=-1)


def key_path_tx(n_inputs: int, scripts: list[bytes]) -> bytes:
    """A finalized-shaped key-path spend: every witness one 64-byte signature."""
    tx = Transaction(
        version=2,
        vin=[
            TransactionInput(secrets.token_bytes(32), i, sequence=0xFFFFFFFD)
            for i in range(n_inputs)
        ],
        vout=[TransactionOutput(1000 + j, Script(s)) for j, s in enumerate(scripts)],
        locktime=123,
    )
    for vin in tx.vin:
        vin.witness = Witness([secrets.token_bytes(64)])
    raw: bytes = tx.serialize()
    return raw


def test_one_key_path_input_is_57_5_vbytes() -> None:
    assert INPUT_WEIGHT == 230
    assert tx_weight(2, [P2TR]) - tx_weight(1, [P2TR]) == 230


@pytest.mark.parametrize(
    "n_inputs,scripts",
    [
        (1, [P2TR]),
        (1, [P2WPKH, P2TR]),
        (2, [P2PKH, P2SH, P2WSH]),
        (3, [OP_RETURN, P2TR]),
        (252, [P2TR]),  # the last one-byte input count
        (253, [P2TR]),  # the input count takes 3 bytes from here on
    ],
)
def test_weight_and_vsize_equal_the_serialized_transactions(
    n_inputs: int, scripts: list[bytes]
) -> None:
    raw = key_path_tx(n_inputs, scripts)
    measured = Tx.parse(raw)  # btclib measures the real transaction
    assert tx_weight(n_inputs, scripts) == measured.weight
    assert tx_vsize(n_inputs, scripts) == measured.vsize
    ours = parse_tx(raw)
    assert ours.weight == measured.weight and ours.vsize == measured.vsize
    assert ours.txid == measured.id.hex() and ours.wtxid == measured.hash.hex()


@settings(max_examples=60, deadline=None)
@given(
    n_inputs=st.integers(1, 12),
    scripts=st.lists(
        st.sampled_from([P2TR, P2WPKH, P2WSH, P2PKH, P2SH, OP_RETURN]), min_size=1, max_size=300
    ),
)
def test_weight_formula_matches_any_shape(n_inputs: int, scripts: list[bytes]) -> None:
    assert tx_weight(n_inputs, scripts) == Tx.parse(key_path_tx(n_inputs, scripts)).weight


def test_parse_tx_refuses_what_is_not_exactly_one_transaction() -> None:
    raw = key_path_tx(1, [P2TR])
    for bad in (raw + b"\x00", raw[:-1], b"", b"\x02" * 9):
        with pytest.raises(TxDecodeError):
            parse_tx(bad)
