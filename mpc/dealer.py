"""DANGER: dealer split of an EXISTING whole private key (key import / migration only).

This module is the one place in :mod:`mpc` where a whole private key is accepted as input.
It exists for two reasons:

* migrating a key that already exists (a legacy hot wallet, a key restored in a
  quorum-approved export ceremony) into threshold shares, after which the caller must
  destroy its copy of the key;
* tests against the RFC 9591 vectors, which fix a group secret and polynomial.

New keys never come from here: they come from the distributed key generation
(:mod:`mpc.dkg`), where no party ever holds the secret. The dealer necessarily sees every
share; whoever runs it must be trusted and should run it on an air-gapped machine.

Implements RFC 9591 Appendix C (``trusted_dealer_keygen``, ``secret_share_shard``,
``vss_commit``) and returns :class:`~mpc.shamir.KeyPackage` objects with the full public
package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mpc.errors import UsageError
from mpc.groups import Group, Point
from mpc.shamir import (
    KeyPackage,
    PublicKeyPackage,
    check_identifiers,
    check_threshold,
    commitment_evaluate,
    evaluate_polynomial,
    vss_commit,
)

__all__ = ["split_existing_key", "trusted_dealer_keygen", "secret_share_shard"]


def secret_share_shard(
    group: Group, secret: int, coefficients: Sequence[int], participants: Sequence[int]
) -> list[tuple[int, int]]:
    """RFC 9591 Appendix C.1 ``secret_share_shard``, for arbitrary identifiers.

    The polynomial is ``f(x) = secret + coefficients[0] x + ...``; participant ``i`` gets
    ``(i, f(i))``. A zero share (probability ``n/q`` for random coefficients) is refused,
    because its verifying share would be the identity, which has no encoding.
    """
    ids = check_identifiers(group, participants)
    poly = [secret % group.order, *coefficients]
    shares = [(i, evaluate_polynomial(group, poly, i)) for i in ids]
    if any(s == 0 for _, s in shares):
        raise UsageError("a share is zero; choose other coefficients")
    return shares


def trusted_dealer_keygen(
    group: Group,
    secret_key: int,
    max_participants: int,
    min_participants: int,
    *,
    coefficients: Sequence[int] | None = None,
) -> tuple[list[tuple[int, int]], Point, list[Point]]:
    """RFC 9591 Appendix C.1 ``trusted_dealer_keygen(secret_key, MAX, MIN)``.

    Returns ``(participant_private_keys, group_public_key, vss_commitment)`` for identifiers
    ``1..max_participants``, exactly as the RFC. ``coefficients`` (the ``MIN-1`` non-constant
    coefficients) may be given to reproduce the RFC test vectors; by default they are
    random (RFC 9591 section 4.1 RandomScalar).
    """
    check_threshold(min_participants, max_participants)
    if type(secret_key) is not int or not (0 < secret_key < group.order):
        raise UsageError("secret key must be a scalar in [1, order-1]")
    if coefficients is None:
        coefficients = [group.random_scalar() for _ in range(min_participants - 1)]
    if len(coefficients) != min_participants - 1 or any(
        type(c) is not int or not (0 <= c < group.order) for c in coefficients
    ):
        raise UsageError(f"need {min_participants - 1} coefficients, each a scalar")
    ids = list(range(1, max_participants + 1))
    shares = secret_share_shard(group, secret_key, coefficients, ids)
    commitment = vss_commit(group, [secret_key, *coefficients])
    return shares, commitment[0], commitment


def split_existing_key(
    group: Group,
    secret: int,
    threshold: int,
    participants: Sequence[int],
    *,
    rng: Callable[[], int] | None = None,
) -> list[KeyPackage]:
    """Split the WHOLE private key ``secret`` into ``threshold``-of-``len(participants)`` shares.

    THE ONLY FUNCTION THAT TAKES A WHOLE KEY. Use it for key import/migration and for tests
    only; the caller must destroy ``secret`` afterwards. New keys come from :mod:`mpc.dkg`.

    ``rng`` returns the random non-zero polynomial coefficients (default: the OS CSPRNG via
    ``group.random_scalar``); pass a deterministic one only in tests. Follows RFC 9591
    Appendix C.1 for arbitrary identifiers; every returned package carries the full public
    package, with verifying shares ``s_i G`` that are checked against the VSS commitment
    (Appendix C.2) before anything is returned.
    """
    ids = check_identifiers(group, participants)
    check_threshold(threshold, len(ids))
    if type(secret) is not int or not (0 < secret < group.order):
        raise UsageError("secret key must be a scalar in [1, order-1]")
    draw = rng if rng is not None else group.random_scalar
    coefficients = [draw() % group.order for _ in range(threshold - 1)]
    if any(c == 0 for c in coefficients):
        raise UsageError("rng returned a zero coefficient")
    shares = secret_share_shard(group, secret, coefficients, ids)
    commitment = vss_commit(group, [secret, *coefficients])
    coefficients.clear()
    verifying = {i: group.base_mul(s) for i, s in shares}
    for i, y in verifying.items():  # RFC 9591 Appendix C.2 vss_verify, for every share
        if commitment_evaluate(group, commitment, i) != y:
            raise AssertionError("dealer: share does not match its commitment")  # a bug
    public = PublicKeyPackage(group, threshold, commitment[0], verifying)
    return [KeyPackage(identifier=i, signing_share=s, public=public) for i, s in shares]
