"""BIP-341 Taproot key-path tweak for threshold keys of the BIP-340 suite.

A Taproot output key is ``Q = P + t*G`` with ``P`` the even-Y internal key and
``t = int(hash_TapTweak(x(P) || merkle_root))`` (BIP-341, "Constructing and spending Taproot
outputs", ``taproot_tweak_pubkey``; an empty ``merkle_root`` is the key-path-only output of
BIP-86). ZcashFoundation ``frost-secp256k1-tr`` offers the same tweak for FROST keys.

For a Shamir-shared key the tweak is applied to every share: the Lagrange coefficients of
any signer set sum to one, so ``sum(lambda_i * (s_i + t)) = s + t``. If the group key ``PK``
has odd Y, the internal key is ``P = -PK`` and every share is negated first (negation is
linear, so it commutes with the sharing). The tweaked package is an ordinary key package of
the BIP-340 suite: its group key ``Q`` may itself have odd Y, which signing already handles
(:class:`mpc.frost.ciphersuite.Secp256k1Sha256Tr`). Nothing here ever forms the whole key.
"""

from __future__ import annotations

from typing import overload

from mpc.bip340 import tagged_hash
from mpc.errors import UsageError
from mpc.groups import SECP256K1, Point, Secp256k1Point
from mpc.shamir import KeyPackage, PublicKeyPackage

__all__ = ["tap_tweak_scalar", "taproot_tweak"]


def tap_tweak_scalar(internal_key: Point, merkle_root: bytes = b"") -> int:
    """BIP-341 ``taproot_tweak_pubkey``'s ``t = int(hash_TapTweak(x(P) || h))``, checked ``< n``."""
    if not isinstance(internal_key, Secp256k1Point):
        raise UsageError("a Taproot tweak needs a secp256k1 key")
    if not isinstance(merkle_root, bytes) or len(merkle_root) not in (0, 32):
        raise UsageError("merkle_root must be empty (key path only) or 32 bytes")
    t = int.from_bytes(tagged_hash("TapTweak", internal_key.x_only() + merkle_root), "big")
    if t >= SECP256K1.order:  # BIP-341: "if t >= SECP256K1_ORDER: raise ValueError"
        raise UsageError("Taproot tweak is not a valid scalar (probability ~2^-128)")
    return t


def _tweak_public(
    public: PublicKeyPackage, merkle_root: bytes
) -> tuple[PublicKeyPackage, int, bool]:
    if public.group is not SECP256K1:
        raise UsageError("a Taproot tweak needs a secp256k1 key package")
    pk = public.group_public_key
    assert isinstance(pk, Secp256k1Point)
    negate = not pk.has_even_y()
    internal = -pk if negate else pk
    t = tap_tweak_scalar(internal, merkle_root)
    tg = SECP256K1.base_mul(t)
    output = internal + tg
    if output.is_identity():  # BIP-341 fails here too; unreachable unless t = -s
        raise UsageError("Taproot output key is the point at infinity")
    shares = {i: (-y if negate else y) + tg for i, y in public.verifying_shares.items()}
    return PublicKeyPackage(SECP256K1, public.min_signers, output, shares), t, negate


@overload
def taproot_tweak(key: KeyPackage, merkle_root: bytes = b"") -> KeyPackage: ...
@overload
def taproot_tweak(key: PublicKeyPackage, merkle_root: bytes = b"") -> PublicKeyPackage: ...
def taproot_tweak(
    key: KeyPackage | PublicKeyPackage, merkle_root: bytes = b""
) -> KeyPackage | PublicKeyPackage:
    """The key package (secret or public) for the Taproot output key of ``key``'s group key.

    Sign with the result under the ``bip340`` suite; signatures verify as plain BIP-340 under
    ``x(Q)``, the key a P2TR output commits to.
    """
    if isinstance(key, KeyPackage):
        public, t, negate = _tweak_public(key.public, merkle_root)
        s = (-key.signing_share if negate else key.signing_share) + t
        return KeyPackage(key.identifier, s % SECP256K1.order, public)
    public, _, _ = _tweak_public(key, merkle_root)
    return public
