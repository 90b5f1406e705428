"""The addresses a key shows.

* :func:`ethereum_address`: the EIP-55 checksummed address of a secp256k1 key (the last 20
  bytes of ``keccak256`` of the uncompressed point's ``x || y``).
* :func:`bitcoin_p2tr_address`: the BIP-86 pay-to-taproot address of an x-only internal key:
  output key ``Q = P + int(hash_TapTweak(x(P)))*G`` (BIP-341, no script tree), witness
  version 1, BIP-350 bech32m with the network's human-readable part.
"""

from __future__ import annotations

from typing import Final

import coincurve
from embit import bech32
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.domain import NETWORKS, Network
from custody.kinds._common import KindError
from mpc.bip340 import tagged_hash

__all__ = [
    "Network",
    "NETWORKS",
    "HRP",
    "ethereum_address",
    "taproot_output_key",
    "p2tr_script",
    "bitcoin_p2tr_address",
]

HRP: Final[dict[str, str]] = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_KIND: Final = "address"


def ethereum_address(compressed_pubkey: bytes) -> str:
    """EIP-55 address of a 33-byte SEC1 compressed secp256k1 public key."""
    if not isinstance(compressed_pubkey, bytes) or len(compressed_pubkey) != 33:
        raise KindError(_KIND, "public_key", "must be 33 bytes (SEC1 compressed)")
    if compressed_pubkey[0] not in (2, 3):
        raise KindError(_KIND, "public_key", "must start with 02 or 03 (compressed)")
    try:
        point = coincurve.PublicKey(compressed_pubkey).format(compressed=False)
    except Exception:
        raise KindError(_KIND, "public_key", "not a point on secp256k1") from None
    return str(to_checksum_address(keccak(point[1:])[-20:]))


def taproot_output_key(xonly: bytes, merkle_root: bytes = b"") -> bytes:
    """x(Q) of BIP-341's ``taproot_tweak_pubkey(x(P), merkle_root)``; empty root = BIP-86."""
    if not isinstance(xonly, bytes) or len(xonly) != 32:
        raise KindError(_KIND, "public_key", "must be a 32-byte x-only key")
    t = int.from_bytes(tagged_hash("TapTweak", xonly + merkle_root), "big")
    if t >= SECP256K1_N:
        raise KindError(_KIND, "public_key", "tweak out of range (BIP-341)")
    try:
        internal = coincurve.PublicKey(b"\x02" + xonly)  # lift_x: the even-Y point
        output = internal.add(t.to_bytes(32, "big"))
    except Exception:
        raise KindError(_KIND, "public_key", "not the x coordinate of a secp256k1 point") from None
    return output.format(compressed=True)[1:]


def p2tr_script(output_key: bytes) -> bytes:
    """``OP_1 <32-byte output key>``, the scriptPubKey of a P2TR output."""
    return b"\x51\x20" + output_key


def _network(network: object) -> str:
    if network not in NETWORKS:
        raise KindError(_KIND, "network", f"must be one of {list(NETWORKS)}")
    assert isinstance(network, str)
    return network


def bitcoin_p2tr_address(xonly: bytes, network: str = "mainnet") -> str:
    """BIP-86 P2TR address (``bc1p…``, ``tb1p…``, ``bcrt1p…``) of an x-only internal key."""
    hrp = HRP[_network(network)]
    address = bech32.encode(hrp, 1, taproot_output_key(xonly))
    assert isinstance(address, str)
    return address


def segwit_address(script_pubkey: bytes, network: str) -> str | None:
    """The BIP-173/350 address of a segwit output script, ``None`` for any other script."""
    hrp = HRP[_network(network)]
    if (
        len(script_pubkey) < 4
        or len(script_pubkey) > 42
        or script_pubkey[1] != len(script_pubkey) - 2
    ):
        return None
    op = script_pubkey[0]
    if op == 0:
        version = 0
    elif 0x51 <= op <= 0x60:
        version = op - 0x50
    else:
        return None
    if version == 0 and len(script_pubkey) not in (22, 34):
        return None
    address = bech32.encode(hrp, version, script_pubkey[2:])
    return str(address) if address else None
