"""The Bitcoin rail: one custody ``bip340`` key's BIP-86 coins, paid out through custody.

:class:`BitcoinRail` is small on purpose, so that the payment service can wrap it behind its
rail protocol. Its steps, each a method:

1. :meth:`~BitcoinRail.prepare`: select coins, make change, build the unsigned PSBT
   (:mod:`payments.btc.selection`, :mod:`payments.btc.psbt`); the chosen coins are reserved
   in this rail until :meth:`~BitcoinRail.release` or a broadcast, so two payments
   prepared one after the other never pick the same coin;
2. :meth:`~BitcoinRail.sign`: a ``btc-psbt`` sign request through the custody SDK (over
   HTTP; nothing else of custody's is reached), waiting for it unless told not to; a
   request parked for approvals comes back as it is (``pending_approval``);
3. :meth:`~BitcoinRail.finalize`: the signed request's signatures placed by custody's own
   finalizer, each checked under the BIP-86 output key; the coordinator's own
   ``result.signed_tx`` must be the same bytes, else the result is refused;
4. :meth:`~BitcoinRail.broadcast`: into the chain (:class:`payments.btc.regtest.Regtest`,
   or anything with its :class:`~payments.btc.regtest.BitcoinChain` methods);
5. :meth:`~BitcoinRail.status`: the transaction's confirmations.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from custody.client import CustodyClient
from custody.kinds.addresses import bitcoin_p2tr_address, p2tr_script, taproot_output_key
from custody.models import KeyOut, SignRequestOut
from payments.btc.fees import FeeRate
from payments.btc.psbt import PsbtError, SignedPayment, UnsignedPayment, build_psbt, finalize_psbt
from payments.btc.regtest import BitcoinChain, Rejected, TxStatus
from payments.btc.selection import TxOut, select_coins
from payments.btc.tx import output_script

__all__ = ["KIND", "Payment", "BitcoinRail", "RailError"]

KIND: Final = "btc-psbt"
ALREADY_KNOWN: Final = frozenset({"txn-already-in-mempool", "txn-already-known"})
SIGNATURE_HEX = 128  # one 64-byte BIP-340 signature per input, hex


class RailError(ValueError):
    """A step of the rail refused; ``field`` names what is at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class Payment:
    """One output to pay: an address on the rail's network and an amount in satoshis."""

    address: str
    amount: int


class BitcoinRail:
    """Payments from one custody ``bip340`` key (module docstring)."""

    def __init__(self, client: CustodyClient, key: KeyOut, chain: BitcoinChain) -> None:
        if key.scheme != "bip340" or key.public_key is None:
            raise RailError("key", f"{key.id} is not an active bip340 key")
        self.client = client
        self.key_id = key.id
        self.network = key.network or "mainnet"
        self.internal_key = bytes.fromhex(key.public_key)
        self.output_key = taproot_output_key(self.internal_key)
        self.script = p2tr_script(self.output_key)
        self.address = bitcoin_p2tr_address(self.internal_key, self.network)
        if key.addresses.get("bitcoin") not in (None, self.address):
            raise RailError("key.addresses.bitcoin", "custody shows another BIP-86 address")
        self.chain = chain
        self._lock = threading.Lock()
        self._reserved: dict[tuple[str, int], str] = {}  # outpoint -> txid of its payment

    def balance(self) -> int:
        """Confirmed, spendable and not reserved by a prepared payment."""
        with self._lock:
            return sum(
                u.amount for u in self.chain.utxos(self.script) if u.outpoint not in self._reserved
            )

    def prepare(
        self,
        payments: Sequence[Payment],
        fee_rate: FeeRate,
        *,
        change_position: int | None = None,
    ) -> UnsignedPayment:
        """The unsigned PSBT paying ``payments`` at ``fee_rate``, change back to the key."""
        outs = []
        for i, p in enumerate(payments):
            outs.append(
                TxOut(
                    output_script(p.address, self.network, field=f"payments[{i}].address"), p.amount
                )
            )
        with self._lock:
            coins = [u for u in self.chain.utxos(self.script) if u.outpoint not in self._reserved]
            selection = select_coins(coins, outs, fee_rate, self.script)
            unsigned = build_psbt(
                selection,
                internal_key=self.internal_key,
                network=self.network,
                fee_rate=fee_rate,
                locktime=self.chain.height,
                change_position=change_position,
            )
            for u in unsigned.inputs:
                self._reserved[u.outpoint] = unsigned.txid
            return unsigned

    def reserve(self, unsigned: UnsignedPayment) -> None:
        """Reserve the coins of a payment prepared earlier (e.g. rebuilt after a restart
        with :func:`payments.btc.psbt.payment_from_psbt`), so no other payment takes them."""
        with self._lock:
            taken = [
                u.outpoint
                for u in unsigned.inputs
                if self._reserved.get(u.outpoint) not in (None, unsigned.txid)
            ]
            if taken:
                raise RailError("inputs", f"reserved by another payment: {taken}")
            for u in unsigned.inputs:
                self._reserved[u.outpoint] = unsigned.txid

    def release(self, unsigned: UnsignedPayment) -> None:
        """Give the coins of a payment that will not be broadcast back to selection."""
        with self._lock:
            for u in unsigned.inputs:
                if self._reserved.get(u.outpoint) == unsigned.txid:
                    del self._reserved[u.outpoint]

    def sign(
        self,
        unsigned: UnsignedPayment,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> SignRequestOut:
        """Ask custody to sign the PSBT as ``btc-psbt`` (the same ``idempotency_key`` never
        makes a second request)."""
        return self.client.sign(
            self.key_id,
            kind="btc-psbt",
            payload=unsigned.payload,
            network=self.network,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    def finalize(self, unsigned: UnsignedPayment, signed: SignRequestOut) -> SignedPayment:
        """The network transaction of a signed request for ``unsigned``."""
        if signed.kind != KIND or signed.key_id != self.key_id:
            raise RailError("sign_request", f"{signed.id} is not a {KIND} request of this key")
        if signed.status != "signed" or signed.signature is None:
            raise RailError("sign_request.status", f"{signed.id} is {signed.status}, not signed")
        if signed.payload is not None and signed.payload != unsigned.payload:
            raise RailError("sign_request.payload", f"{signed.id} signed another PSBT")
        sig = signed.signature
        if len(sig) != SIGNATURE_HEX * len(unsigned.inputs):
            raise RailError(
                "sign_request.signature", f"need {len(unsigned.inputs)} signatures of 64 bytes"
            )
        try:
            sigs = [
                bytes.fromhex(sig[i : i + SIGNATURE_HEX]) for i in range(0, len(sig), SIGNATURE_HEX)
            ]
            out = finalize_psbt(unsigned, sigs)
        except (ValueError, PsbtError) as exc:
            raise RailError("sign_request.signature", str(exc)) from None
        if signed.result is not None and signed.result.signed_tx != out.hex:
            raise RailError(
                "sign_request.result.signed_tx",
                "differs from the transaction finalized here from the same signatures",
            )
        return out

    def broadcast(self, signed: SignedPayment) -> str:
        """Submit to the chain; idempotent: a transaction the chain already holds (in its
        mempool or a block) is the same success, so a retry after a crash pays once. Any
        other refusal is raised (:class:`~payments.btc.regtest.Rejected`), the coins staying
        reserved until :meth:`release`. On acceptance the coins are no longer reserved
        here (the chain now reports them spent)."""
        try:
            txid = self.chain.accept(signed.hex)
        except Rejected as exc:
            if exc.reason not in ALREADY_KNOWN or self.chain.status(signed.txid).state == "unknown":
                raise
            txid = signed.txid
        with self._lock:
            for op in [op for op, t in self._reserved.items() if t == txid]:
                del self._reserved[op]
        return txid

    def status(self, txid: str) -> TxStatus:
        return self.chain.status(txid)
