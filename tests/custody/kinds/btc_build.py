"""Building PSBTs for the tests with embit, and points without any secret."""

from __future__ import annotations

import base64

import coincurve
from embit import compact
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput
from hypothesis import strategies as st

from custody.kinds.addresses import p2tr_script, taproot_output_key


def lift_x_ok(x: bytes) -> bool:
    try:
        coincurve.PublicKey(b"\x02" + x)
    except Exception:
        return False
    return True


# x-only keys drawn as random x coordinates on the curve: a public key with no known secret
xonly_keys = st.binary(min_size=32, max_size=32).filter(lift_x_ok)


def build_psbt(
    internal_key: bytes,
    inputs: list[tuple[bytes, int, int, int]],  # txid (display order), vout, amount, sequence
    outputs: list[tuple[bytes, int]],  # script, amount
    *,
    version: int = 2,
    locktime: int = 0,
) -> PSBT:
    ours = Script(p2tr_script(taproot_output_key(internal_key)))
    tx = Transaction(
        version=version,
        vin=[TransactionInput(txid, vout, sequence=seq) for txid, vout, _, seq in inputs],
        vout=[TransactionOutput(amount, Script(spk)) for spk, amount in outputs],
        locktime=locktime,
    )
    psbt = PSBT(tx)
    psbt.unsigned = tx  # the transaction as built (see serialize)
    for inp, (_, _, amount, _) in zip(psbt.inputs, inputs, strict=True):
        inp.witness_utxo = TransactionOutput(amount, ours)
    return psbt


def serialize(psbt: PSBT, tx: Transaction) -> bytes:
    """A PSBT serialized by hand (BIP-174 key-value maps) around ``tx``: embit's own
    serializer rebuilds the transaction and writes a sequence of 0 as 0xFFFFFFFF."""

    def kv(key: bytes, value: bytes) -> bytes:
        return compact.to_bytes(len(key)) + key + compact.to_bytes(len(value)) + value

    out = b"psbt\xff" + kv(b"\x00", tx.serialize()) + b"\x00"
    for inp in psbt.inputs:
        if inp.witness_utxo is not None:
            out += kv(b"\x01", inp.witness_utxo.serialize())
        if inp.sighash_type is not None:
            out += kv(b"\x03", inp.sighash_type.to_bytes(4, "little"))
        if inp.taproot_merkle_root is not None:
            out += kv(b"\x18", inp.taproot_merkle_root)
        out += b"\x00"
    out += b"\x00" * len(psbt.outputs)
    return out


def b64(psbt: PSBT) -> dict[str, str]:
    return {"psbt": base64.b64encode(serialize(psbt, psbt.unsigned)).decode()}
