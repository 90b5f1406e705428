"""Shared steps of the key ceremonies on an existing key: proactive refresh and resharing.

Both ceremonies (:mod:`mpc.refresh`, :mod:`mpc.reshare`) are rounds of Feldman verifiable
secret sharing (Feldman, "A practical scheme for non-interactive verifiable secret sharing",
FOCS 1987; RFC 9591 Appendix C.2 ``vss_commit``/``vss_verify``) run by several dealers at
once over a point-to-point transport. What they share lives here:

* :func:`echo_digest`: the digest of one dealer's broadcast commitment, bound to the
  protocol, group, context, session and dealer, exchanged so that a dealer who sends
  different commitments to different parties (equivocation) is caught before any share is
  used (the echo check of :mod:`mpc.dkg`, generalised to "dealers" and "reporters");
* :func:`check_echo`: the comparison itself, with the blame rules of :mod:`mpc.dkg`;
* :func:`blame_shares`: per-dealer ``vss_verify`` after a failed aggregate check;
* :func:`check_key_package`: a holder's key package is self-consistent before it deals.

Private to :mod:`mpc`: the sessions are the public surface.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from mpc import _ed25519_vartime as _edv
from mpc.dkg import EquivocationError
from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Ed25519Point, Group, Point
from mpc.shamir import KeyPackage, PublicKeyPackage, commitment_evaluate, vss_verify

ECHO_LEN = 32
_ED_IDENTITY = bytes([1]) + bytes(31)
MAX_CONTEXT_LEN = 1024


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def check_group(group: Group) -> None:
    if group is not ED25519 and group is not SECP256K1:
        raise UsageError(f"unsupported group {group!r}")


def check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT_LEN:
        raise UsageError(f"context must be bytes of at most {MAX_CONTEXT_LEN}")


def check_public_package(public: PublicKeyPackage) -> None:
    """The caller's public key package: supported group, no identity, a signer set of ``t``
    reconstructs the group key (Lagrange in the exponent, RFC 9591 section 4.2)."""
    if not isinstance(public, PublicKeyPackage):
        raise UsageError("expected a mpc.shamir.PublicKeyPackage")
    g = public.group
    check_group(g)
    if public.group_public_key.is_identity():
        raise UsageError("group public key is the identity")
    for i, y in public.verifying_shares.items():
        if y.is_identity():
            raise UsageError(f"verifying share of participant {i} is the identity", party=i)


def check_key_package(key: KeyPackage) -> None:
    """A dealer's own package: its share matches its verifying share (else it would deal junk)."""
    if not isinstance(key, KeyPackage):
        raise UsageError("expected a mpc.shamir.KeyPackage")
    check_public_package(key.public)
    if key.identifier not in key.public.verifying_shares:
        raise UsageError("key package's identifier has no verifying share", party=key.identifier)
    if key.group.base_mul(key.signing_share) != key.verifying_share:
        raise UsageError("signing share does not match its verifying share", party=key.identifier)


def params_digest(*parts: int | bytes | Sequence[int]) -> bytes:
    """Digest of a ceremony's parameters (group key, thresholds, party sets), bound into every
    echo digest: parties given different parameters abort at the echo check at the latest."""
    h = hashlib.sha256(b"TPWC-v1/ceremony-params")
    for p in parts:
        if isinstance(p, int):
            h.update(_lp(p.to_bytes(4, "big")))
        elif isinstance(p, bytes):
            h.update(_lp(p))
        else:
            h.update(_lp(b"".join(i.to_bytes(2, "big") for i in p)))
    return h.digest()


def echo_digest(
    protocol: str,
    group: Group,
    context: bytes,
    params: bytes,
    session_id: bytes,
    dealer: int,
    commitment: Sequence[Point],
) -> bytes:
    """Digest of one dealer's *validated* broadcast commitment, as exchanged by the echo check.

    SHA-256 over length-prefixed fields: a domain string naming the protocol and group, the
    caller's context, the ceremony parameters (:func:`params_digest`), the session id, the
    dealer and every commitment point.
    """
    h = hashlib.sha256()
    for part in (
        b"TPWC-v1/" + protocol.encode() + b"/" + group.name.encode() + b"/echo",
        context,
        params,
        session_id,
        dealer.to_bytes(2, "big"),
        len(commitment).to_bytes(2, "big"),
        *(c.encode() for c in commitment),
    ):
        h.update(_lp(part))
    return h.digest()


def check_echo(
    me: int,
    dealers: Sequence[int],
    own: Mapping[int, bytes],
    echoes: Mapping[int, Sequence[bytes]],
) -> None:
    """Compare every reporter's per-dealer digests with ours (the echo check of :mod:`mpc.dkg`).

    ``echoes[j]`` is reporter ``j``'s list of digests, one per dealer in ``dealers`` order.
    A reporter that misreports its own broadcast or ours is certainly at fault
    (:class:`~mpc.errors.ProtocolError` naming it); any other disagreement means the dealer
    equivocated or the reporter lies, and an :class:`~mpc.dkg.EquivocationError` names both.
    """
    certain: set[int] = set()
    mismatches: list[tuple[int, int]] = []
    for j, echo in sorted(echoes.items()):
        for s, d in zip(dealers, echo, strict=True):
            if d == own[s]:
                continue
            if s in (j, me):
                certain.add(j)
            else:
                mismatches.append((s, j))
    if certain:
        raise ProtocolError(
            "echo check: misreported its own broadcast commitment or ours (equivocation, or "
            "the parties were given different ceremony parameters)",
            culprits=tuple(certain),
        )
    if mismatches:
        desc = ", ".join(f"party {s} as seen by party {j}" for s, j in sorted(mismatches))
        raise EquivocationError(
            f"echo check: broadcast commitments differ ({desc}): the dealer equivocated "
            "or the reporter misreports",
            mismatches=mismatches,
        )


def blame_shares(
    group: Group,
    me: int,
    shares: Mapping[int, int],
    commitments: Mapping[int, Sequence[Point]],
    what: str,
) -> None:
    """RFC 9591 Appendix C.2 ``vss_verify`` for each dealer; raises naming every bad dealer."""
    bad = []
    for s, sh in sorted(shares.items()):
        try:
            vss_verify(group, sh, me, commitments[s], sender=s)
        except ProtocolError:
            bad.append(s)
    if bad:
        raise ProtocolError(
            f"{what} for party {me} does not match the dealer's commitment",
            culprits=tuple(bad),
        )


def sum_commitments(
    group: Group, commitments: Sequence[Sequence[Point]], length: int
) -> list[Point]:
    """``V_k = sum_i C_ik``: the commitment to the summed polynomial (may hold the identity)."""
    return [group.sum([c[k] for c in commitments]) for k in range(length)]


def images(group: Group, v: Sequence[Point], xs: Sequence[int]) -> dict[int, Point]:
    """``sum_k x^k V_k`` for each ``x`` (RFC 9591 Appendix C.2, the right side of vss_verify).

    Public values only. For ed25519 this runs in :mod:`mpc._ed25519_vartime` (Horner's rule
    with small-integer multiplications, as the DKG's public package), which returns
    canonical encodings of sums of subgroup points; callers cross-check their own image
    against ``base_mul`` of their share. secp256k1: libsecp256k1 through the group.
    """
    if group is ED25519:
        enc = [_ED_IDENTITY if p.is_identity() else p.encode() for p in v]
        out = _edv.polynomial_images(enc, xs)
        return {x: group.identity if e == _ED_IDENTITY else Ed25519Point(e) for x, e in out.items()}
    return {x: commitment_evaluate(group, v, x) for x in xs}
