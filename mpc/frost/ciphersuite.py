"""FROST ciphersuites (RFC 9591 section 6): thin per-curve objects over one generic core.

A :class:`Ciphersuite` bundles a prime-order group from :mod:`mpc.groups` with the hash
functions H1..H5 of RFC 9591 section 6, the challenge (section 4.6) and the signature
encoding. The signing core (:mod:`mpc.frost.core`) is written once against this interface,
in the style of ZcashFoundation/frost's ``Ciphersuite`` trait.

Three suites exist:

* ``ed25519``   -- FROST(Ed25519, SHA-512), RFC 9591 section 6.1;
* ``secp256k1`` -- FROST(secp256k1, SHA-256), RFC 9591 section 6.5 (65-byte ``R || z``);
* ``bip340``    -- FROST(secp256k1, SHA-256)-TR, the BIP-340/Taproot variant of
  ZcashFoundation ``frost-secp256k1-tr``: the group key is used with even Y (an odd key
  is negated, and the shares with it), the challenge is BIP-340's tagged hash over x-only
  coordinates, nonces are negated when the group commitment has odd Y, and signatures are
  the 64-byte BIP-340 form ``x(R) || z``.
"""

from __future__ import annotations

import hashlib
from typing import Final

from nacl import bindings as sodium

from mpc import bip340
from mpc.errors import EncodingError, UsageError
from mpc.groups import ED25519, SECP256K1, Group, Point, Secp256k1Point

__all__ = [
    "Ciphersuite",
    "Ed25519Sha512",
    "Secp256k1Sha256",
    "Secp256k1Sha256Tr",
    "ED25519_SHA512",
    "SECP256K1_SHA256",
    "SECP256K1_TR",
    "ciphersuite",
    "expand_message_xmd",
]


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 section 5.3.1 ``expand_message_xmd`` with SHA-256.

    Written by hand: neither hashlib nor our curve libraries expose it, and it is a
    dozen lines (py-ecc has one, used only as a test reference).
    """
    b_in_bytes, s_in_bytes = 32, 64  # SHA-256 output and block size
    ell = -(-len_in_bytes // b_in_bytes)
    if ell > 255 or len_in_bytes > 65535 or len(dst) > 255:
        raise UsageError("expand_message_xmd: requested length or DST too long")
    dst_prime = dst + bytes([len(dst)])
    z_pad = bytes(s_in_bytes)
    l_i_b_str = len_in_bytes.to_bytes(2, "big")
    msg_prime = z_pad + msg + l_i_b_str + b"\x00" + dst_prime
    b_0 = hashlib.sha256(msg_prime).digest()
    b_i = hashlib.sha256(b_0 + b"\x01" + dst_prime).digest()
    out = [b_i]
    for i in range(2, ell + 1):
        b_i = hashlib.sha256(
            bytes(x ^ y for x, y in zip(b_0, b_i, strict=True)) + bytes([i]) + dst_prime
        ).digest()
        out.append(b_i)
    return b"".join(out)[:len_in_bytes]


class Ciphersuite:
    """One FROST ciphersuite: group, context string, H1..H5, challenge, signature codec.

    Subclasses override the hash functions and, for the BIP-340 variant, the hooks
    :meth:`needs_negation` and the signature/public-key encodings.
    """

    name: str
    context: bytes
    group: Group
    signature_len: int

    # -- hash functions (RFC 9591 section 6) -----------------------------------------
    def H1(self, m: bytes) -> int:  # noqa: N802 -- RFC names
        raise NotImplementedError

    def H2(self, m: bytes) -> int:  # noqa: N802
        raise NotImplementedError

    def H3(self, m: bytes) -> int:  # noqa: N802
        raise NotImplementedError

    def H4(self, m: bytes) -> bytes:  # noqa: N802
        raise NotImplementedError

    def H5(self, m: bytes) -> bytes:  # noqa: N802
        raise NotImplementedError

    # -- challenge (RFC 9591 section 4.6) -------------------------------------------
    def challenge(self, group_commitment: Point, group_public_key: Point, msg: bytes) -> int:
        """RFC 9591 section 4.6 ``compute_challenge``: ``H2(enc(R) || enc(PK) || msg)``."""
        return self.H2(group_commitment.encode() + group_public_key.encode() + msg)

    # -- BIP-340 hooks (no-ops for the RFC suites) ----------------------------------
    def needs_negation(self, point: Point) -> bool:
        """Whether ``point`` (group key or group commitment) must be negated before use.

        RFC suites: never. BIP-340 variant: when its Y coordinate is odd.
        """
        return False

    # -- encodings --------------------------------------------------------------------
    def encode_signature(self, group_commitment: Point, z: int) -> bytes:
        """RFC 9591 section 6 ``SerializeElement(R) || SerializeScalar(z)``."""
        return group_commitment.encode() + self.group.encode_scalar(z)

    def decode_signature(self, data: bytes) -> tuple[Point, int]:
        """Strictly decode a signature into ``(R, z)``; raises EncodingError."""
        g = self.group
        if not isinstance(data, bytes | bytearray) or len(data) != self.signature_len:
            raise EncodingError(f"{self.name} signature must be {self.signature_len} bytes")
        data = bytes(data)
        r = g.decode_point(data[: g.element_len])
        z = g.decode_scalar(data[g.element_len :], allow_zero=True)
        return r, z

    def encode_public_key(self, group_public_key: Point) -> bytes:
        """The group key as a verifier of this suite's signatures expects it."""
        return group_public_key.encode()

    def decode_public_key(self, data: bytes | Point) -> Point:
        """Strictly decode a group public key (or check a Point belongs to the group)."""
        if isinstance(data, Point):
            if not isinstance(data, type(self.group.generator)) or data.is_identity():
                raise EncodingError(
                    f"{self.name}: public key is not a non-identity {self.group.name} element"
                )
            return data
        return self.group.decode_point(data)

    # -- verification (RFC 9591 section 6, single-key Schnorr verification) ---------
    def verify(self, msg: bytes, signature: bytes, group_public_key: bytes | Point) -> bool:
        """Verify a signature under the group key: ``z*G == R + c*PK`` (prime-order group)."""
        try:
            pk = self.decode_public_key(group_public_key)
            r, z = self.decode_signature(signature)
        except EncodingError:
            return False
        c = self.challenge(r, pk, bytes(msg))
        return self.group.base_mul(z) == r + pk * c

    def _verify_own(
        self, msg: bytes, signature: bytes, group_commitment: Point, z: int, pk: Point
    ) -> bool:
        """Verify a signature whose ``R`` and ``z`` this process computed (no re-decoding)."""
        c = self.challenge(group_commitment, pk, msg)
        return self.group.base_mul(z) == group_commitment + pk * c

    def __repr__(self) -> str:
        return f"<FROST ciphersuite {self.name} ({self.context.decode()})>"


# ---------------------------------------------------------------------------------------
# FROST(Ed25519, SHA-512): RFC 9591 section 6.1
# ---------------------------------------------------------------------------------------


class Ed25519Sha512(Ciphersuite):
    """RFC 9591 section 6.1: FROST(Ed25519, SHA-512); output verifies as RFC 8032 Ed25519."""

    name = "ed25519"
    context = b"FROST-ED25519-SHA512-v1"
    group = ED25519
    signature_len = 64

    def _h(self, tag: bytes, m: bytes) -> int:
        return (
            int.from_bytes(hashlib.sha512(self.context + tag + m).digest(), "little")
            % ED25519.order
        )

    def H1(self, m: bytes) -> int:  # noqa: N802
        """Section 6.1: ``SHA-512(contextString || "rho" || m)`` mod L, little-endian."""
        return self._h(b"rho", m)

    def H2(self, m: bytes) -> int:  # noqa: N802
        """Section 6.1: ``SHA-512(m)`` mod L -- no context string, as in RFC 8032."""
        return int.from_bytes(hashlib.sha512(m).digest(), "little") % ED25519.order

    def H3(self, m: bytes) -> int:  # noqa: N802
        """Section 6.1: ``SHA-512(contextString || "nonce" || m)`` mod L."""
        return self._h(b"nonce", m)

    def H4(self, m: bytes) -> bytes:  # noqa: N802
        """Section 6.1: ``SHA-512(contextString || "msg" || m)``."""
        return hashlib.sha512(self.context + b"msg" + m).digest()

    def H5(self, m: bytes) -> bytes:  # noqa: N802
        """Section 6.1: ``SHA-512(contextString || "com" || m)``."""
        return hashlib.sha512(self.context + b"com" + m).digest()

    def verify(self, msg: bytes, signature: bytes, group_public_key: bytes | Point) -> bool:
        """RFC 9591 section 6.1 verification via libsodium's Ed25519 verifier.

        With the key decoded strictly into the prime-order subgroup, libsodium's check
        (canonical ``z < L``, ``R`` not of small order, ``enc(z*B - c*PK) == enc(R)``)
        accepts exactly the signatures RFC 9591 accepts: an ``R`` outside the subgroup can
        never equal ``z*B - c*PK``, and RFC 9591 DeserializeElement rejects it as well.
        """
        try:
            pk = self.decode_public_key(group_public_key)
        except EncodingError:
            return False
        if not isinstance(signature, bytes | bytearray) or len(signature) != 64:
            return False
        return _sodium_verify(bytes(msg), bytes(signature), pk.encode())

    def _verify_own(
        self, msg: bytes, signature: bytes, group_commitment: Point, z: int, pk: Point
    ) -> bool:
        return _sodium_verify(msg, signature, pk.encode())


def _sodium_verify(msg: bytes, signature: bytes, pk: bytes) -> bool:
    try:
        sodium.crypto_sign_open(signature + msg, pk)
    except Exception:  # nacl.exceptions.BadSignatureError, or ValueError on bad lengths
        return False
    return True


# ---------------------------------------------------------------------------------------
# FROST(secp256k1, SHA-256): RFC 9591 section 6.5
# ---------------------------------------------------------------------------------------

_HASH_TO_FIELD_L: Final = 48  # RFC 9591 6.5: L = 48 for hash_to_field over the secp256k1 order


class Secp256k1Sha256(Ciphersuite):
    """RFC 9591 section 6.5: FROST(secp256k1, SHA-256); signature ``R (33) || z (32)``."""

    name = "secp256k1"
    context = b"FROST-secp256k1-SHA256-v1"
    group = SECP256K1
    signature_len = 65

    def _hash_to_field(self, m: bytes, tag: bytes) -> int:
        """RFC 9380 section 5.2 ``hash_to_field`` (count 1, L = 48) with expand_message_xmd."""
        u = expand_message_xmd(m, self.context + tag, _HASH_TO_FIELD_L)
        return int.from_bytes(u, "big") % SECP256K1.order

    def H1(self, m: bytes) -> int:  # noqa: N802
        """Section 6.5: hash_to_field(m) with DST ``contextString || "rho"``."""
        return self._hash_to_field(m, b"rho")

    def H2(self, m: bytes) -> int:  # noqa: N802
        """Section 6.5: hash_to_field(m) with DST ``contextString || "chal"``."""
        return self._hash_to_field(m, b"chal")

    def H3(self, m: bytes) -> int:  # noqa: N802
        """Section 6.5: hash_to_field(m) with DST ``contextString || "nonce"``."""
        return self._hash_to_field(m, b"nonce")

    def H4(self, m: bytes) -> bytes:  # noqa: N802
        """Section 6.5: ``SHA-256(contextString || "msg" || m)``."""
        return hashlib.sha256(self.context + b"msg" + m).digest()

    def H5(self, m: bytes) -> bytes:  # noqa: N802
        """Section 6.5: ``SHA-256(contextString || "com" || m)``."""
        return hashlib.sha256(self.context + b"com" + m).digest()


class Secp256k1Sha256Tr(Secp256k1Sha256):
    """FROST(secp256k1, SHA-256)-TR: BIP-340 compatible, as ZcashFoundation ``frost-secp256k1-tr``.

    Differences from RFC 9591 section 6.5 (all confined to this class):

    * context string ``FROST-secp256k1-SHA256-TR-v1`` (so H1, H3, H4, H5 differ);
    * H2 is BIP-340's ``hash_BIP0340/challenge`` reduced mod n, and the challenge hashes
      only x coordinates: ``H2(x(R) || x(PK) || msg)`` (BIP-340 "Verification");
    * a group key with odd Y is negated before use, and every share with it (negation is
      linear, so it commutes with Shamir sharing);
    * a group commitment ``R`` with odd Y is negated: signers negate both nonces, and the
      share check negates the commitment share;
    * signatures are ``x(R) || z`` (64 bytes) and public keys are x-only (32 bytes).
    """

    name = "bip340"
    context = b"FROST-secp256k1-SHA256-TR-v1"
    signature_len = 64

    def H2(self, m: bytes) -> int:  # noqa: N802
        """BIP-340 ``int(hash_BIP0340/challenge(m)) mod n``."""
        return int.from_bytes(bip340.tagged_hash("BIP0340/challenge", m), "big") % SECP256K1.order

    def challenge(self, group_commitment: Point, group_public_key: Point, msg: bytes) -> int:
        """BIP-340 challenge ``e = H2(x(R) || x(PK) || m)`` (replaces RFC 9591 section 4.6)."""
        return self.H2(_x_only(group_commitment) + _x_only(group_public_key) + msg)

    def needs_negation(self, point: Point) -> bool:
        """True when ``point`` has odd Y (BIP-340 keeps keys and nonces with even Y)."""
        assert isinstance(point, Secp256k1Point)
        return not point.has_even_y()

    def encode_signature(self, group_commitment: Point, z: int) -> bytes:
        """BIP-340 signature ``bytes(R) || bytes(z)`` with the 32-byte x-only ``R``."""
        return _x_only(group_commitment) + self.group.encode_scalar(z)

    def decode_signature(self, data: bytes) -> tuple[Point, int]:
        """Decode ``x(R) || z`` to the even-Y ``R`` and ``z`` (strict: x < p, on curve)."""
        if not isinstance(data, bytes | bytearray) or len(data) != 64:
            raise EncodingError("bip340 signature must be 64 bytes")
        data = bytes(data)
        return SECP256K1.lift_x(data[:32]), self.group.decode_scalar(data[32:], allow_zero=True)

    def encode_public_key(self, group_public_key: Point) -> bytes:
        """The 32-byte x-only key (BIP-340 "Public Key Generation")."""
        return _x_only(group_public_key)

    def decode_public_key(self, data: bytes | Point) -> Point:
        """Accept an x-only (32-byte) or compressed (33-byte) key, or a Point."""
        if isinstance(data, bytes | bytearray) and len(data) == 32:
            return SECP256K1.lift_x(bytes(data))
        return super().decode_public_key(data)

    def verify(self, msg: bytes, signature: bytes, group_public_key: bytes | Point) -> bool:
        """Plain BIP-340 verification (:func:`mpc.bip340.verify`) under the x-only key."""
        try:
            pk = self.decode_public_key(group_public_key)
        except EncodingError:
            return False
        return bip340.verify(_x_only(pk), bytes(msg), bytes(signature))

    def _verify_own(
        self, msg: bytes, signature: bytes, group_commitment: Point, z: int, pk: Point
    ) -> bool:
        return bip340.verify(_x_only(pk), msg, signature)


def _x_only(p: Point) -> bytes:
    assert isinstance(p, Secp256k1Point)
    return p.x_only()


ED25519_SHA512: Final = Ed25519Sha512()
SECP256K1_SHA256: Final = Secp256k1Sha256()
SECP256K1_TR: Final = Secp256k1Sha256Tr()

_SUITES: Final[dict[str, Ciphersuite]] = {
    s.name: s for s in (ED25519_SHA512, SECP256K1_SHA256, SECP256K1_TR)
}


_ALIASES: Final = {"secp256k1-tr": "bip340"}


def ciphersuite(name: str) -> Ciphersuite:
    """Look a suite up: ``"ed25519"``, ``"secp256k1"``, ``"bip340"`` (alias ``"secp256k1-tr"``)."""
    try:
        return _SUITES[_ALIASES.get(name, name)]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown FROST ciphersuite {name!r} (expected one of {sorted(_SUITES)})"
        ) from None
