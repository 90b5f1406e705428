"""The Ethereum rail as one small class: build the unsigned bytes, attach custody's
signature, broadcast, read confirmations (:class:`EvmRail`; the package docstring has the
whole flow)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.models import SignRequestOut
from payments.evm.chain import Chain, ChainError, Receipt, TxRejected, tx_hash_of
from payments.evm.nonces import NonceState
from payments.evm.token import token_balance
from payments.evm.tx import (
    GAS_HEADROOM,
    PLAIN_TRANSFER_GAS,
    BuildError,
    Fees,
    UnsignedTx,
    assemble,
    check_uint,
    erc20_transfer_calldata,
    fees_from,
    parse_address,
)

__all__ = ["Confirmation", "Erc20Transfer", "EvmRail", "DEFAULT_MAX_FEE_CAP", "erc20_transfers"]

DEFAULT_MAX_FEE_CAP: Final = 1_000 * 10**9  # 1 000 gwei per gas: refuse to pay more
TRANSFER_TOPIC: Final = keccak(b"Transfer(address,address,uint256)")
State = Literal["pending", "included", "confirmed", "failed"]


@dataclass(frozen=True)
class Confirmation:
    """Where a broadcast transaction stands, from its receipt.

    ``pending``: no receipt yet (in the pool, or dropped: the caller decides after how
    long to re-broadcast the same bytes). ``failed``: mined with status 0 (reverted: its
    nonce and gas are spent, nothing else moved). ``included``: status 1 with fewer than the
    required confirmations; ``confirmed``: status 1 and ``confirmations >= required``, where
    ``confirmations = head - block_number + 1`` (the block holding it counts as one).
    """

    tx_hash: bytes
    state: State
    block_number: int | None
    confirmations: int
    receipt: Receipt | None


@dataclass(frozen=True)
class Erc20Transfer:
    """An EIP-20 ``Transfer`` event of a receipt."""

    token: str
    sender: str
    recipient: str
    amount: int


def erc20_transfers(receipt: Receipt) -> list[Erc20Transfer]:
    """The EIP-20 ``Transfer(address indexed, address indexed, uint256)`` logs of a receipt
    (for reconciliation: the token amounts that moved, as the chain says)."""
    out = []
    for log in receipt.logs:
        if len(log.topics) != 3 or log.topics[0] != TRANSFER_TOPIC or len(log.data) != 32:
            continue
        (amount,) = abi_decode(["uint256"], log.data)
        out.append(
            Erc20Transfer(
                log.address,
                to_checksum_address(log.topics[1][-20:]),
                to_checksum_address(log.topics[2][-20:]),
                int(amount),
            )
        )
    return out


class EvmRail:
    """Ether and ERC-20 transfers on one chain, signed by custody as ``evm-tx``.

    ``chain_id``: the chain the service pays on; when given, nothing is built if the
    endpoint reports another one (a misconfigured or swapped endpoint would otherwise get
    transactions signed for its chain);
    ``max_fee_cap``: wei per gas above which nothing is built (:func:`fees_from`);
    ``required_confirmations``: when a mined transaction counts as confirmed;
    ``check_funds``: refuse to build a transfer the sender cannot pay (value and the most
    gas can cost, and for a token the token balance) instead of having it signed and
    then refused by the chain. It reads the latest balances: a pre-check, not a
    reservation (transactions of the sender still in the pool are not subtracted; the
    payment core's ledger is what holds funds for a payment).
    """

    def __init__(
        self,
        chain: Chain,
        *,
        chain_id: int | None = None,
        required_confirmations: int = 1,
        max_fee_cap: int | None = DEFAULT_MAX_FEE_CAP,
        check_funds: bool = True,
    ) -> None:
        if required_confirmations < 1:
            raise ValueError("required_confirmations must be at least 1")
        self.chain = chain
        self.expected_chain_id = chain_id
        self.required_confirmations = required_confirmations
        self.max_fee_cap = max_fee_cap
        self.check_funds = check_funds

    # -- build --------------------------------------------------------------------------
    def fees(self) -> Fees:
        """The fee fields now: the latest block's base fee and the chain's suggested tip."""
        return fees_from(
            self.chain.latest_base_fee(),
            self.chain.max_priority_fee(),
            max_fee_cap=self.max_fee_cap,
        )

    def reserve_nonce(self, state: NonceState, payment_id: str) -> tuple[int, NonceState]:
        """:meth:`NonceState.reserve` against the chain's pending count of the address."""
        return state.reserve(payment_id, self.chain.get_transaction_count(state.address, "pending"))

    def ready(self, state: NonceState, payment_id: str) -> bool:
        """:meth:`NonceState.ready` against the chain's pending count: broadcast now?"""
        return state.ready(payment_id, self.chain.get_transaction_count(state.address, "pending"))

    def is_consumed(self, address: str, nonce: int) -> bool:
        """Whether ``nonce`` of ``address`` is used by a mined transaction (the latest
        count is above it): bytes signed at it can never be mined any more."""
        return self.chain.get_transaction_count(address, "latest") > nonce

    def _chain_id(self) -> int:
        got = self.chain.chain_id()
        if self.expected_chain_id is not None and got != self.expected_chain_id:
            raise BuildError(
                "chain_id", f"the endpoint is chain {got}, not {self.expected_chain_id}"
            )
        return got

    def _gas(self, sender: str, to: str, value: int, data: bytes) -> int:
        estimate = self.chain.estimate_gas(sender, to, value, data)
        if not data and estimate == PLAIN_TRANSFER_GAS:
            return PLAIN_TRANSFER_GAS  # an account without code: exactly the intrinsic gas
        return math.ceil(estimate * (1 + GAS_HEADROOM))

    def build_ether_transfer(
        self, *, sender: str, to: str, value: int, nonce: int, fees: Fees | None = None
    ) -> UnsignedTx:
        """An EIP-1559 transfer of ``value`` wei from ``sender`` to ``to`` at ``nonce``."""
        sender = parse_address(sender, "sender")
        to = parse_address(to, "to")
        check_uint(value, "value")
        if self.check_funds and self.chain.get_balance(sender) < value:
            have = self.chain.get_balance(sender)
            raise BuildError("value", f"{sender} holds {have} wei, less than the {value} sent")
        fees = fees or self.fees()
        try:
            gas = self._gas(sender, to, value, b"")
        except TxRejected as e:
            raise BuildError("to", f"the transfer would fail: {e}") from None
        tx = UnsignedTx.ether_transfer(
            chain_id=self._chain_id(),
            nonce=nonce,
            to=to,
            value=value,
            fees=fees,
            gas_limit=gas,
        )
        if self.check_funds:
            have = self.chain.get_balance(sender)
            if have < tx.max_cost:
                raise BuildError(
                    "value", f"{sender} holds {have} wei; the transfer may cost {tx.max_cost}"
                )
        return tx

    def build_erc20_transfer(
        self,
        *,
        sender: str,
        token: str,
        recipient: str,
        amount: int,
        nonce: int,
        fees: Fees | None = None,
    ) -> UnsignedTx:
        """An EIP-1559 call of ``token.transfer(recipient, amount)`` from ``sender``."""
        sender = parse_address(sender, "sender")
        token = parse_address(token, "token")
        data = erc20_transfer_calldata(recipient, amount)
        if self.check_funds:
            held = token_balance(self.chain, token, sender)
            if held < amount:
                raise BuildError("amount", f"{sender} holds {held} of token {token}, not {amount}")
        fees = fees or self.fees()
        try:
            gas = self._gas(sender, token, 0, data)
        except TxRejected as e:
            raise BuildError("token", f"the transfer would fail: {e}") from None
        tx = UnsignedTx.erc20_transfer(
            chain_id=self._chain_id(),
            nonce=nonce,
            token=token,
            recipient=recipient,
            amount=amount,
            fees=fees,
            gas_limit=gas,
        )
        if self.check_funds:
            have = self.chain.get_balance(sender)
            if have < tx.max_cost:
                raise BuildError("gas", f"{sender} holds {have} wei; gas may cost {tx.max_cost}")
        return tx

    # -- sign -------------------------------------------------------------------------------
    @staticmethod
    def attach(tx: UnsignedTx, sign_request: SignRequestOut, public_key: str | bytes) -> bytes:
        """The signed transaction from custody's answer to the ``evm-tx`` request for ``tx``.

        Checks that the request is signed, of kind ``evm-tx``, over this very transaction's
        digest; assembles ``0x02 || rlp(fields + [y_parity, r, s])`` from its ``r, s,
        y_parity`` (which must recover to ``public_key``, the key's 33-byte compressed point)
        and requires custody's own ``signed_tx`` to be byte-identical.
        """
        sr = sign_request
        pk = public_key if isinstance(public_key, bytes) else bytes.fromhex(public_key)
        if sr.kind != "evm-tx":
            raise BuildError("sign_request.kind", f"{sr.kind!r}, not 'evm-tx'")
        if sr.status != "signed":
            raise BuildError("sign_request.status", f"{sr.status!r}, not 'signed'")
        if sr.message.lower().removeprefix("0x") != tx.digest.hex():
            raise BuildError("sign_request.message", "signs another transaction")
        if sr.result is None or sr.result.signature is None:
            raise BuildError("sign_request.result", "no evm-tx signature in the answer")
        sig = sr.result.signature
        try:
            r, s = int(sig.r, 16), int(sig.s, 16)
        except ValueError:
            raise BuildError("sign_request.result.signature", "r or s is not hex") from None
        signed = assemble(tx, r=r, s=s, y_parity=sig.y_parity, public_key=pk)
        if bytes.fromhex(sr.result.signed_tx.removeprefix("0x")) != signed:
            raise BuildError("sign_request.result.signed_tx", "differs from the one assembled")
        return signed

    # -- broadcast and confirm ----------------------------------------------------------
    def broadcast(self, signed: bytes) -> bytes:
        """Send a signed transaction; its hash. Idempotent: a transaction already mined is
        not sent again (its hash is returned). :class:`TxRejected`: refused now; the nonce
        stays with the payment (:mod:`payments.evm.nonces`: rebuild at the same nonce, or
        :meth:`is_consumed`); :class:`~payments.evm.chain.ChainUnavailable`: unknown, send
        the same bytes again."""
        h = tx_hash_of(signed)
        if self.chain.get_transaction_receipt(h) is not None:
            return h
        got = self.chain.send_raw_transaction(signed)
        if got != h:
            raise ChainError("send_raw_transaction: the chain's hash is not keccak256(tx)")
        return h

    def confirmation(self, tx_hash: bytes) -> Confirmation:
        """:class:`Confirmation` of ``tx_hash`` from its receipt and the chain's head."""
        receipt = self.chain.get_transaction_receipt(tx_hash)
        if receipt is None:
            return Confirmation(tx_hash, "pending", None, 0, None)
        head = self.chain.block_number()
        confirmations = max(0, head - receipt.block_number + 1)
        state: State
        if receipt.status != 1:
            state = "failed"
        elif confirmations >= self.required_confirmations:
            state = "confirmed"
        else:
            state = "included"
        return Confirmation(tx_hash, state, receipt.block_number, confirmations, receipt)
