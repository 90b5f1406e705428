"""Shamir secret sharing over a prime-order group's scalar field, and key material types.

Implements RFC 9591 section 4.2 (``derive_interpolating_value``) and Appendix C
(polynomial evaluation, ``secret_share_shard``, ``vss_commit``, ``vss_verify``), with
identifiers checked strictly: non-zero, in range, no duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mpc.errors import ProtocolError, UsageError
from mpc.groups import Group, Point

MAX_PARTIES = 255


def check_identifiers(group: Group, ids: Iterable[int]) -> tuple[int, ...]:
    """Validate participant identifiers: integers in [1, min(order-1, 65535)], no duplicates."""
    out = tuple(ids)
    seen: set[int] = set()
    for i in out:
        if type(i) is not int or i <= 0 or i >= group.order or i > 65535:
            raise UsageError(
                f"participant identifier {i!r} is zero, negative or out of range",
                party=i if type(i) is int else None,
            )
        if i in seen:
            raise UsageError(f"participant identifier {i} is duplicated", party=i)
        seen.add(i)
    return out


def check_threshold(t: int, n: int) -> None:
    """2 <= t <= n <= MAX_PARTIES."""
    if type(t) is not int or type(n) is not int or not (2 <= t <= n <= MAX_PARTIES):
        raise UsageError(
            f"invalid threshold t={t!r} of n={n!r} (need 2 <= t <= n <= {MAX_PARTIES})"
        )


def lagrange_coefficient(group: Group, x_i: int, ids: Sequence[int], *, at: int = 0) -> int:
    """RFC 9591 section 4.2, ``derive_interpolating_value(L, x_i)``, evaluated at ``at``.

    The RFC evaluates at 0 (the secret); ``at`` lets callers interpolate other points of the
    polynomial, e.g. a verifying share from t others, in the exponent.
    """
    if x_i not in ids:
        raise UsageError(f"identifier {x_i} is not in the signer set", party=x_i)
    if len(set(ids)) != len(ids):
        raise UsageError("duplicate identifiers in the signer set")
    q = group.order
    num, den = 1, 1
    for x_j in ids:
        if x_j == x_i:
            continue
        num = num * (at - x_j) % q
        den = den * (x_i - x_j) % q
    return num * group.inv(den) % q


def evaluate_polynomial(group: Group, coeffs: Sequence[int], x: int) -> int:
    """RFC 9591 Appendix C.1 ``polynomial_evaluate`` (Horner's rule)."""
    q = group.order
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % q
    return acc


def vss_commit(group: Group, coeffs: Sequence[int]) -> list[Point]:
    """RFC 9591 Appendix C.2 ``vss_commit``: ``[a_k * G for a_k in coeffs]``."""
    return [group.base_mul(a) for a in coeffs]


def commitment_evaluate(group: Group, commitment: Sequence[Point], x: int) -> Point:
    """``sum_k x^k * C_k``: public image of the share at ``x`` (Appendix C.2, ``vss_verify``)."""
    acc = group.identity
    xk = 1
    q = group.order
    for c in commitment:
        acc = acc + c * xk
        xk = xk * x % q
    return acc


def vss_verify(
    group: Group, share_i: int, x_i: int, commitment: Sequence[Point], *, sender: int
) -> None:
    """RFC 9591 Appendix C.2 ``vss_verify``; a failing share blames its sender."""
    if group.base_mul(share_i) != commitment_evaluate(group, commitment, x_i):
        raise ProtocolError(
            f"share for participant {x_i} does not match the sender's commitment",
            culprits=(sender,),
        )


@dataclass(frozen=True)
class PublicKeyPackage:
    """Public material of one threshold key: group key and each participant's verifying share."""

    group: Group
    min_signers: int
    group_public_key: Point
    verifying_shares: Mapping[int, Point]

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted(self.verifying_shares))


@dataclass(frozen=True)
class KeyPackage:
    """One participant's share of a threshold key. The secret never appears in ``repr``."""

    identifier: int
    signing_share: int = field(repr=False)
    public: PublicKeyPackage

    @property
    def group(self) -> Group:
        return self.public.group

    @property
    def verifying_share(self) -> Point:
        return self.public.verifying_shares[self.identifier]

    @property
    def group_public_key(self) -> Point:
        return self.public.group_public_key

    @property
    def min_signers(self) -> int:
        return self.public.min_signers
