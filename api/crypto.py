"""The coordinator's only cryptography: public-key checks, FROST signing packages and
aggregation (mpc.frost), DKLs23 combining (mpc.dkls23), verification. No secrets here.

This is the single seam between the orchestration and :mod:`mpc`'s cryptography (the
session relay also drives the sans-IO router :mod:`mpc.relay`); every failure that a
party caused is raised as :class:`Blame` naming the culprits.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from custody.domain import spec
from custody.kinds import KindError
from custody.kinds.addresses import taproot_output_key
from custody.signing import derive_public, encode_public_key, request_path
from mpc import dkls23, frost
from mpc.errors import EncodingError, MpcError, ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group, Point, Secp256k1Point
from mpc.shamir import PublicKeyPackage, lagrange_coefficient


class Blame(Exception):
    """Input from ``culprits`` (party ids) was invalid."""

    def __init__(self, message: str, culprits: tuple[int, ...]) -> None:
        super().__init__(message)
        self.culprits = culprits


class Unattributable(Exception):
    """The result is wrong but the protocol cannot say whose input made it so: one or more
    of ``suspects`` (DKLs23 partials have no per-party check); nobody is blamed."""

    def __init__(self, message: str, suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.suspects = suspects


__all__ = [
    "Blame",
    "Unattributable",
    "check_public_key",
    "check_point",
    "frost_commitments",
    "frost_signing_package",
    "frost_aggregate",
    "ecdsa_combine",
    "verify_signature",
    "verify_psbt_signatures",
    "taproot_public",
    "verify_ed25519",
]


def _suite(scheme: str) -> frost.Ciphersuite:
    """The FROST ciphersuite of a FROST scheme (``custody.domain`` names it)."""
    name = spec(scheme).frost_suite
    if name is None:
        raise ValueError(f"{scheme} is not a FROST scheme")
    return frost.ciphersuite(name)


def _group(scheme: str) -> Group:
    return ED25519 if spec(scheme).curve == "ed25519" else SECP256K1


def public_key_package(
    scheme: str, public_key: str, verifying_shares: Mapping[str, str], t: int
) -> PublicKeyPackage:
    """Rebuild the public key package from a DKG result and check it is consistent.

    The group key *point* is interpolated in the exponent from the first ``t`` verifying
    shares (RFC 9591 section 4.2 Lagrange coefficients): ``PK = sum lambda_i * Y_i``. Its
    encoding must equal the reported public key (x-only for bip340, which is why the point
    is interpolated: its Y parity is needed to check shares). Raises ValueError.
    """
    g = _group(scheme)
    vs: dict[int, Point] = {}
    for party, hexpt in verifying_shares.items():
        pid = int(party)
        if pid <= 0 or pid > 65535:
            raise ValueError(f"bad party id {party!r}")
        try:
            vs[pid] = g.decode_point(bytes.fromhex(hexpt))
        except EncodingError as e:
            raise ValueError(f"verifying share of party {pid}: {e}") from None
    if len(vs) < t:
        raise ValueError("fewer verifying shares than the threshold")
    ids = sorted(vs)[:t]
    pk = g.sum([vs[i] * lagrange_coefficient(g, i, ids) for i in ids])
    if pk.is_identity():
        raise ValueError("group key is the identity")
    if spec(scheme).x_only_key:
        assert isinstance(pk, Secp256k1Point)
        enc = pk.x_only()
    else:
        enc = pk.encode()
    if enc.hex() != public_key.lower():
        raise ValueError("public key does not match the verifying shares")
    return PublicKeyPackage(g, t, pk, vs)


def check_public_key(
    scheme: str, public_key: str, verifying_shares: Mapping[str, str], t: int
) -> None:
    """Lengths and encodings of a DKG result; raises ValueError."""
    pk = bytes.fromhex(public_key)
    s = spec(scheme)
    if len(pk) != s.public_key_len:
        raise ValueError(f"public key must be {s.public_key_len} bytes")
    if s.is_frost:
        public_key_package(scheme, public_key, verifying_shares, t)
    else:
        SECP256K1.decode_point(pk)


def frost_commitments(scheme: str, party: int, hexc: str) -> frost.SigningCommitments:
    """RFC 9591 section 5.1 output of node ``party``, strictly decoded once, when it enters
    the pool (points on the curve, in the prime-order subgroup, not the identity; the
    identifier inside is ``party``). Raises :class:`Blame` naming the node."""
    try:
        return frost.SigningCommitments.from_bytes(
            bytes.fromhex(hexc), suite=_suite(scheme), party=party
        )
    except (MpcError, ValueError) as e:
        raise Blame(f"party {party}: bad commitments: {e}", (party,)) from None


def frost_signing_package(
    scheme: str,
    msg: bytes,
    commitments: Mapping[int, frost.SigningCommitments],
) -> frost.SigningPackage:
    """RFC 9591 section 5.2 (coordinator): the signing package over each signer's
    commitments, already decoded and checked by :func:`frost_commitments`. Its encoding
    carries them byte for byte as each node published them (canonical encodings)."""
    if any(c.suite is not _suite(scheme) or c.identifier != p for p, c in commitments.items()):
        raise Blame(
            "commitments of another suite or party",
            tuple(p for p, c in commitments.items() if c.identifier != p),
        )
    return frost.signing_package(commitments, msg)


def frost_aggregate(
    scheme: str,
    public_key: str,
    verifying_shares: Mapping[str, str],
    t: int,
    package: frost.SigningPackage,
    shares: Mapping[int, bytes],
    msg: bytes,
) -> bytes:
    """RFC 9591 section 5.3 aggregate with identifiable abort (5.4). The signature is
    verified before it is returned by :func:`mpc.frost.aggregate` itself, with the plain
    single-key verifier of the scheme (libsodium's Ed25519, :func:`mpc.bip340.verify`) under
    the group key, which :func:`public_key_package` checked equals ``public_key``; a
    second, identical verification here would only repeat it."""
    suite = _suite(scheme)
    public = _pkp_cached(scheme, public_key, tuple(sorted(verifying_shares.items())), t)
    if package.message != msg or package.suite is not suite:
        raise ValueError("signing package is not for this message and scheme")
    decoded = {}
    for party, raw in shares.items():
        try:
            decoded[party] = frost.SignatureShare.from_bytes(raw, suite=suite, party=party)
        except (MpcError, ValueError) as e:
            raise Blame(f"party {party}: bad signature share: {e}", (party,)) from None
    try:
        return frost.aggregate(package, decoded, public)
    except ProtocolError as e:
        raise Blame(str(e), e.culprits or tuple(decoded)) from None


@functools.lru_cache(maxsize=1024)
def _pkp_cached(
    scheme: str, public_key: str, vs: tuple[tuple[str, str], ...], t: int
) -> PublicKeyPackage:
    return public_key_package(scheme, public_key, dict(vs), t)


def check_point(hexpt: str) -> None:
    """A secp256k1 point encoding (e.g. a presignature's ``R``); raises ValueError."""
    try:
        SECP256K1.decode_point(bytes.fromhex(hexpt))
    except (EncodingError, ValueError) as e:
        raise ValueError(f"not a secp256k1 point: {e}") from None


def ecdsa_combine(
    public_key: str,
    presig_id: str,
    signers: tuple[int, ...],
    r_point: str,
    partials: Mapping[int, bytes],
    msg: bytes,
) -> tuple[bytes, int]:
    """DKLs23 Protocol 3.6 output step (:func:`mpc.dkls23.combine_signature`): low-s
    ``r||s`` and the recovery id, verified by libsecp256k1 before it is returned.

    ``R`` is the instance point every presign participant reported (NODE_API.md v1.2); a
    partial made for another ``R`` names its sender.
    """
    decoded = {}
    for party, raw in partials.items():
        try:
            decoded[party] = dkls23.PartialSignature.from_bytes(raw, sender=party)
        except (MpcError, ValueError) as e:
            raise Blame(f"party {party}: bad partial: {e}", (party,)) from None
    R = SECP256K1.decode_point(bytes.fromhex(r_point))
    public = dkls23.PresignaturePublic(bytes.fromhex(presig_id), b"", b"", tuple(signers), R)
    try:
        sig = dkls23.combine_signature(
            public, decoded.values(), msg, SECP256K1.decode_point(bytes.fromhex(public_key))
        )
    except ProtocolError as e:
        if not e.culprits:  # the combined signature does not verify: whose partial?
            raise Unattributable(str(e), tuple(sorted(decoded))) from None
        raise Blame(str(e), e.culprits) from None
    except UsageError as e:
        raise Blame(str(e), (e.party,) if e.party else tuple(decoded)) from None
    out = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
    return out, sig.recovery_id


def verify_signature(
    scheme: str, public_key: str, msg: bytes, signature: str, recovery_id: int | None
) -> bool:
    """Verify a stored signature again, as any wallet would: the scheme's plain verifier
    under the key's public key over the recomputed message (ECDSA: also the recovery id).
    Never raises on malformed input; it is simply not valid."""
    try:
        sig = bytes.fromhex(signature)
        pk = bytes.fromhex(public_key)
        if spec(scheme).is_frost:
            return bool(_suite(scheme).verify(msg, sig, pk))
        if len(sig) != 64 or recovery_id not in (0, 1, 2, 3):
            return False
        es = dkls23.EcdsaSignature(
            int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"), recovery_id
        )
        return dkls23.verify_signature(es, msg, SECP256K1.decode_point(pk))
    except (MpcError, ValueError, TypeError, OverflowError):
        return False


def taproot_public(
    scheme: str, public_key: str, verifying_shares: Mapping[str, str], t: int
) -> tuple[str, dict[str, str]]:
    """The BIP-86 output key ``x(Q)`` (hex) of a BIP-340 key and the verifying shares of
    the tweaked sharing (:func:`mpc.frost.taproot_tweak` of the public package: BIP-341
    ``taproot_tweak_pubkey`` with an empty merkle root, applied to every public share), so
    that :func:`frost_aggregate` aggregates and checks each node's share of a key-path
    signature under ``Q``. Public values only. Raises ValueError."""
    if scheme != "bip340":
        raise ValueError("only bip340 keys have a Taproot output key")
    try:
        tweaked = frost.taproot_tweak(
            _pkp_cached(scheme, public_key, tuple(sorted(verifying_shares.items())), t)
        )
    except UsageError as e:
        raise ValueError(str(e)) from None
    output = _suite(scheme).encode_public_key(tweaked.group_public_key)
    shares = {str(i): p.encode().hex() for i, p in sorted(tweaked.verifying_shares.items())}
    return output.hex(), shares


def verify_psbt_signatures(public_key: str, messages: bytes, signature: str) -> bool:
    """A stored ``btc-psbt`` signature (64 bytes per input) against the concatenated
    sighashes ``messages`` (32 bytes per input): each input's BIP-340 signature verifies
    under the BIP-86 output key of ``public_key`` (BIP-341 key path). Never raises."""
    try:
        sig = bytes.fromhex(signature)
        if not messages or len(messages) % 32 or len(sig) != 2 * len(messages):
            return False
        output = taproot_output_key(bytes.fromhex(public_key))
        suite = _suite("bip340")
        return all(
            suite.verify(messages[32 * i : 32 * i + 32], sig[64 * i : 64 * i + 64], output)
            for i in range(len(messages) // 32)
        )
    except (KindError, MpcError, ValueError, TypeError):
        return False


def verify_ed25519(public_key: str, message: bytes, signature: str) -> bool:
    """A node identity signature (e.g. over an audit checkpoint statement)."""
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(message, bytes.fromhex(signature))
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


def public_key_at(
    key_id: str,
    scheme: str,
    public_key: str,
    verifying_shares: Mapping[str, str],
    threshold: int,
    body: Mapping[str, Any],
) -> tuple[str, dict[str, str]]:
    """The public key and verifying shares (hex, as a DKG result gives them) a request
    ``body`` signs under: the root's, or the child's at its ``derivation_path``. Raises
    :class:`custody.signing.SignRequestError` for a bad path, ValueError for a bad key."""
    path = request_path(body)
    if not path:
        return public_key, dict(verifying_shares)
    child = derive_public(
        public_key_package(scheme, public_key, verifying_shares, threshold), key_id, path
    )
    shares = {str(i): p.encode().hex() for i, p in sorted(child.verifying_shares.items())}
    return encode_public_key(scheme, child.group_public_key).hex(), shares
