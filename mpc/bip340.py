"""BIP-340 Schnorr signature verification over secp256k1, and BIP-340 tagged hashes.

Used by the FROST BIP-340/Taproot ciphersuite (:mod:`mpc.frost`) to check every aggregated
signature before release. The verification algorithm is written out step by step from
BIP-340 section "Verification" on top of :mod:`mpc.groups` (whose arithmetic is
libsecp256k1's): this keeps each rejection rule visible and gives the tests a verifier
that is independent of libsecp256k1's own ``schnorrsig`` module (coincurve), against
which every FROST signature is also checked. Signing with a single secret key is
deliberately absent (no whole keys in this code base).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Final

from mpc.errors import EncodingError
from mpc.groups import SECP256K1, Secp256k1Point

__all__ = ["tagged_hash", "verify"]

_P: Final = SECP256K1.field_prime
_N: Final = SECP256K1.order


@lru_cache(maxsize=16)
def _tag_prefix(tag: str) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return t + t


def tagged_hash(tag: str, msg: bytes) -> bytes:
    """BIP-340 "Design" section: ``hash_tag(x) = SHA256(SHA256(tag) || SHA256(tag) || x)``."""
    return hashlib.sha256(_tag_prefix(tag) + msg).digest()


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """BIP-340 ``Verify(pk, m, sig)`` for a 32-byte x-only key and a message of any length.

    Steps of BIP-340 section "Verification":

    1. ``P = lift_x(int(pk))``; fail if that fails (x >= p or not on the curve);
    2. ``r = int(sig[0:32])``; fail if ``r >= p``;
    3. ``s = int(sig[32:64])``; fail if ``s >= n``;
    4. ``e = int(hash_BIP0340/challenge(bytes(r) || bytes(P) || m)) mod n``;
    5. ``R = s*G - e*P``;
    6. fail if ``is_infinite(R)``, ``not has_even_y(R)`` or ``x(R) != r``.
    """
    if not all(isinstance(v, bytes | bytearray) for v in (public_key, message, signature)):
        return False
    if len(public_key) != 32 or len(signature) != 64:
        return False
    pk, msg, sig = bytes(public_key), bytes(message), bytes(signature)
    try:
        p = SECP256K1.lift_x(pk)  # step 1
    except EncodingError:
        return False
    if int.from_bytes(sig[:32], "big") >= _P:  # step 2
        return False
    s = int.from_bytes(sig[32:], "big")
    if s >= _N:  # step 3
        return False
    e = int.from_bytes(tagged_hash("BIP0340/challenge", sig[:32] + pk + msg), "big") % _N  # step 4
    r = SECP256K1.base_mul(s) - p * e  # step 5
    if r.is_identity():  # step 6
        return False
    assert isinstance(r, Secp256k1Point)
    return r.has_even_y() and r.x_only() == sig[:32]
