"""Unsigned EIP-1559 transactions exactly as custody's ``evm-tx`` decoder wants them, and the
signed transaction assembled from custody's signature.

Encoding (EIP-1559 "Specification", EIP-2718 typed envelope): ``0x02 || rlp([chain_id,
nonce, max_priority_fee_per_gas, max_fee_per_gas, gas_limit, destination, amount, data,
access_list])``, integers as big-endian byte strings without leading zeros (zero is the
empty string), the access list always empty. Every built transaction is decoded again by
:func:`custody.kinds.evm.decode` (the very decoder the signer nodes run) and must give back
the fields asked for, so a byte custody would refuse never leaves this module.

ERC-20 ``transfer(address,uint256)`` calldata (EIP-20; Solidity ABI specification
"Function Selector and Argument Encoding"): the selector ``keccak256("transfer(address,
uint256)")[:4] = a9059cbb`` then the two arguments as 32-byte words (eth-abi's encoder).

Fees (:class:`Fees`): ``max_fee_per_gas = 2 * base_fee + max_priority_fee_per_gas``, with
the base fee of the latest block. The base fee rises at most 12.5 % a block (EIP-1559
``BASE_FEE_MAX_CHANGE_DENOMINATOR = 8``), so twice today's base fee still covers six full
blocks in a row; the sender pays ``min(max_fee, base_fee + tip)`` per gas, never the cap.
A cap (``max_fee_cap``) refuses to build a transaction whose fees a spike (or a lying node)
pushed over what the operator accepts.

Gas: a plain ether transfer to an account without code costs exactly 21 000 (the
yellow paper's ``G_transaction``); anything else (an ERC-20 call, a transfer to a contract)
is estimated with ``eth_estimateGas`` and given ``GAS_HEADROOM`` (20 %) on top, because state
may change between estimate and inclusion; unused gas is refunded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import rlp
from eth_abi.abi import encode as abi_encode
from eth_utils.address import is_address, is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak

from custody.kinds import evm as custody_evm
from custody.kinds._common import KindError

__all__ = [
    "BuildError",
    "Fees",
    "GAS_HEADROOM",
    "PLAIN_TRANSFER_GAS",
    "TRANSFER_SELECTOR",
    "UnsignedTx",
    "assemble",
    "check_uint",
    "erc20_balance_of_calldata",
    "erc20_transfer_calldata",
    "fees_from",
    "parse_address",
]

TX_TYPE: Final = 0x02
PLAIN_TRANSFER_GAS: Final = 21_000
GAS_HEADROOM: Final = 0.20
TRANSFER_SELECTOR: Final = keccak(b"transfer(address,uint256)")[:4]
BALANCE_OF_SELECTOR: Final = keccak(b"balanceOf(address)")[:4]
U64: Final = 2**64 - 1
_FIELDS: Final = (
    "chain_id",
    "nonce",
    "max_priority_fee_per_gas",
    "max_fee_per_gas",
    "gas_limit",
    "to",
    "value",
    "data",
)
U256: Final = 2**256 - 1


class BuildError(ValueError):
    """A transaction that cannot be built as asked; ``field`` names the input at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def parse_address(value: object, field: str) -> str:
    """An address as EIP-55: refuses a non-address, and a mixed-case one whose checksum is
    wrong (EIP-55: a typo in a checksummed address must not pay someone else)."""
    if not isinstance(value, str) or not is_address(value):
        raise BuildError(field, f"not a 20-byte hex address: {value!r}")
    body = value[2:] if value[:2] in ("0x", "0X") else value
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise BuildError(field, f"EIP-55 checksum does not match: {value}")
    return str(to_checksum_address(value))


def check_uint(value: object, field: str, limit: int = U256) -> int:
    """``value`` if it is an integer (not a bool) in ``[0, limit]``, else :class:`BuildError`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise BuildError(field, f"must be an integer in [0, {limit}]")
    return value


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee fields per gas (wei), from the base fee of the latest block."""

    base_fee: int
    max_priority_fee_per_gas: int

    @property
    def max_fee_per_gas(self) -> int:
        """``2 * base_fee + tip`` (module docstring)."""
        return 2 * self.base_fee + self.max_priority_fee_per_gas


def fees_from(base_fee: int, priority_fee: int, *, max_fee_cap: int | None = None) -> Fees:
    """:class:`Fees` of a chain's suggestion; refuses one over ``max_fee_cap`` wei per gas."""
    fees = Fees(
        check_uint(base_fee, "base_fee"), check_uint(priority_fee, "max_priority_fee_per_gas")
    )
    if max_fee_cap is not None and fees.max_fee_per_gas > max_fee_cap:
        raise BuildError(
            "max_fee_per_gas",
            f"{fees.max_fee_per_gas} wei/gas is over the cap of {max_fee_cap} "
            f"(base fee {base_fee}, tip {priority_fee})",
        )
    return fees


def erc20_transfer_calldata(recipient: str, amount: int) -> bytes:
    """``transfer(recipient, amount)``, canonically ABI-encoded (68 bytes)."""
    to = parse_address(recipient, "recipient")
    return TRANSFER_SELECTOR + abi_encode(
        ["address", "uint256"], [to, check_uint(amount, "amount")]
    )


def erc20_balance_of_calldata(holder: str) -> bytes:
    """``balanceOf(holder)`` for :meth:`Chain.call`."""
    return BALANCE_OF_SELECTOR + abi_encode(["address"], [parse_address(holder, "holder")])


@dataclass(frozen=True)
class UnsignedTx:
    """An unsigned EIP-1559 transaction; :attr:`raw` is what custody signs as ``evm-tx``."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas_limit: int
    to: str  # EIP-55; the token contract for an ERC-20 transfer
    value: int  # wei
    data: bytes

    def __post_init__(self) -> None:
        check_uint(self.chain_id, "chain_id", U64)
        if self.chain_id == 0:
            raise BuildError("chain_id", "must not be 0 (EIP-155 replay protection)")
        check_uint(self.nonce, "nonce", U64 - 1)  # EIP-2681
        check_uint(self.max_priority_fee_per_gas, "max_priority_fee_per_gas")
        check_uint(self.max_fee_per_gas, "max_fee_per_gas")
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise BuildError("max_priority_fee_per_gas", "exceeds max_fee_per_gas (EIP-1559)")
        check_uint(self.gas_limit, "gas_limit", U64)
        if self.gas_limit < PLAIN_TRANSFER_GAS:
            raise BuildError("gas_limit", f"under the intrinsic {PLAIN_TRANSFER_GAS}")
        object.__setattr__(self, "to", parse_address(self.to, "to"))
        check_uint(self.value, "value")
        if not isinstance(self.data, bytes):
            raise BuildError("data", "must be bytes")
        # the decoder the nodes run must read back exactly these fields
        try:
            got = custody_evm.decode(self.payload)
        except KindError as e:
            raise BuildError(e.field, f"custody would refuse it: {e}") from None
        if any(getattr(got, n) != getattr(self, n) for n in _FIELDS):
            raise BuildError("tx", "custody decodes other fields than the ones built")

    @property
    def raw(self) -> bytes:
        """``0x02 || rlp(fields)``, canonical."""
        fields = [
            self.chain_id,
            self.nonce,
            self.max_priority_fee_per_gas,
            self.max_fee_per_gas,
            self.gas_limit,
            bytes.fromhex(self.to[2:]),
            self.value,
            self.data,
            [],
        ]
        return bytes([TX_TYPE]) + bytes(rlp.encode(fields))

    @property
    def payload(self) -> dict[str, Any]:
        """The ``evm-tx`` sign-request payload, ``{"tx": "0x02..."}``."""
        return {"tx": "0x" + self.raw.hex()}

    @property
    def digest(self) -> bytes:
        """``keccak256(raw)``: the one message custody signs (the sign request's ``message``)."""
        return keccak(self.raw)

    @property
    def max_cost(self) -> int:
        """The most the sender can be charged: ``value + gas_limit * max_fee_per_gas``."""
        return self.value + self.gas_limit * self.max_fee_per_gas

    @classmethod
    def ether_transfer(
        cls, *, chain_id: int, nonce: int, to: str, value: int, fees: Fees, gas_limit: int
    ) -> UnsignedTx:
        return cls(
            chain_id,
            nonce,
            fees.max_priority_fee_per_gas,
            fees.max_fee_per_gas,
            gas_limit,
            to,
            value,
            b"",
        )

    @classmethod
    def erc20_transfer(
        cls,
        *,
        chain_id: int,
        nonce: int,
        token: str,
        recipient: str,
        amount: int,
        fees: Fees,
        gas_limit: int,
    ) -> UnsignedTx:
        data = erc20_transfer_calldata(recipient, amount)
        return cls(
            chain_id,
            nonce,
            fees.max_priority_fee_per_gas,
            fees.max_fee_per_gas,
            gas_limit,
            parse_address(token, "token"),
            0,
            data,
        )


def assemble(tx: UnsignedTx, *, r: int, s: int, y_parity: int, public_key: bytes) -> bytes:
    """The signed transaction ``0x02 || rlp(fields + [y_parity, r, s])`` (EIP-1559).

    Reuses :func:`custody.kinds.evm.assemble`: ``s`` must be low (EIP-2) and the signature
    must recover to ``public_key`` (33-byte compressed), so a signature of another key or
    another transaction is refused here rather than broadcast.
    """
    intent = custody_evm.decode(tx.payload)
    try:
        signed = custody_evm.assemble(intent, r, s, y_parity, public_key=public_key)
    except KindError as e:
        raise BuildError(e.field, str(e)) from None
    return bytes.fromhex(signed[2:])
