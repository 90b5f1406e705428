"""The unsigned PSBT custody signs as ``btc-psbt``, and its finalization.

:func:`build_psbt` writes a BIP-174 PSBT version 0 (no ``PSBT_GLOBAL_VERSION``, so the
version is 0) whose maps are exactly what :mod:`custody.kinds.btc` decodes:

* global ``PSBT_GLOBAL_UNSIGNED_TX`` (``0x00``): the transaction, legacy serialization,
  empty scriptSigs, no witnesses (BIP-174 "Specification");
* per input ``PSBT_IN_WITNESS_UTXO`` (``0x01``): the spent output's amount and script,
  which custody requires for every input (the BIP-341 sighash commits to every input's
  amount and script), and ``PSBT_IN_TAP_INTERNAL_KEY`` (``0x17``, BIP-371): the key's
  x-only internal key ``P``; no ``PSBT_IN_SIGHASH_TYPE`` (``SIGHASH_DEFAULT`` is implied),
  no merkle root (BIP-86: no script tree);
* per output: ``PSBT_OUT_TAP_INTERNAL_KEY`` (``0x05``, BIP-371) on the change output, so a
  signer can tell the change is the key's own; nothing on the others.

The maps are written by embit's PSBT serializer (the library custody's decoder reads them
with). That serializer rebuilds each input with ``sequence or 0xFFFFFFFF``, so a sequence
of 0 would silently change; the inputs here never use 0, and the unsigned transaction in
the written PSBT is checked to be byte for byte the one built. Inputs use sequence
``0xFFFFFFFD`` (BIP-125 replaceable, no BIP-68 relative lock, nLockTime
enforced) and the lock time is the chain's tip height (Bitcoin Core's anti fee sniping:
the transaction cannot be mined in a block at or below the tip). The change output's
position is drawn at random (as Core does), unless given.

:func:`finalize_psbt` goes through custody's own finalizer (BIP-174 "Input Finalizer":
:func:`custody.kinds.btc.finalize`, which checks each signature under the BIP-86 output key
before it places it as the input's one-element witness).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

from embit import compact
from embit.ec import PublicKey
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from custody.kinds import KindError
from custody.kinds import btc as custody_btc
from custody.kinds.addresses import p2tr_script, taproot_output_key
from payments.btc.fees import FeeRate, tx_weight
from payments.btc.selection import Selection, TxOut, Utxo
from payments.btc.tx import ParsedTx, address_of, parse_tx

__all__ = [
    "SEQUENCE",
    "PsbtError",
    "UnsignedPayment",
    "SignedPayment",
    "build_psbt",
    "decode_for_custody",
    "finalize_psbt",
    "payment_from_psbt",
]

SEQUENCE: Final = 0xFFFFFFFD
PSBT_MAGIC: Final = b"psbt\xff"
PSBT_GLOBAL_UNSIGNED_TX: Final = b"\x00"
TX_VERSION: Final = 2


class PsbtError(ValueError):
    """A payment that cannot be turned into a PSBT, or signatures that do not finalize it;
    ``field`` names what is at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class UnsignedPayment:
    """A built, unsigned payment: the PSBT and what it does."""

    network: str
    internal_key: bytes  # x-only P
    psbt: bytes
    inputs: tuple[Utxo, ...]
    outputs: tuple[TxOut, ...]  # in transaction order, change included
    change_index: int | None
    fee: int
    vsize: int  # of the finalized transaction
    weight: int
    fee_rate: FeeRate
    txid: str  # known before signing: a segwit txid does not cover the witnesses

    @property
    def payload(self) -> dict[str, str]:
        """The ``btc-psbt`` sign-request payload."""
        return {"psbt": base64.b64encode(self.psbt).decode()}

    def summary(self) -> dict[str, Any]:
        return {
            "txid": self.txid,
            "inputs": [{"txid": u.txid, "vout": u.vout, "amount": u.amount} for u in self.inputs],
            "outputs": [
                {"address": address_of(o.script, self.network), "amount": o.amount}
                for o in self.outputs
            ],
            "change_index": self.change_index,
            "fee": self.fee,
            "vsize": self.vsize,
            "fee_rate": str(self.fee_rate),
        }


@dataclass(frozen=True)
class SignedPayment:
    """The finalized network transaction."""

    hex: str
    txid: str
    wtxid: str
    vsize: int
    weight: int
    fee: int


def build_psbt(
    selection: Selection,
    *,
    internal_key: bytes,
    network: str,
    fee_rate: FeeRate,
    locktime: int,
    change_position: int | None = None,
) -> UnsignedPayment:
    """The PSBT of ``selection`` (module docstring), spending the BIP-86 outputs of
    ``internal_key``; change, when there is some, to the key's own BIP-86 output."""
    if not isinstance(internal_key, bytes) or len(internal_key) != 32:
        raise PsbtError("internal_key", "must be a 32-byte x-only key")
    if not isinstance(locktime, int) or not 0 <= locktime < 500_000_000:
        raise PsbtError("locktime", "must be a block height below 500 000 000")
    ours = p2tr_script(taproot_output_key(internal_key))
    for i, u in enumerate(selection.inputs):
        if u.script != ours:
            raise PsbtError(f"inputs[{i}]", "does not pay this key's BIP-86 output")
    outputs = list(selection.payments)
    change_index: int | None = None
    if selection.change:
        if change_position is None:
            change_position = secrets.randbelow(len(outputs) + 1)
        if not 0 <= change_position <= len(outputs):
            raise PsbtError("change_position", f"must be in 0..{len(outputs)}")
        outputs.insert(change_position, TxOut(ours, selection.change))
        change_index = change_position
    tx = Transaction(
        version=TX_VERSION,
        vin=[
            TransactionInput(bytes.fromhex(u.txid), u.vout, sequence=SEQUENCE)
            for u in selection.inputs
        ],
        vout=[TransactionOutput(o.amount, Script(o.script)) for o in outputs],
        locktime=locktime,
    )
    unsigned = tx.serialize()
    psbt = PSBT(tx)
    key = PublicKey.from_xonly(internal_key)
    for scope, u in zip(psbt.inputs, selection.inputs, strict=True):
        scope.witness_utxo = TransactionOutput(u.amount, Script(u.script))  # PSBT_IN_WITNESS_UTXO
        scope.taproot_internal_key = key  # PSBT_IN_TAP_INTERNAL_KEY
    if change_index is not None:
        psbt.outputs[change_index].taproot_internal_key = key  # PSBT_OUT_TAP_INTERNAL_KEY
    raw = psbt.serialize()
    if _unsigned_tx_bytes(raw) != unsigned:  # pragma: no cover - see the module docstring
        raise PsbtError("psbt", "the serialized PSBT carries another transaction")
    weight = tx_weight(len(selection.inputs), [o.script for o in outputs])
    return UnsignedPayment(
        network=network,
        internal_key=internal_key,
        psbt=raw,
        inputs=selection.inputs,
        outputs=tuple(outputs),
        change_index=change_index,
        fee=selection.fee,
        vsize=-(-weight // 4),
        weight=weight,
        fee_rate=fee_rate,
        txid=parse_tx(unsigned).txid,
    )


def payment_from_psbt(
    payload: Mapping[str, Any], *, internal_key: bytes, network: str
) -> UnsignedPayment:
    """Rebuild the :class:`UnsignedPayment` of a stored ``btc-psbt`` payload (what a payment
    service keeps across a restart), through custody's strict decoder: the inputs are the
    key's BIP-86 coins, the change is the output back to the key (at most one), the fee rate
    the one the transaction pays (rounded down to a whole sat/kvB)."""
    try:
        intent = custody_btc.decode(payload, internal_key=internal_key, network=network)
    except KindError as exc:
        raise PsbtError(exc.field, exc.detail) from None
    ours = p2tr_script(intent.output_key)
    inputs = tuple(Utxo(i.txid, i.vout, i.amount, ours) for i in intent.inputs)
    outputs = tuple(TxOut(o.script, o.amount) for o in intent.outputs)
    back = [j for j, o in enumerate(outputs) if o.script == ours]
    if len(back) > 1:
        raise PsbtError("psbt.outputs", "more than one output back to the key")
    weight = tx_weight(len(inputs), [o.script for o in outputs])
    vsize = -(-weight // 4)
    return UnsignedPayment(
        network=network,
        internal_key=internal_key,
        psbt=intent.psbt,
        inputs=inputs,
        outputs=outputs,
        change_index=back[0] if back else None,
        fee=intent.fee,
        vsize=vsize,
        weight=weight,
        fee_rate=FeeRate(sats_per_kvbyte=intent.fee * 1000 // vsize),
        txid=parse_tx(_unsigned_tx_bytes(intent.psbt)).txid,
    )


def _unsigned_tx_bytes(psbt: bytes) -> bytes:
    """``PSBT_GLOBAL_UNSIGNED_TX`` of a PSBT custody's decoder accepted."""
    stream = BytesIO(psbt[len(PSBT_MAGIC) :])
    while True:
        key = stream.read(compact.read_from(stream))
        value = stream.read(compact.read_from(stream))
        if key == PSBT_GLOBAL_UNSIGNED_TX:
            return value
        if not key:  # pragma: no cover - the decoder refused a PSBT without one
            raise PsbtError("psbt", "no unsigned transaction")


def decode_for_custody(payment: UnsignedPayment) -> custody_btc.BtcPsbt:
    """The PSBT as custody's strict decoder sees it (what the nodes will sign)."""
    try:
        return custody_btc.decode(
            payment.payload, internal_key=payment.internal_key, network=payment.network
        )
    except KindError as exc:
        raise PsbtError(exc.field, exc.detail) from None


def finalize_psbt(payment: UnsignedPayment, signatures: Sequence[bytes]) -> SignedPayment:
    """The network transaction: one 64-byte BIP-340 signature per input, in input order,
    each checked under the BIP-86 output key by custody's finalizer before it is placed."""
    intent = decode_for_custody(payment)
    if intent.fee != payment.fee or len(intent.inputs) != len(payment.inputs):
        raise PsbtError("psbt", "custody decodes another fee or input count than was built")
    try:
        signed_hex = custody_btc.finalize(intent, list(signatures))
    except KindError as exc:
        raise PsbtError(exc.field, exc.detail) from None
    parsed: ParsedTx = parse_tx(bytes.fromhex(signed_hex))
    if parsed.txid != payment.txid:
        raise PsbtError("signed_tx", "the finalized transaction has another txid")
    return SignedPayment(
        hex=signed_hex,
        txid=parsed.txid,
        wtxid=parsed.wtxid,
        vsize=parsed.vsize,
        weight=parsed.weight,
        fee=payment.fee,
    )
