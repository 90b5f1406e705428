"""The ``ethereum`` rail of the payment service: :class:`payments.rails.Rail` over
:class:`payments.evm.EvmRail` (EIP-1559 ether and ERC-20 transfers signed by custody as
``evm-tx``), one custody ``ecdsa-secp256k1`` key, one sending address.

Amounts: ETH is ledgered in gwei (:data:`payments.ledger.ETH_GWEI`, the amount-unit decision
in :mod:`payments.db`): the value sent is ``amount * 10**9`` wei, exactly. A token is
ledgered in its own base unit (the test token has 6 decimals). The ETH gas fee is reserved at
authorization as the most it can be (``21000 * 2 * (2 * base fee + tip)``, rounded up to
gwei), the transaction's ``max_fee_per_gas`` is capped so it can never cost more than that,
and at confirmation the fee actually paid (``gas_used * effective_gas_price`` from the
receipt) is charged rounded up to whole gwei, the rounding recorded (wei), the rest of the
reservation returned. An ERC-20 transfer's gas is paid in ETH by the house's address and is
not charged to the token account (a different asset); it is recorded with the event.

Nonces (:mod:`payments.evm.nonces`): one :class:`~payments.evm.NonceState` per address in
:data:`payments.db.chain_nonces`, read and written under the row lock (``SELECT ... FOR
UPDATE`` on PostgreSQL, the database write lock on SQLite) in the same database transaction
as the stored build (:mod:`payments.chains`). The nonce is marked ``signed`` when the build
is stored, before custody can be asked; it is released only for a payment that is dead
without a signature (:func:`payments.chains.dead_unsigned`), consumed when its transaction
is mined. Broadcast in nonce order (:meth:`~payments.evm.NonceState.ready`); a send whose
outcome is unknown (:class:`~payments.evm.ChainUnavailable`) or a refusal while the nonce is
still open is retried with the SAME bytes; a refusal because another transaction used the
nonce is definitive (:class:`~payments.rails.RailError`: these bytes can never be mined).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import coincurve
import rlp
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import Connection, Engine, delete, insert, select, update

from custody.domain import Scheme
from custody.models import KeyOut
from payments import events as ev
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
from payments.db import assets, chain_nonces
from payments.evm import (
    BuildError,
    Chain,
    ChainUnavailable,
    EvmRail,
    NonceState,
    TxRejected,
    UnsignedTx,
    assemble,
    erc20_transfers,
)
from payments.evm.rail import DEFAULT_MAX_FEE_CAP
from payments.evm.tx import PLAIN_TRANSFER_GAS, parse_address
from payments.ledger import ETH_GWEI
from payments.rails import (
    CustodySignature,
    Instruction,
    RailError,
    RailRecord,
    Signed,
    Status,
    Unsigned,
)

NAME: Final = "ethereum"
FEE_HEADROOM: Final = 2  # the reserved fee covers the base fee doubling before the build


@dataclass(frozen=True)
class Token:
    """An ERC-20 the rail pays in: its ledger asset code, contract, decimals."""

    asset: str
    address: str
    decimals: int


def address_of(public_key: bytes) -> str:
    """The Ethereum address of a compressed secp256k1 key (yellow paper eq. 284:
    ``keccak256(x || y)[12:]``), the point decompressed by libsecp256k1 (coincurve)."""
    point = coincurve.PublicKey(public_key).format(compressed=False)[1:]
    return str(to_checksum_address(keccak(point)[12:]))


class EthereumRail:
    name = NAME
    scheme: Scheme = "ecdsa-secp256k1"

    def __init__(
        self,
        engine: Engine,
        chain: Chain,
        key: KeyOut,
        *,
        tokens: Iterable[Token] = (),
        chain_id: int | None = None,
        required_confirmations: int = 1,
        max_fee_cap: int | None = None,
        fresh_chain: bool = False,
    ) -> None:
        """``fresh_chain``: the chain started empty with this process (the in-process
        development chain): the nonce state kept for a previous chain is dropped, since
        its nonces mean nothing on this one (a real chain never goes back, so never)."""
        if key.scheme != "ecdsa-secp256k1" or not key.public_key:
            raise ValueError(f"{key.id}: an active ecdsa-secp256k1 key is needed")
        self.engine = engine
        self.key_id = key.id
        self.public_key = bytes.fromhex(key.public_key)
        self.address = address_of(self.public_key)
        shown = key.addresses.get("ethereum")
        if shown is not None and to_checksum_address(shown) != self.address:
            raise ValueError(f"{key.id}: custody shows address {shown}, the key is {self.address}")
        self.evm = EvmRail(
            chain,
            chain_id=chain_id,
            required_confirmations=required_confirmations,
            max_fee_cap=DEFAULT_MAX_FEE_CAP if max_fee_cap is None else max_fee_cap,
        )
        if fresh_chain:
            with engine.begin() as conn:
                conn.execute(
                    delete(chain_nonces).where(
                        chain_nonces.c.rail == NAME, chain_nonces.c.address == self.address
                    )
                )
        self.tokens: dict[str, Token] = {t.asset: t for t in tokens}
        self.decimals: dict[str, int] = {"ETH": ETH_GWEI.decimals}
        self.decimals.update({t.asset: t.decimals for t in self.tokens.values()})

    # -- authorization ---------------------------------------------------------------------
    def validate(self, instruction: Instruction) -> list[str]:
        i = instruction
        if i.asset not in self.decimals:
            return [f"the ethereum rail pays {', '.join(sorted(self.decimals))}, not {i.asset}"]
        try:
            to = parse_address(i.destination, "destination")
        except BuildError as exc:
            return [f"destination: {exc}"]
        if i.asset == "ETH":
            try:
                gas = self.evm.chain.estimate_gas(
                    self.address, to, ETH_GWEI.to_chain(i.amount), b""
                )
            except TxRejected as exc:
                return [f"the ether transfer would fail: {exc}"]
            except ChainUnavailable:
                return []  # the build checks again
            if gas != PLAIN_TRANSFER_GAS:
                return [f"destination {to} runs code ({gas} gas): ether goes to accounts only"]
        return []

    def destination_check(self, conn: Connection, i: Instruction) -> list[str]:
        """The ledger's asset must be ledgered in this rail's unit (ETH: 9 decimals, gwei)."""
        want = self.decimals.get(i.asset)
        have = conn.execute(select(assets.c.decimals).where(assets.c.code == i.asset)).scalar()
        if want is not None and have != want:
            return [
                f"{i.asset} accounts must be ledgered with {want} decimals on the ethereum "
                f"rail (ETH in gwei), this ledger's {i.asset} has {have}"
            ]
        return []

    def _gas(self, i: Instruction) -> int:
        return PLAIN_TRANSFER_GAS if i.asset == "ETH" else 0

    def fee_estimate(self, instruction: Instruction) -> int:
        """The most the ETH gas fee may be, in gwei (module docstring); 0 for a token."""
        if instruction.asset != "ETH":
            return 0
        per_gas = self.evm.fees().max_fee_per_gas * FEE_HEADROOM
        units, _ = ETH_GWEI.charge(PLAIN_TRANSFER_GAS * per_gas)
        return units

    # -- nonce state ---------------------------------------------------------------------
    def _load(self, conn: Connection) -> NonceState:
        row = conn.execute(
            select(chain_nonces.c.state)
            .where(chain_nonces.c.rail == NAME, chain_nonces.c.address == self.address)
            .with_for_update()
        ).first()
        if row is not None:
            return NonceState.from_json(row.state)
        state = NonceState(self.address)
        conn.execute(
            insert(chain_nonces).values(
                rail=NAME, address=self.address, state=state.to_json(), updated_at=ev.now()
            )
        )
        return state

    def _save(self, conn: Connection, state: NonceState) -> None:
        conn.execute(
            update(chain_nonces)
            .where(chain_nonces.c.rail == NAME, chain_nonces.c.address == self.address)
            .values(state=state.to_json(), updated_at=ev.now())
        )

    def nonce_state(self) -> NonceState:
        with self.engine.begin() as conn:
            return self._load(conn)

    # -- build -------------------------------------------------------------------------------
    def build(self, instruction: Instruction) -> Unsigned:
        i = instruction
        with self.engine.begin() as conn:
            done = stored_build(conn, NAME, i.payment_id)
            if done is not None:
                return done  # the same bytes as before (a retry, a restart)
            fee_units = authorized_fee(conn, i.payment_id)
            state = self._load(conn)
            for pid in sorted(dead_unsigned(conn, state.stale())):
                state = state.release(pid, never_signed=True)
            nonce, state = self.evm.reserve_nonce(state, i.payment_id)
            try:
                tx = self._tx(i, nonce, fee_units)
            except BuildError as exc:
                raise NotYet(f"cannot build now: {exc}") from None
            state = state.signed(i.payment_id)  # custody may be asked from here on
            self._save(conn, state)
            u = Unsigned(
                "evm-tx",
                tx.payload,
                fee_units,
                {
                    "address": self.address,
                    "asset": i.asset,
                    "chain_id": tx.chain_id,
                    "nonce": tx.nonce,
                    "tip": tx.max_priority_fee_per_gas,
                    "max_fee": tx.max_fee_per_gas,
                    "gas": tx.gas_limit,
                    "to": tx.to,
                    "value": tx.value,
                    "data": tx.data.hex(),
                },
            )
            store_build(conn, NAME, i.payment_id, i.asset, i.amount, u)
            return u

    def _tx(self, i: Instruction, nonce: int, fee_units: int) -> UnsignedTx:
        fees = self.evm.fees()
        if i.asset == "ETH":
            tx = self.evm.build_ether_transfer(
                sender=self.address,
                to=i.destination,
                value=ETH_GWEI.to_chain(i.amount),
                nonce=nonce,
                fees=fees,
            )
            # never more than was reserved: max_fee_per_gas * gas <= the authorized fee
            cap = ETH_GWEI.to_chain(fee_units) // tx.gas_limit if fee_units else 0
            if cap < fees.base_fee + fees.max_priority_fee_per_gas:
                raise BuildError(
                    "max_fee_per_gas",
                    f"the reserved fee ({fee_units} gwei) no longer covers the base fee "
                    f"{fees.base_fee} + tip {fees.max_priority_fee_per_gas} wei/gas",
                )
            return dataclasses.replace(tx, max_fee_per_gas=min(tx.max_fee_per_gas, cap))
        token = self.tokens[i.asset]
        return self.evm.build_erc20_transfer(
            sender=self.address,
            token=token.address,
            recipient=i.destination,
            amount=i.amount,
            nonce=nonce,
            fees=fees,
        )

    @staticmethod
    def _unsigned_tx(u: Unsigned) -> UnsignedTx:
        s = u.state
        tx = UnsignedTx(
            s["chain_id"],
            s["nonce"],
            s["tip"],
            s["max_fee"],
            s["gas"],
            s["to"],
            s["value"],
            bytes.fromhex(s["data"]),
        )
        if tx.payload != u.payload:
            raise RailError("the stored transaction differs from its payload", "unsigned")
        return tx

    # -- sign --------------------------------------------------------------------------------
    def attach(self, unsigned: Unsigned, signature: CustodySignature, public_key: str) -> Signed:
        """``0x02 || rlp(fields + [y_parity, r, s])`` from custody's ``r || s`` and recovery
        id; custody's own ``signed_tx`` must be the same bytes, and eth-account (not our
        code) must recover this key's address from them."""
        tx = self._unsigned_tx(unsigned)
        if bytes.fromhex(public_key) != self.public_key:
            raise RailError("public_key is not the rail's key", "public_key")
        try:
            sig = bytes.fromhex(signature.signature)
        except ValueError:
            raise RailError("signature is not hex", "signature") from None
        if len(sig) != 64 or signature.recovery_id not in (0, 1):
            raise RailError(
                "signature: need r || s (64 bytes) and a recovery id 0 or 1", "signature"
            )
        try:
            signed = assemble(
                tx,
                r=int.from_bytes(sig[:32], "big"),
                s=int.from_bytes(sig[32:], "big"),
                y_parity=signature.recovery_id,
                public_key=self.public_key,
            )
        except BuildError as exc:
            raise RailError(f"signature: {exc}", "signature") from None
        if signature.signed_tx is not None:
            theirs = bytes.fromhex(signature.signed_tx.removeprefix("0x"))
            if theirs != signed:
                raise RailError("custody's signed_tx differs from the one assembled", "signed_tx")
        if to_checksum_address(Account.recover_transaction(signed)) != self.address:
            raise RailError("eth-account recovers another sender", "signature")
        return Signed(signed.hex(), "0x" + keccak(signed).hex())

    # -- broadcast and confirm -------------------------------------------------------------------
    def broadcast(self, signed: Signed) -> str:
        raw = bytes.fromhex(signed.raw.removeprefix("0x"))
        nonce = int.from_bytes(rlp.decode(raw[1:])[1], "big")
        with self.engine.begin() as conn:
            state = self._load(conn)
            pid = next((k for k, v in state.inflight.items() if v.nonce == nonce), None)
            if pid is not None and not self.evm.ready(state, pid):
                raise NotYet(f"nonce {nonce} waits for a lower nonce of {self.address}")
            try:
                h = self.evm.broadcast(raw)
            except TxRejected as exc:
                if self.evm.chain.get_transaction_receipt(keccak(raw)) is None and (
                    self.evm.is_consumed(self.address, nonce)
                ):
                    if pid is not None:
                        self._save(conn, state.consumed(pid))
                    raise RailError(
                        f"nonce {nonce} of {self.address} is used by another transaction: "
                        f"these bytes can never be mined ({exc})",
                        "nonce",
                    ) from None
                raise NotYet(f"refused for now, the same bytes are sent again: {exc}") from None
            ref = "0x" + h.hex()
            if pid is not None:
                state = state.broadcast(pid)
                self._save(conn, state)
                set_build(conn, NAME, pid, "broadcast", ref)
            return ref

    def status(self, ref: str) -> Status:
        c = self.evm.confirmation(bytes.fromhex(ref.removeprefix("0x")))
        if c.state in ("pending", "included") or c.receipt is None:
            return Status("pending", c.confirmations, c.state)
        with self.engine.begin() as conn:
            row = build_by_ref(conn, NAME, ref)
            state = self._load(conn)
            if row is not None and row.payment_id in state.inflight:
                self._save(conn, state.consumed(row.payment_id))  # mined: the nonce is spent
        fee_wei = c.receipt.fee
        facts: dict[str, Any] = {"fee_wei": str(fee_wei), "block_number": c.block_number}
        if c.state == "failed":
            return Status("failed", c.confirmations, f"reverted in block {c.block_number}")
        if row is None or row.asset != "ETH":
            return Status("confirmed", c.confirmations, "mined, status 1", None, facts)
        units, rounding = ETH_GWEI.charge(fee_wei)
        facts["fee_rounding_wei"] = str(rounding)
        return Status("confirmed", c.confirmations, "mined, status 1", units, facts)

    def records(self) -> Iterable[RailRecord]:
        """What the chain's receipts say moved, for each transaction this rail broadcast:
        ether from the mined bytes (the hash commits to them), tokens from the EIP-20
        ``Transfer`` logs; a transaction without a receipt (dropped, reorganized away) or
        reverted moved nothing and is not reported."""
        with self.engine.connect() as conn:
            rows = builds(conn, NAME, "broadcast")
        out = []
        for r in rows:
            receipt = self.evm.chain.get_transaction_receipt(bytes.fromhex(r.ref[2:]))
            if receipt is None or receipt.status != 1:
                continue
            u = Unsigned.from_json(r.unsigned)
            if r.asset == "ETH":
                amount = ETH_GWEI.from_chain(int(u.state["value"]))
            else:
                token = self.tokens[r.asset].address
                moved = [
                    t
                    for t in erc20_transfers(receipt)
                    if t.token == token and t.sender == self.address
                ]
                amount = sum(t.amount for t in moved)
            out.append(RailRecord(r.ref, r.payment_id, r.asset, amount))
        return out


def checks(rail: EthereumRail) -> Mapping[str, Callable[[Connection, Instruction], list[str]]]:
    return {NAME: rail.destination_check}
