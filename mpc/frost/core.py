"""FROST two-round threshold Schnorr signing, RFC 9591 sections 4 and 5, ciphersuite-generic.

Flow (coordinator-driven, RFC 9591 section 5):

1. each signer runs :func:`commit` (or :func:`preprocess` ahead of time) and publishes its
   :class:`~mpc.frost.types.SigningCommitments`;
2. the coordinator builds a :class:`~mpc.frost.types.SigningPackage` (message + sorted
   commitment list) and sends it to the chosen signers;
3. each signer runs :func:`sign` with its single-use nonces and returns a
   :class:`~mpc.frost.types.SignatureShare`;
4. the coordinator runs :func:`aggregate`, which verifies the signature against the group
   key before returning it and, if that fails, checks every share and names each bad signer.

Pure functions, no I/O. Values that depend only on the signing package and the group key
(binding factors, commitment shares, group commitment, challenge, Lagrange coefficients)
are computed once per package object (``SigningPackage._cache``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mpc.errors import ProtocolError, UsageError
from mpc.frost.ciphersuite import Ciphersuite
from mpc.frost.types import SignatureShare, SigningCommitments, SigningNonces, SigningPackage
from mpc.groups import Point
from mpc.shamir import KeyPackage, PublicKeyPackage, lagrange_coefficient

__all__ = [
    "commit",
    "preprocess",
    "sign",
    "aggregate",
    "verify_signature_share",
    "verify",
]

MAX_PREPROCESS = 10_000


# -- RFC 9591 section 4: helper functions -----------------------------------------------


def _nonce_generate(suite: Ciphersuite, secret: int, random_bytes: bytes | None = None) -> int:
    """RFC 9591 section 4.1 ``nonce_generate``: ``H3(random_bytes(32) || SerializeScalar(secret))``.

    ``random_bytes`` is drawn from the OS CSPRNG; pass it only to reproduce test vectors.
    """
    if random_bytes is None:
        random_bytes = secrets.token_bytes(32)
    elif not isinstance(random_bytes, bytes) or len(random_bytes) != 32:
        raise UsageError("nonce randomness must be 32 bytes")
    return suite.H3(random_bytes + suite.group.encode_scalar(secret))


def _encode_group_commitment_list(
    suite: Ciphersuite, commitment_list: Sequence[SigningCommitments]
) -> bytes:
    """RFC 9591 section 4.3: concatenated ``SerializeScalar(id) || enc(D_i) || enc(E_i)``."""
    enc = suite.group.encode_scalar
    return b"".join(
        enc(c.identifier) + c.hiding.encode() + c.binding.encode() for c in commitment_list
    )


def _compute_binding_factors(
    suite: Ciphersuite,
    group_public_key: Point,
    commitment_list: Sequence[SigningCommitments],
    msg: bytes,
) -> dict[int, int]:
    """RFC 9591 section 4.4 ``compute_binding_factors``: identifier -> binding factor.

    ``rho_input = SerializeElement(PK) || H4(msg) || H5(encode_group_commitment_list) ||
    SerializeScalar(identifier)``; ``binding_factor = H1(rho_input)``.
    """
    prefix = (
        group_public_key.encode()
        + suite.H4(msg)
        + suite.H5(_encode_group_commitment_list(suite, commitment_list))
    )
    enc = suite.group.encode_scalar
    return {c.identifier: suite.H1(prefix + enc(c.identifier)) for c in commitment_list}


def _commitment_shares(
    commitment_list: Sequence[SigningCommitments], binding_factors: Mapping[int, int]
) -> dict[int, Point]:
    """Each signer's ``D_i + rho_i * E_i`` (summed in 4.5, checked alone in 5.4)."""
    return {
        c.identifier: c.hiding + c.binding * binding_factors[c.identifier] for c in commitment_list
    }


def _compute_group_commitment(
    suite: Ciphersuite,
    commitment_list: Sequence[SigningCommitments],
    binding_factors: Mapping[int, int],
) -> Point:
    """RFC 9591 section 4.5 ``compute_group_commitment``: ``sum(D_i + rho_i * E_i)``."""
    return _sum(list(_commitment_shares(commitment_list, binding_factors).values()))


def _sum(points: list[Point]) -> Point:
    """Sum of a non-empty list (no wasted addition of the identity)."""
    acc = points[0]
    for p in points[1:]:
        acc = acc + p
    return acc


def _compute_challenge(
    suite: Ciphersuite, group_commitment: Point, group_public_key: Point, msg: bytes
) -> int:
    """RFC 9591 section 4.6 ``compute_challenge`` (BIP-340 variant: x-only, tagged hash)."""
    return suite.challenge(group_commitment, group_public_key, msg)


# -- per-package precomputation --------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """Everything about one (signing package, group key) pair that signers and aggregator share."""

    negate_key: bool  # BIP-340: group key had odd Y, so key and shares are negated
    group_public_key: Point  # the key as used (even Y for BIP-340)
    binding_factors: dict[int, int]
    commitment_shares: dict[int, Point]  # D_i + rho_i * E_i, before any R negation
    negate_r: bool  # BIP-340: R had odd Y, so nonces / commitment shares are negated
    group_commitment: Point  # R as used (even Y for BIP-340)
    challenge: int
    lambdas: dict[int, int]


def _prepare(package: SigningPackage, public: PublicKeyPackage) -> _Prepared:
    suite = package.suite
    if public.group is not suite.group:
        raise UsageError(f"key is on {public.group.name}, signing package is for {suite.name}")
    ids = package.identifiers
    for i in ids:  # checked on every call: cheap, and the cache is keyed by the group key only
        if i not in public.verifying_shares:
            raise UsageError(
                f"participant {i} in the signing package does not hold a share of this key", party=i
            )
    if len(ids) < public.min_signers:
        raise UsageError(
            f"signing package has {len(ids)} signers, the key needs {public.min_signers}"
        )
    pk = public.group_public_key
    key = pk.encode()
    cached = package._cache.get(key)
    if cached is not None:
        assert isinstance(cached, _Prepared)
        return cached
    negate_key = suite.needs_negation(pk)
    if negate_key:
        pk = -pk
    rho = _compute_binding_factors(suite, pk, package.commitments, package.message)  # 4.4
    shares = _commitment_shares(package.commitments, rho)
    r = _sum(list(shares.values()))  # 4.5
    if r.is_identity():
        raise ProtocolError("group commitment is the identity element (cannot tell who)")
    negate_r = suite.needs_negation(r)
    if negate_r:
        r = -r
    c = _compute_challenge(suite, r, pk, package.message)  # 4.6
    lambdas = {i: lagrange_coefficient(suite.group, i, ids) for i in ids}  # 4.2
    prep = _Prepared(negate_key, pk, rho, shares, negate_r, r, c, lambdas)
    package._cache[key] = prep
    return prep


# -- RFC 9591 section 5.1: round one ----------------------------------------------------


def commit(suite: Ciphersuite, key_package: KeyPackage) -> tuple[SigningNonces, SigningCommitments]:
    """RFC 9591 section 5.1 ``commit``: two fresh nonces (bound to the share) and commitments."""
    _check_key(suite, key_package)
    sk = key_package.signing_share
    d = _nonce_generate(suite, sk)
    e = _nonce_generate(suite, sk)
    nonces = SigningNonces.from_scalars(suite, key_package.identifier, d, e)
    return nonces, nonces.commitments


def preprocess(
    suite: Ciphersuite, key_package: KeyPackage, count: int
) -> list[tuple[SigningNonces, SigningCommitments]]:
    """RFC 9591 section 5.1 run ``count`` times ahead of signing, so online signing is one round.

    The caller stores the nonces sealed and publishes the commitments; each pair is single use.
    """
    if type(count) is not int or not 1 <= count <= MAX_PREPROCESS:
        raise UsageError(f"preprocess count must be in [1, {MAX_PREPROCESS}]")
    return [commit(suite, key_package) for _ in range(count)]


# -- RFC 9591 section 5.2: round two ----------------------------------------------------


def sign(package: SigningPackage, nonces: SigningNonces, key_package: KeyPackage) -> SignatureShare:
    """RFC 9591 section 5.2 ``sign``: ``z_i = d_i + e_i * rho_i + lambda_i * s_i * c``.

    Checks first (nothing is consumed if one fails): the suite and group match, this signer
    is in the package and the package's commitments for it are exactly those of ``nonces``,
    every identifier holds a share of the key, and there are at least ``min_signers``.
    Then the nonces are consumed (a second use raises NonceReuseError) and the share is
    computed. BIP-340 variant: the share is negated when the group key has odd Y, the
    nonces when the group commitment has odd Y.
    """
    suite = package.suite
    _check_key(suite, key_package)
    me = key_package.identifier
    if nonces.suite is not suite:
        raise UsageError(
            f"nonces are for {nonces.suite.name}, signing package for {suite.name}", party=me
        )
    if nonces.identifier != me:
        raise UsageError(f"nonces belong to participant {nonces.identifier}", party=me)
    if nonces.commitments != package.commitment_for(me):
        raise UsageError(
            "signing package carries commitments for this signer that do not match its nonces",
            party=me,
        )
    prep = _prepare(package, key_package.public)
    d, e = nonces.take()
    q = suite.group.order
    sk = -key_package.signing_share if prep.negate_key else key_package.signing_share
    if prep.negate_r:
        d, e = -d, -e
    z = (d + e * prep.binding_factors[me] + prep.lambdas[me] * sk * prep.challenge) % q
    return SignatureShare(suite, me, z)


# -- RFC 9591 section 5.3 and 5.4: aggregation and share verification -------------------


def _share_ok(
    prep: _Prepared, package: SigningPackage, share: SignatureShare, public: PublicKeyPackage
) -> bool:
    """RFC 9591 section 5.4: ``z_i * G == comm_share_i + PK_i * (c * lambda_i)``."""
    i = share.identifier
    g = package.suite.group
    comm_share = prep.commitment_shares[i]
    if prep.negate_r:
        comm_share = -comm_share
    pk_i = public.verifying_shares[i]
    if prep.negate_key:
        pk_i = -pk_i
    return g.base_mul(share.share) == comm_share + pk_i * (
        prep.challenge * prep.lambdas[i] % g.order
    )


def verify_signature_share(
    package: SigningPackage, share: SignatureShare, public: PublicKeyPackage
) -> None:
    """RFC 9591 section 5.4 ``verify_signature_share``; raises ProtocolError naming the signer."""
    i = share.identifier
    if share.suite is not package.suite:
        raise ProtocolError(f"signature share is for {share.suite.name}", culprits=(i,))
    if i not in package.identifiers:
        raise ProtocolError(
            f"participant {i} sent a share but is not in the signing package", culprits=(i,)
        )
    prep = _prepare(package, public)
    if not _share_ok(prep, package, share, public):
        raise ProtocolError("invalid signature share", culprits=(i,))


def _collect(
    package: SigningPackage, shares: Mapping[int, SignatureShare] | Iterable[SignatureShare]
) -> list[SignatureShare]:
    items = (
        list(shares.items()) if isinstance(shares, Mapping) else [(s.identifier, s) for s in shares]
    )
    by_id: dict[int, SignatureShare] = {}
    for k, s in items:
        if not isinstance(s, SignatureShare):
            raise UsageError(
                "shares must be SignatureShare objects", party=k if type(k) is int else None
            )
        if s.identifier != k:
            raise ProtocolError(
                f"share filed under {k} claims identifier {s.identifier}", culprits=(k,)
            )
        if s.suite is not package.suite:
            raise ProtocolError(f"signature share is for {s.suite.name}", culprits=(k,))
        if k in by_id:
            raise ProtocolError("two signature shares from one participant", culprits=(k,))
        by_id[k] = s
    ids = package.identifiers
    extra = sorted(set(by_id) - set(ids))
    if extra:
        raise ProtocolError(
            "signature shares from participants outside the signing package", culprits=tuple(extra)
        )
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ProtocolError("signature shares missing", culprits=tuple(missing))
    return [by_id[i] for i in ids]


def aggregate(
    package: SigningPackage,
    shares: Mapping[int, SignatureShare] | Iterable[SignatureShare],
    public: PublicKeyPackage,
    *,
    verify_shares: bool = False,
) -> bytes:
    """RFC 9591 section 5.3 ``aggregate`` with identifiable abort (section 5.4).

    ``z = sum(z_i)``, signature ``(R, z)`` in the suite's encoding. The signature is always
    verified against the group key before it is returned. If that check fails (or with
    ``verify_shares=True``, always) every share is verified on its own and a
    :class:`~mpc.errors.ProtocolError` names every signer whose share is invalid.
    """
    suite = package.suite
    ordered = _collect(package, shares)
    prep = _prepare(package, public)
    q = suite.group.order
    z = sum(s.share for s in ordered) % q
    signature = suite.encode_signature(prep.group_commitment, z)
    ok = suite._verify_own(
        package.message, signature, prep.group_commitment, z, prep.group_public_key
    )
    if ok and not verify_shares:
        return signature
    bad = tuple(s.identifier for s in ordered if not _share_ok(prep, package, s, public))
    if bad:
        raise ProtocolError("invalid signature shares", culprits=bad)
    if not ok:  # every share valid yet the sum is not: the key package is inconsistent
        raise ProtocolError("aggregate signature does not verify although every share does")
    return signature


def verify(
    suite: Ciphersuite, message: bytes, signature: bytes, group_public_key: bytes | Point
) -> bool:
    """Verify a FROST signature as a plain single-key signature (Ed25519, BIP-340, ...)."""
    return suite.verify(message, signature, group_public_key)


def _check_key(suite: Ciphersuite, key_package: KeyPackage) -> None:
    if not isinstance(key_package, KeyPackage):
        raise UsageError("expected a mpc.shamir.KeyPackage")
    if key_package.group is not suite.group:
        raise UsageError(
            f"key is on {key_package.group.name}, suite {suite.name} needs {suite.group.name}",
            party=key_package.identifier,
        )
