"""``evm-tx``: an unsigned EIP-1559 (type 2) Ethereum transaction.

Payload ``{"tx": "0x02..."}``: ``0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas,
max_fee_per_gas, gas_limit, to, value, data, access_list])`` (EIP-1559, EIP-2718). The one
message signed is ``keccak256(0x02 || rlp(fields))``; :func:`assemble` appends
``y_parity, r, s`` to the fields for the signed transaction.

Strict: only type 2; canonical RLP only (the bytes must re-encode to themselves, so no
long form where a short one fits, no leading zero bytes in integers, no trailing bytes);
integers bounded (chain id, nonce and gas by 64 bits, EIP-2681; fees and value by 256); ``to``
exactly 20 bytes (contract creation is refused); access-list entries are a 20-byte address
and 32-byte storage keys. ``max_priority_fee_per_gas <= max_fee_per_gas`` (EIP-1559's own
validity rule). Calldata with the ERC-20 ``transfer(address,uint256)`` or
``approve(address,uint256)`` selector must be exactly that call, canonically ABI-encoded,
and is decoded to token (``to``), recipient or spender, and amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import coincurve
import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.kinds._common import Intent, KindError, hex_bytes, only_fields

__all__ = ["KIND", "EvmTx", "Erc20Call", "decode", "assemble", "result", "MAX_TX"]

KIND: Final = "evm-tx"
TX_TYPE: Final = 0x02
MAX_TX: Final = 128 * 1024  # bytes of an unsigned transaction (Geth's txMaxSize)
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
U64: Final = 2**64 - 1
U256: Final = 2**256 - 1
ERC20_SELECTORS: Final = {
    bytes.fromhex("a9059cbb"): "transfer",  # transfer(address,uint256)
    bytes.fromhex("095ea7b3"): "approve",  # approve(address,uint256)
}
_NAMES: Final = (
    "chain_id",
    "nonce",
    "max_priority_fee_per_gas",
    "max_fee_per_gas",
    "gas_limit",
    "to",
    "value",
    "data",
    "access_list",
)


@dataclass(frozen=True)
class Erc20Call:
    method: str  # "transfer" | "approve"
    token: str  # the contract called (EIP-55)
    recipient: str  # recipient of a transfer, spender of an approve (EIP-55)
    amount: int  # in the token's smallest unit


@dataclass(frozen=True)
class EvmTx(Intent):
    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas_limit: int
    to: str  # EIP-55
    value: int  # wei
    data: bytes
    access_list: tuple[tuple[str, tuple[bytes, ...]], ...]
    erc20: Erc20Call | None
    digest: bytes  # keccak256(0x02 || rlp(fields)), the one message signed
    unsigned: bytes  # 0x02 || rlp(fields), canonical

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "nonce": self.nonce,
            "to": self.to,
            "value": str(self.value),
            "data": "0x" + self.data.hex(),
            "max_fee_per_gas": str(self.max_fee_per_gas),
            "max_priority_fee_per_gas": str(self.max_priority_fee_per_gas),
            "gas_limit": self.gas_limit,
            "max_fee": str(self.max_fee_per_gas * self.gas_limit),
            "access_list": [
                {"address": a, "storage_keys": ["0x" + k.hex() for k in keys]}
                for a, keys in self.access_list
            ],
            "digest": self.digest.hex(),
        }
        if self.erc20 is not None:
            out["erc20"] = {
                "method": self.erc20.method,
                "token": self.erc20.token,
                "recipient": self.erc20.recipient,
                "amount": str(self.erc20.amount),
            }
        return out


def _int(item: object, name: str, limit: int) -> int:
    if not isinstance(item, bytes):
        raise KindError(KIND, f"tx.{name}", "must be an RLP string, not a list")
    if item[:1] == b"\x00":
        raise KindError(KIND, f"tx.{name}", "integer with a leading zero byte (not canonical)")
    value = int.from_bytes(item, "big")
    if value > limit:
        raise KindError(KIND, f"tx.{name}", f"integer over {limit.bit_length()} bits")
    return value


def _address(item: object, name: str) -> str:
    if not isinstance(item, bytes) or len(item) != 20:
        raise KindError(KIND, name, "must be a 20-byte address")
    return str(to_checksum_address(item))


def _access_list(item: object) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
    if not isinstance(item, list):
        raise KindError(KIND, "tx.access_list", "must be an RLP list")
    entries = []
    for i, entry in enumerate(item):
        name = f"tx.access_list[{i}]"
        if not isinstance(entry, list) or len(entry) != 2:
            raise KindError(KIND, name, "must be a list [address, storage_keys]")
        address = _address(entry[0], f"{name}.address")
        if not isinstance(entry[1], list):
            raise KindError(KIND, f"{name}.storage_keys", "must be an RLP list")
        keys = []
        for j, key in enumerate(entry[1]):
            if not isinstance(key, bytes) or len(key) != 32:
                raise KindError(KIND, f"{name}.storage_keys[{j}]", "must be 32 bytes")
            keys.append(key)
        entries.append((address, tuple(keys)))
    return tuple(entries)


def _erc20(token: str, data: bytes) -> Erc20Call | None:
    method = ERC20_SELECTORS.get(data[:4])
    if method is None:
        return None
    if len(data) != 4 + 64:
        raise KindError(KIND, "tx.data", f"ERC-20 {method} calldata must be 68 bytes")
    try:
        recipient, amount = abi_decode(["address", "uint256"], data[4:], strict=True)
    except Exception as exc:  # eth-abi raises several unrelated types
        raise KindError(KIND, "tx.data", f"bad ERC-20 {method} arguments: {exc}") from None
    if abi_encode(["address", "uint256"], [recipient, amount]) != data[4:]:
        raise KindError(KIND, "tx.data", f"ERC-20 {method} arguments not canonically encoded")
    return Erc20Call(method, token, str(to_checksum_address(recipient)), int(amount))


def decode(payload: Mapping[str, Any]) -> EvmTx:
    """Decode an ``evm-tx`` payload; :class:`KindError` names the field for anything refused."""
    only_fields(KIND, payload, {"tx"}, {"tx"})
    raw = hex_bytes(KIND, "tx", payload["tx"], MAX_TX)
    if not raw:
        raise KindError(KIND, "tx", "empty")
    if raw[0] != TX_TYPE:
        what = "legacy (RLP list)" if raw[0] >= 0xC0 else f"type {raw[0]}"
        raise KindError(KIND, "tx.type", f"{what}: only EIP-1559 (type 2) is accepted")
    body = raw[1:]
    try:
        items = rlp.decode(body, strict=True)
    except Exception as exc:  # pyrlp: DecodingError and friends
        raise KindError(KIND, "tx", f"not RLP: {exc}") from None
    if rlp.encode(items) != body:
        raise KindError(KIND, "tx", "RLP not in canonical form")
    if not isinstance(items, list):
        raise KindError(KIND, "tx", "must be an RLP list")
    if len(items) != len(_NAMES):
        raise KindError(
            KIND, "tx", f"{len(items)} fields; an unsigned type-2 transaction has {len(_NAMES)}"
        )
    chain_id = _int(items[0], "chain_id", U64)
    if chain_id == 0:
        raise KindError(KIND, "tx.chain_id", "must not be 0")
    nonce = _int(items[1], "nonce", U64 - 1)  # EIP-2681
    tip = _int(items[2], "max_priority_fee_per_gas", U256)
    max_fee = _int(items[3], "max_fee_per_gas", U256)
    if tip > max_fee:
        raise KindError(KIND, "tx.max_priority_fee_per_gas", "exceeds max_fee_per_gas")
    gas = _int(items[4], "gas_limit", U64)
    to = _address(items[5], "tx.to")
    value = _int(items[6], "value", U256)
    data = items[7]
    if not isinstance(data, bytes):
        raise KindError(KIND, "tx.data", "must be an RLP string, not a list")
    access = _access_list(items[8])
    return EvmTx(
        kind=KIND,
        messages=(keccak(raw),),
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=tip,
        max_fee_per_gas=max_fee,
        gas_limit=gas,
        to=to,
        value=value,
        data=data,
        access_list=access,
        erc20=_erc20(to, data),
        digest=keccak(raw),
        unsigned=raw,
    )


def assemble(
    intent: EvmTx, r: int, s: int, y_parity: int, *, public_key: bytes | None = None
) -> str:
    """The signed transaction ``0x02 || rlp(fields + [y_parity, r, s])`` as ``0x`` hex.

    ``s`` must be low (EIP-2). With ``public_key`` (33-byte compressed) the signature must
    recover to it, so a wrong signature is never broadcast.
    """
    for name, v in (("r", r), ("s", s)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < SECP256K1_N:
            raise KindError(KIND, f"signature.{name}", "must be an integer in [1, n-1]")
    if s > SECP256K1_N // 2:
        raise KindError(KIND, "signature.s", "high s (EIP-2)")
    if y_parity not in (0, 1) or isinstance(y_parity, bool):
        raise KindError(KIND, "signature.y_parity", "must be 0 or 1")
    if public_key is not None:
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([y_parity])
        try:
            got = coincurve.PublicKey.from_signature_and_message(sig, intent.digest, hasher=None)
        except Exception:
            raise KindError(KIND, "signature", "does not recover to a public key") from None
        if got.format(compressed=True) != public_key:
            raise KindError(KIND, "signature", "recovers to another key")
    fields = rlp.decode(intent.unsigned[1:])
    signed = bytes([TX_TYPE]) + bytes(rlp.encode([*fields, y_parity, r, s]))
    return "0x" + signed.hex()


def result(
    intent: EvmTx, r: int, s: int, y_parity: int, *, public_key: bytes | None = None
) -> dict[str, Any]:
    """The sign request's result: ``{"signature": {"r", "s", "y_parity"}, "signed_tx"}``
    (``r``, ``s`` as 32-byte ``0x`` hex)."""
    signed = assemble(intent, r, s, y_parity, public_key=public_key)
    return {
        "signature": {
            "r": "0x" + r.to_bytes(32, "big").hex(),
            "s": "0x" + s.to_bytes(32, "big").hex(),
            "y_parity": y_parity,
        },
        "signed_tx": signed,
    }
