"""The ``bitcoin`` rail of the payment service: :class:`payments.rails.Rail` over
:class:`payments.btc.BitcoinRail` (BIP-86 key-path spends of one custody ``bip340`` key,
PSBTs custody signs as ``btc-psbt``).

Amounts are satoshi (:data:`payments.ledger.BTC_SAT`). The fee is reserved at authorization
as twice the fee of a spend of the coins largest-first selection would need now (room for a
selection that takes more inputs at build time); the build refuses (retried later) a
selection whose fee is above the reservation; at confirmation the PSBT's exact fee is the
fee charged and the rest of the reservation returned.

Coins: :meth:`~payments.btc.BitcoinRail.prepare` reserves them in memory; the unsigned PSBT
is stored with the payment (:data:`payments.db.chain_builds`, same transaction), and at
start-up every stored build not yet broadcast is rebuilt with
:func:`payments.btc.payment_from_psbt` and its coins reserved again, so a restart neither
spends a coin twice nor builds a second transaction for a payment. Coins go back only for a
payment dead without a signature (:func:`payments.chains.dead_unsigned`).

The chain: :class:`payments.btc.Regtest` in process (development), or any Bitcoin Core
node through :class:`BitcoinCoreRpc` (``getblockcount``, ``scantxoutset``,
``sendrawtransaction``, ``getrawtransaction``; Core's JSON-RPC).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

import httpx
from sqlalchemy import Engine

from custody.client import CustodyClient
from custody.domain import Scheme
from custody.models import KeyOut
from payments.btc import (
    BitcoinChain,
    BitcoinRail,
    FeeRate,
    Payment,
    PsbtError,
    Rejected,
    SignedPayment,
    TxStatus,
    Utxo,
    dust_threshold,
    finalize_psbt,
    output_script,
    parse_tx,
    payment_from_psbt,
    tx_vsize,
)
from payments.btc import RailError as BtcRailError
from payments.btc.regtest import verify_scripts
from payments.btc.selection import SelectionError
from payments.btc.tx import AddressError
from payments.chains import (
    NotYet,
    authorized_fee,
    build_by_ref,
    builds,
    dead_unsigned,
    set_build,
    store_build,
    stored_build,
)
from payments.rails import (
    CustodySignature,
    Instruction,
    RailError,
    RailRecord,
    Signed,
    Status,
    Unsigned,
)

NAME: Final = "bitcoin"
FEE_HEADROOM: Final = 2
# refusals after which these bytes can never be accepted (Core's reject reasons); any
# other (a mempool conflict that may clear, a fee or lock time not met yet) is retried
DEFINITIVE: Final = frozenset(
    {
        "TX decode failed",
        "bad-txns-inputs-missingorspent",
        "mandatory-script-verify-flag-failed",
        "bad-txns-in-belowout",
        "dust",
        "scriptpubkey",
        "tx-size",
        "tx-size-small",
    }
)


class ChainUnavailable(Exception):
    """The node gave no usable answer: the outcome of a send is unknown (retried)."""


class BitcoinCoreRpc:
    """:class:`~payments.btc.BitcoinChain` over a Bitcoin Core node's JSON-RPC (1.0 style
    as Core speaks it). Amounts come as JSON numbers of BTC; they are read as decimals
    (never floats) and must be whole satoshi."""

    def __init__(self, url: str, *, timeout: float = 10.0, auth: tuple[str, str] | None = None):
        self.http = httpx.Client(base_url=url, timeout=timeout, auth=auth)
        self._ids = itertools.count(1)

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        try:
            r = self.http.post("/", json=body)
        except httpx.HTTPError as exc:
            raise ChainUnavailable(f"{method}: {type(exc).__name__}: {exc}") from None
        if r.status_code >= 500 and not r.content.startswith(b"{"):
            raise ChainUnavailable(f"{method}: HTTP {r.status_code}")
        try:
            doc = json.loads(r.text, parse_float=Decimal)
        except ValueError:
            raise ChainUnavailable(f"{method}: the answer is not JSON") from None
        err = doc.get("error")
        if err:
            code, msg = err.get("code"), str(err.get("message", ""))
            if method == "sendrawtransaction" and code in (-25, -26, -27):
                reason, _, detail = msg.partition(", ")
                raise Rejected(reason or msg, detail or msg)
            raise _RpcError(code, f"{method}: {msg}")
        return doc.get("result")

    @property
    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def utxos(self, script: bytes) -> list[Utxo]:
        got = self.rpc("scantxoutset", "start", [f"raw({script.hex()})"])
        out = []
        for u in got.get("unspents", []):
            sats = Decimal(u["amount"]) * 100_000_000
            if sats != sats.to_integral_value():
                raise ChainUnavailable(f"scantxoutset: amount {u['amount']} is not whole sat")
            out.append(Utxo(str(u["txid"]), int(u["vout"]), int(sats), script))
        return sorted(out, key=lambda u: (u.txid, u.vout))

    def accept(self, tx_hex: str) -> str:
        return str(self.rpc("sendrawtransaction", tx_hex))

    def status(self, txid: str) -> TxStatus:
        try:
            t = self.rpc("getrawtransaction", txid, True)
        except _RpcError as exc:
            if exc.code == -5:  # No such mempool or blockchain transaction
                return TxStatus(txid, "unknown", None, 0, None)
            raise
        n = int(t.get("confirmations", 0))
        if n <= 0:
            return TxStatus(txid, "mempool", None, 0, None)
        return TxStatus(txid, "confirmed", self.height - n + 1, n, t.get("blockhash"))


class _RpcError(ChainUnavailable):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code


class BitcoinPayRail:
    name = NAME
    scheme: Scheme = "bip340"

    def __init__(
        self,
        engine: Engine,
        client: CustodyClient,
        key: KeyOut,
        chain: BitcoinChain,
        *,
        fee_rate: FeeRate,
        required_confirmations: int = 1,
    ) -> None:
        self.engine = engine
        self.btc = BitcoinRail(client, key, chain)
        self.key_id = self.btc.key_id
        self.fee_rate = fee_rate
        self.required_confirmations = required_confirmations
        with engine.connect() as conn:
            pending = builds(conn, NAME, "built")
        for row in pending:  # a restart: the coins of every unbroadcast build stay taken
            self.btc.reserve(self._payment(Unsigned.from_json(row.unsigned)))

    def _payment(self, u: Unsigned) -> Any:
        try:
            return payment_from_psbt(
                u.payload, internal_key=self.btc.internal_key, network=self.btc.network
            )
        except PsbtError as exc:
            raise RailError(f"stored PSBT: {exc}", "unsigned") from None

    # -- authorization -------------------------------------------------------------------
    def _script(self, destination: str) -> bytes:
        return output_script(destination, self.btc.network, field="destination")

    def validate(self, instruction: Instruction) -> list[str]:
        i = instruction
        if i.asset != "BTC":
            return [f"the bitcoin rail pays BTC, not {i.asset}"]
        try:
            script = self._script(i.destination)
        except AddressError as exc:
            return [f"destination: {exc} (network {self.btc.network})"]
        if script == self.btc.script:
            return ["destination is the rail's own address"]
        if i.amount < dust_threshold(script):
            return [f"amount {i.amount} sat is dust for {i.destination}"]
        return []

    def fee_estimate(self, instruction: Instruction) -> int:
        """Twice the fee of paying it now with the coins largest-first would take (module
        docstring); the bound for a single input when the coins do not cover it (the
        ledger's hold decides, the build will wait for coins)."""
        script = self._script(instruction.destination)
        coins = sorted(self.btc.chain.utxos(self.btc.script), key=lambda u: -u.amount)
        outs = [script, self.btc.script]
        n, total = 0, 0
        for c in coins:
            n, total = n + 1, total + c.amount
            if total >= instruction.amount + self.fee_rate.fee(tx_vsize(n, outs)):
                break
        return FEE_HEADROOM * self.fee_rate.fee(tx_vsize(max(n, 1), outs))

    # -- build -----------------------------------------------------------------------------
    def build(self, instruction: Instruction) -> Unsigned:
        i = instruction
        prepared = None
        try:
            with self.engine.begin() as conn:
                done = stored_build(conn, NAME, i.payment_id)
                if done is not None:
                    return done
                fee_units = authorized_fee(conn, i.payment_id)
                built = builds(conn, NAME, "built")
                for pid in dead_unsigned(conn, [r.payment_id for r in built]):
                    row = next(r for r in built if r.payment_id == pid)
                    self.btc.release(self._payment(Unsigned.from_json(row.unsigned)))
                    set_build(conn, NAME, pid, "released", None)
                try:
                    prepared = self.btc.prepare([Payment(i.destination, i.amount)], self.fee_rate)
                except (SelectionError, BtcRailError, AddressError) as exc:
                    raise NotYet(f"cannot build now: {exc}") from None
                p = prepared
                if p.fee > fee_units:
                    raise NotYet(f"the fee {p.fee} sat is above the {fee_units} sat reserved")
                u = Unsigned("btc-psbt", p.payload, p.fee, {"txid": p.txid, "fee": p.fee})
                store_build(conn, NAME, i.payment_id, i.asset, i.amount, u)
            return u  # committed: the coins stay reserved with the stored build
        except BaseException:
            if prepared is not None:  # not stored: the coins go back to selection
                self.btc.release(prepared)
            raise

    # -- sign ----------------------------------------------------------------------------
    def attach(self, unsigned: Unsigned, signature: CustodySignature, public_key: str) -> Signed:
        """Custody's signatures (64 bytes per input) placed by the finalizer; custody's own
        ``signed_tx`` must be the same bytes, and libbitcoinkernel (Bitcoin Core's script
        interpreter, not our code) must accept every input against the coins it spends."""
        if bytes.fromhex(public_key) != self.btc.internal_key:
            raise RailError("public_key is not the rail's key", "public_key")
        p = self._payment(unsigned)
        sig = signature.signature
        if len(sig) != 128 * len(p.inputs):
            raise RailError(f"signature: need {len(p.inputs)} signatures of 64 bytes", "signature")
        try:
            sigs = [bytes.fromhex(sig[k : k + 128]) for k in range(0, len(sig), 128)]
            out = finalize_psbt(p, sigs)
        except (ValueError, PsbtError) as exc:
            raise RailError(f"signature: {exc}", "signature") from None
        if signature.signed_tx is not None and signature.signed_tx != out.hex:
            raise RailError("custody's signed_tx differs from the one finalized", "signed_tx")
        failed = verify_scripts(bytes.fromhex(out.hex), [(u.script, u.amount) for u in p.inputs])
        if failed:
            raise RailError(f"libbitcoinkernel refuses inputs {failed}", "signature")
        return Signed(out.hex, out.txid)

    # -- broadcast and confirm ----------------------------------------------------------------
    def broadcast(self, signed: Signed) -> str:
        parsed = parse_tx(bytes.fromhex(signed.raw))
        sp = SignedPayment(signed.raw, parsed.txid, parsed.wtxid, parsed.vsize, 0, 0)
        try:
            txid = self.btc.broadcast(sp)
        except Rejected as exc:
            if exc.reason in DEFINITIVE:
                raise RailError(f"the network refuses the transaction: {exc}", "tx") from None
            raise NotYet(f"refused for now, the same bytes are sent again: {exc}") from None
        with self.engine.begin() as conn:
            for r in builds(conn, NAME, "built"):
                if Unsigned.from_json(r.unsigned).state.get("txid") == txid:
                    set_build(conn, NAME, r.payment_id, "broadcast", txid)
        return txid

    def status(self, ref: str) -> Status:
        st = self.btc.status(ref)
        if st.state != "confirmed" or st.confirmations < self.required_confirmations:
            return Status("pending", st.confirmations, st.state)
        with self.engine.connect() as conn:
            row = build_by_ref(conn, NAME, ref)
        fee = None if row is None else int(Unsigned.from_json(row.unsigned).fee)
        facts = {"block_hash": st.block_hash, "height": st.height}
        return Status("confirmed", st.confirmations, f"in block {st.height}", fee, facts)

    def records(self) -> Iterable[RailRecord]:
        """Each broadcast transaction the chain holds in a block: what it paid outside the
        key (its outputs not back to the key; the txid commits to them)."""
        with self.engine.connect() as conn:
            rows = builds(conn, NAME, "broadcast")
        out = []
        for r in rows:
            if self.btc.status(r.ref).state != "confirmed":
                continue
            p = self._payment(Unsigned.from_json(r.unsigned))
            paid = sum(o.amount for o in p.outputs if o.script != self.btc.script)
            out.append(RailRecord(r.ref, r.payment_id, "BTC", paid))
        return out
