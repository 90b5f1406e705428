"""``btc-psbt``: a BIP-174 PSBT (version 0) spending taproot key-path outputs of one key.

Payload ``{"psbt": "<base64>"}``. The key is a ``bip340`` key with an x-only internal key
``P``; its coins sit at the BIP-86 output ``OP_1 x(Q)``, ``Q = P + hash_TapTweak(x(P))*G``
(no script tree). Every input must spend such an output and carry its witness UTXO
(``PSBT_IN_WITNESS_UTXO``: the nodes need the amounts and scripts of all inputs for the
BIP-341 sighash, and a PSBT without them is refused, never completed from elsewhere). An
input's message is its BIP-341 signature hash with ``SIGHASH_DEFAULT`` (``0x00``, the only
sighash type accepted), signed under ``Q``. :func:`finalize` puts each 64-byte signature
into its input's witness and returns the network transaction.

Refused: other PSBT versions, unparseable or trailing bytes, an unsigned transaction
carrying scriptSigs or witnesses, a missing or foreign witness UTXO, a non-witness UTXO
whose hash does not match, a taproot internal key or merkle root other than ours, script
path data, amounts out of range, outputs worth more than the inputs. Decoded: inputs'
prevouts and amounts, outputs (address on the key's network, or ``None`` with the script,
and amount), fee, version and lock time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

import coincurve
from embit import compact
from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.psbt import PSBT
from embit.script import Script, Witness
from embit.transaction import Transaction

from custody.kinds._common import Intent, KindError, only_fields
from custody.kinds.addresses import NETWORKS, p2tr_script, taproot_output_key

__all__ = ["KIND", "BtcPsbt", "Prevout", "Output", "decode", "finalize", "assemble", "MAX_PSBT"]

KIND: Final = "btc-psbt"
MAX_PSBT: Final = 512 * 1024  # bytes, decoded
MAX_MONEY: Final = 21_000_000 * 100_000_000
SIGHASH_DEFAULT: Final = 0
_EMBIT_NET: Final = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}


@dataclass(frozen=True)
class Prevout:
    txid: str  # hex, in the usual (reversed) display order
    vout: int
    amount: int  # satoshis
    sequence: int


@dataclass(frozen=True)
class Output:
    address: str | None  # None for a script without an address (e.g. OP_RETURN)
    script: bytes
    amount: int  # satoshis


@dataclass(frozen=True)
class BtcPsbt(Intent):
    network: str
    internal_key: bytes
    output_key: bytes
    version: int
    locktime: int
    inputs: tuple[Prevout, ...]
    outputs: tuple[Output, ...]
    fee: int  # satoshis
    sighashes: tuple[bytes, ...]  # = messages, one per input
    psbt: bytes  # the PSBT as given (decoded from base64)

    def summary(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "inputs": [
                {"txid": i.txid, "vout": i.vout, "amount": i.amount, "sequence": i.sequence}
                for i in self.inputs
            ],
            "outputs": [
                {"address": o.address, "script": o.script.hex(), "amount": o.amount}
                for o in self.outputs
            ],
            "fee": self.fee,
            "version": self.version,
            "locktime": self.locktime,
            "sighashes": [h.hex() for h in self.sighashes],
        }


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise KindError(KIND, "psbt", "must be a base64 string")
    if len(value) > (MAX_PSBT * 4) // 3 + 4:
        raise KindError(KIND, "psbt", f"longer than {MAX_PSBT} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KindError(KIND, "psbt", "not base64") from None
    if len(raw) > MAX_PSBT:  # the string bound above admits up to MAX_PSBT + 1 bytes
        raise KindError(KIND, "psbt", f"longer than {MAX_PSBT} bytes")
    if base64.b64encode(raw).decode() != value:
        raise KindError(KIND, "psbt", "base64 not in canonical form")
    return raw


def _parse(raw: bytes) -> PSBT:
    if not raw.startswith(b"psbt\xff"):
        raise KindError(KIND, "psbt", "not a PSBT (magic psbt\\xff)")
    try:
        psbt = PSBT.parse(raw)
    except Exception as exc:  # embit raises PSBTError, EmbitError, ValueError, ...
        raise KindError(KIND, "psbt", f"not a valid PSBT: {str(exc)[:120]}") from None
    if psbt.version not in (None, 0):
        raise KindError(KIND, "psbt.version", "only PSBT version 0 is accepted")
    return psbt


def _unsigned_tx(raw: bytes) -> Transaction:
    """The global unsigned transaction (``PSBT_GLOBAL_UNSIGNED_TX``) exactly as serialized.

    Read here rather than through embit's ``PSBT.tx``, which rebuilds each input with
    ``sequence or 0xFFFFFFFF`` and so turns a sequence of 0 into 0xFFFFFFFF (a wrong
    sighash). Called only on bytes that :func:`_parse` accepted.
    """
    stream = BytesIO(raw[5:])
    while True:
        key = stream.read(compact.read_from(stream))
        if not key:
            raise KindError(KIND, "psbt", "no unsigned transaction")
        value = stream.read(compact.read_from(stream))
        if key == b"\x00":
            tx = Transaction.parse(value)
            assert isinstance(tx, Transaction)
            return tx


def _amount(value: object, name: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= MAX_MONEY:
        raise KindError(KIND, name, "amount out of range")
    return value


def _address(script: bytes, network: str) -> str | None:
    try:
        address = Script(script).address(EMBIT_NETWORKS[_EMBIT_NET[network]])
    except Exception:
        return None
    return str(address) if address else None


def decode(payload: Mapping[str, Any], *, internal_key: bytes, network: str) -> BtcPsbt:
    """Decode a ``btc-psbt`` payload for the key with x-only ``internal_key`` on ``network``."""
    if network not in NETWORKS:
        raise KindError(KIND, "network", f"must be one of {list(NETWORKS)}")
    if not isinstance(internal_key, bytes) or len(internal_key) != 32:
        raise KindError(KIND, "public_key", "must be a 32-byte x-only key")
    try:
        output_key = taproot_output_key(internal_key)
    except KindError as exc:
        raise KindError(KIND, "public_key", exc.detail) from None
    ours = p2tr_script(output_key)
    only_fields(KIND, payload, {"psbt"}, {"psbt"})
    raw = _b64(payload["psbt"])
    psbt = _parse(raw)
    try:
        tx = _unsigned_tx(raw)
    except KindError:
        raise
    except Exception as exc:
        raise KindError(KIND, "psbt", f"unreadable unsigned transaction: {exc}") from None
    if len(tx.vin) != len(psbt.inputs) or len(tx.vout) != len(psbt.outputs):
        raise KindError(KIND, "psbt", "input or output maps do not match the transaction")
    if not psbt.inputs:
        raise KindError(KIND, "psbt.inputs", "no inputs")
    if not psbt.outputs:
        raise KindError(KIND, "psbt.outputs", "no outputs")
    prevouts, scripts, values = [], [], []
    for i, inp in enumerate(psbt.inputs):
        name = f"psbt.inputs[{i}]"
        vin = tx.vin[i]
        if vin.script_sig.data or (vin.witness and vin.witness.items):
            raise KindError(KIND, name, "the unsigned transaction carries a scriptSig/witness")
        if inp.final_scriptsig is not None or inp.final_scriptwitness is not None:
            raise KindError(KIND, name, "already finalized")
        if inp.witness_utxo is None:
            raise KindError(KIND, f"{name}.witness_utxo", "missing (witness UTXOs are required)")
        if inp.non_witness_utxo is not None:
            nw = inp.non_witness_utxo
            if nw.txid() != vin.txid or vin.vout >= len(nw.vout):
                raise KindError(KIND, f"{name}.non_witness_utxo", "does not match the prevout")
            if nw.vout[vin.vout].serialize() != inp.witness_utxo.serialize():
                raise KindError(KIND, f"{name}.witness_utxo", "differs from non_witness_utxo")
        spk = inp.witness_utxo.script_pubkey.data
        if spk != ours:
            raise KindError(KIND, f"{name}.witness_utxo", "does not pay this key's BIP-86 output")
        if (
            inp.taproot_internal_key is not None
            and inp.taproot_internal_key.xonly() != internal_key
        ):
            raise KindError(KIND, f"{name}.tap_internal_key", "is not this key")
        if inp.taproot_merkle_root is not None:
            raise KindError(KIND, f"{name}.tap_merkle_root", "script trees are not supported")
        if inp.taproot_scripts or inp.taproot_sigs:
            raise KindError(KIND, name, "script-path data is not supported")
        if inp.sighash_type not in (None, SIGHASH_DEFAULT):
            raise KindError(KIND, f"{name}.sighash_type", "only SIGHASH_DEFAULT is accepted")
        amount = _amount(inp.witness_utxo.value, f"{name}.witness_utxo.amount")
        prevouts.append(Prevout(vin.txid.hex(), vin.vout, amount, vin.sequence))
        scripts.append(inp.witness_utxo.script_pubkey)
        values.append(amount)
    total_in = _amount(sum(values), "psbt.inputs")
    outputs = []
    for j, out in enumerate(tx.vout):
        amount = _amount(out.value, f"psbt.outputs[{j}].amount")
        spk = out.script_pubkey.data
        outputs.append(Output(_address(spk, network), spk, amount))
    total_out = _amount(sum(o.amount for o in outputs), "psbt.outputs")
    if total_out > total_in:
        raise KindError(KIND, "psbt.outputs", "spend more than the inputs hold")
    try:
        sighashes = tuple(
            bytes(tx.sighash_taproot(i, scripts, values, sighash=SIGHASH_DEFAULT))
            for i in range(len(tx.vin))
        )
    except Exception as exc:
        raise KindError(KIND, "psbt", f"cannot compute the sighash: {exc}") from None
    return BtcPsbt(
        kind=KIND,
        messages=sighashes,
        network=network,
        internal_key=internal_key,
        output_key=output_key,
        version=tx.version,
        locktime=tx.locktime,
        inputs=tuple(prevouts),
        outputs=tuple(outputs),
        fee=total_in - total_out,
        sighashes=sighashes,
        psbt=raw,
    )


def finalize(intent: BtcPsbt, signatures: Sequence[bytes]) -> str:
    """The signed network transaction (hex): each input's witness is its 64-byte BIP-340
    signature (``SIGHASH_DEFAULT``), checked against the output key before it is placed."""
    if len(signatures) != len(intent.sighashes):
        raise KindError(KIND, "signatures", f"need {len(intent.sighashes)}, got {len(signatures)}")
    verifier = coincurve.PublicKeyXOnly(intent.output_key)
    for i, (sig, digest) in enumerate(zip(signatures, intent.sighashes, strict=True)):
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise KindError(KIND, f"signatures[{i}]", "must be 64 bytes")
        if not verifier.verify(sig, digest):
            raise KindError(KIND, f"signatures[{i}]", "does not verify under the output key")
    return assemble(intent.psbt, signatures)


def assemble(psbt: bytes, signatures: Sequence[bytes]) -> str:
    """The network transaction of an already decoded (and checked) ``psbt`` with each
    input's witness the one-element stack ``[signature]`` (BIP-341 "Script validation
    rules": a key-path spend is a witness of one 64-byte signature for ``SIGHASH_DEFAULT``).

    No check of the signatures: :func:`finalize` checks them first; this is for re-assembling
    a stored, verified result. Raises :class:`KindError` for a count or length mismatch."""
    try:
        tx = _unsigned_tx(psbt)
    except KindError:
        raise
    except Exception as exc:  # embit's parse errors: a PSBT this module never accepted
        raise KindError(KIND, "psbt", f"unreadable unsigned transaction: {exc}") from None
    if len(signatures) != len(tx.vin) or any(len(sig) != 64 for sig in signatures):
        raise KindError(KIND, "signatures", f"need {len(tx.vin)} signatures of 64 bytes")
    for vin, sig in zip(tx.vin, signatures, strict=True):
        vin.witness = Witness([sig])
    return str(tx.serialize().hex())
