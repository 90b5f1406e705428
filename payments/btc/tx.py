"""Addresses to output scripts, and the identity and size of a network transaction.

* :func:`output_script`: an address to its scriptPubKey, refused unless embit parses it and
  encodes the script back to the same address on the rail's network (so a mainnet address
  on regtest, a bech32 checksum used for a bech32m program or the reverse, or a typo is
  refused, naming the field). Any type embit knows: P2PKH, P2SH, P2WPKH, P2WSH, P2TR.
* :func:`parse_tx`: a network transaction's txid, wtxid (BIP-141 "Transaction ID"), base
  size, total size, weight and vsize, refusing trailing bytes and anything that does not
  serialize back to the exact bytes given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.script import Script, address_to_scriptpubkey
from embit.transaction import Transaction

from custody.kinds.addresses import HRP, NETWORKS

__all__ = ["AddressError", "TxDecodeError", "ParsedTx", "output_script", "address_of", "parse_tx"]

EMBIT_NET: Final = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}


class AddressError(ValueError):
    """An address that is not a valid address on the network; ``field`` names where."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class TxDecodeError(ValueError):
    """Bytes that are not exactly one network transaction."""


def _check_network(network: str) -> None:
    if network not in NETWORKS:
        raise AddressError("network", f"must be one of {list(NETWORKS)}, not {network!r}")


def output_script(address: str, network: str, *, field: str = "address") -> bytes:
    """The scriptPubKey paying ``address`` on ``network``."""
    _check_network(network)
    if not isinstance(address, str) or not address or len(address) > 100:
        raise AddressError(field, "must be a non-empty address string")
    text = address
    hrp = HRP[network]
    # BIP-173: a bech32 string is all lower or all upper case; embit reads the lower one
    if text.lower().startswith(hrp + "1") and text in (text.lower(), text.upper()):
        text = text.lower()
    try:
        script = address_to_scriptpubkey(text)
        back = script.address(EMBIT_NETWORKS[EMBIT_NET[network]])
    except Exception:  # embit raises EmbitError, ValueError, ... for any malformed address
        raise AddressError(field, f"{address!r} is not a valid Bitcoin address") from None
    if back != text:
        raise AddressError(field, f"{address!r} is not an address on {network}")
    data: bytes = script.data
    return data


def address_of(script: bytes, network: str) -> str | None:
    """The address of ``script`` on ``network``, ``None`` for a script without one."""
    _check_network(network)
    try:
        address = Script(script).address(EMBIT_NETWORKS[EMBIT_NET[network]])
    except Exception:
        return None
    return str(address) if address else None


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


@dataclass(frozen=True)
class ParsedTx:
    tx: Transaction
    raw: bytes
    txid: str  # display (reversed) hex of sha256d(base serialization)
    wtxid: str  # display hex of sha256d(full serialization); = txid without witnesses
    base_size: int
    total_size: int

    @property
    def weight(self) -> int:
        """BIP-141: ``3 * base_size + total_size``."""
        return 3 * self.base_size + self.total_size

    @property
    def vsize(self) -> int:
        return -(-self.weight // 4)


def parse_tx(raw: bytes) -> ParsedTx:
    """Parse one network transaction (segwit or legacy serialization), exactly."""
    if not isinstance(raw, bytes) or len(raw) < 10:
        raise TxDecodeError("not a transaction: too short")
    try:
        tx = Transaction.parse(raw)
    except Exception as exc:  # embit's parse errors
        raise TxDecodeError(f"not a transaction: {str(exc)[:120]}") from None
    assert isinstance(tx, Transaction)
    if tx.serialize() != raw:
        raise TxDecodeError("trailing bytes or a non-canonical serialization")
    witnesses = [vin.witness for vin in tx.vin]
    for vin in tx.vin:
        vin.witness = type(vin.witness)([])
    base = tx.serialize()
    for vin, w in zip(tx.vin, witnesses, strict=True):
        vin.witness = w
    return ParsedTx(
        tx=tx,
        raw=raw,
        txid=sha256d(base)[::-1].hex(),
        wtxid=sha256d(raw)[::-1].hex(),
        base_size=len(base),
        total_size=len(raw),
    )
