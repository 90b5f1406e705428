"""mpc/shamir.py on its boundaries: identifiers, thresholds, Lagrange, VSS (issue 16).

Every limit is tested on both sides (the last accepted value and the first refused one),
and every formula against a direct computation of RFC 9591 section 4.2 and Appendix C
written out here (no shared code with the module).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.shamir import (
    MAX_PARTIES,
    KeyPackage,
    PublicKeyPackage,
    check_identifiers,
    check_threshold,
    commitment_evaluate,
    evaluate_polynomial,
    lagrange_coefficient,
    vss_commit,
    vss_verify,
)

GROUPS = [ED25519, SECP256K1]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_identifiers_in_range_unique_and_typed(group: Group) -> None:
    assert check_identifiers(group, [3, 1, 65535]) == (3, 1, 65535)  # order kept
    assert check_identifiers(group, iter([1])) == (1,)
    for bad, party in ((0, 0), (-1, -1), (65536, 65536), (True, None), ("1", None), (1.0, None)):
        with pytest.raises(UsageError, match="zero, negative or out of range") as exc:
            check_identifiers(group, [2, bad])  # type: ignore[list-item]
        assert exc.value.party == party
    with pytest.raises(UsageError, match="participant identifier 2 is duplicated") as dup:
        check_identifiers(group, [1, 2, 3, 2])
    assert dup.value.party == 2


def test_threshold_bounds() -> None:
    assert MAX_PARTIES == 255
    for t, n in ((2, 2), (2, 255), (255, 255), (3, 5)):
        check_threshold(t, n)
    refused: list[tuple[Any, Any]] = [
        (1, 3), (0, 0), (4, 3), (2, 256), (256, 256), (True, 3), (2, 3.0), ("2", 3),
    ]  # fmt: skip
    for bad_t, bad_n in refused:
        with pytest.raises(UsageError, match="invalid threshold"):
            check_threshold(bad_t, bad_n)


def _lagrange_by_hand(q: int, i: int, ids: list[int], at: int) -> int:
    num = den = 1
    for j in ids:
        if j != i:
            num, den = num * (at - j), den * (i - j)
    return num * pow(den, -1, q) % q


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_lagrange_coefficients_match_the_rfc_formula_and_interpolate(group: Group) -> None:
    q = group.order
    ids = [1, 3, 4, 7]
    for at in (0, 5, 9):
        for i in ids:
            assert lagrange_coefficient(group, i, ids, at=at) == _lagrange_by_hand(q, i, ids, at)
    assert lagrange_coefficient(group, 1, [1, 2, 3]) == 3  # (0-2)(0-3) / ((1-2)(1-3))
    assert lagrange_coefficient(group, 2, [1, 2, 3]) == q - 3
    # a random degree-3 polynomial is recovered at another point from 4 of its values
    coeffs = [group.random_scalar() for _ in range(4)]
    f = {x: evaluate_polynomial(group, coeffs, x) for x in (*ids, 5)}
    assert sum(lagrange_coefficient(group, i, ids, at=5) * f[i] for i in ids) % q == f[5]
    with pytest.raises(UsageError, match="identifier 2 is not in the signer set") as exc:
        lagrange_coefficient(group, 2, ids)
    assert exc.value.party == 2
    with pytest.raises(UsageError, match="duplicate identifiers"):
        lagrange_coefficient(group, 1, [1, 3, 3])


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_polynomial_and_commitment_evaluation_match_a_direct_sum(group: Group) -> None:
    q = group.order
    coeffs = [group.random_scalar() for _ in range(3)]
    for x in (1, 2, 7, 65535):
        direct = sum(c * pow(x, k, q) for k, c in enumerate(coeffs)) % q
        assert evaluate_polynomial(group, coeffs, x) == direct
        commitment = vss_commit(group, coeffs)
        assert commitment == [group.base_mul(c) for c in coeffs]
        assert commitment_evaluate(group, commitment, x) == group.base_mul(direct)
    assert evaluate_polynomial(group, [], 3) == 0
    assert evaluate_polynomial(group, [5], 3) == 5


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_vss_verify_accepts_the_share_and_blames_the_sender_of_another(group: Group) -> None:
    coeffs = [group.random_scalar() for _ in range(2)]
    commitment = vss_commit(group, coeffs)
    share = evaluate_polynomial(group, coeffs, 4)
    vss_verify(group, share, 4, commitment, sender=9)
    for bad_share, at in ((share + 1, 4), (share, 3)):
        with pytest.raises(ProtocolError, match="does not match the sender's commitment") as e:
            vss_verify(group, bad_share % group.order, at, commitment, sender=9)
        assert e.value.culprits == (9,)


def test_key_package_hides_its_share_and_is_frozen() -> None:
    g = ED25519
    share = g.random_scalar()
    public = PublicKeyPackage(g, 2, g.base_mul(7), {2: g.base_mul(share), 1: g.base_mul(3)})
    key = KeyPackage(2, share, public)
    assert str(share) not in repr(key) and hex(share) not in repr(key)
    assert key.verifying_share == g.base_mul(share)
    assert key.group is g and key.min_signers == 2 and key.group_public_key == g.base_mul(7)
    assert public.participants == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.signing_share = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        public.min_signers = 1  # type: ignore[misc]
