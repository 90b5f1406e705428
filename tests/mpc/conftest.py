"""Shared fixtures for the mpc tests: third-party vectors and a test-only share dealer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mpc.groups import Group
from mpc.shamir import KeyPackage, PublicKeyPackage, check_threshold

VECTORS = Path("/work/shared/vectors")


def load_json(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / rel).read_text())
    return data


def _lagrange_at(group: Group, x: int, i: int, ids: list[int]) -> int:
    """Lagrange basis polynomial for ``i`` over ``ids`` evaluated at ``x``."""
    q = group.order
    num, den = 1, 1
    for j in ids:
        if j != i:
            num = num * (x - j) % q
            den = den * (i - j) % q
    return num * group.inv(den) % q


def dealer_split_for_tests(group: Group, t: int, n: int) -> dict[int, KeyPackage]:
    """Test-only dealer: a random t-of-n sharing of a key that is never formed.

    The degree t-1 polynomial is fixed by t random shares (at 1..t); the other shares are
    interpolated from them, and the group key ``f(0)*G`` is interpolated in the exponent,
    so the secret ``f(0)`` itself never exists, not even here. (Production dealer import
    is ``mpc.dealer``; keys from a DKG come from ``mpc.dkg``.)
    """
    check_threshold(t, n)
    base = list(range(1, t + 1))
    shares = {i: group.random_scalar() for i in base}
    for j in range(t + 1, n + 1):
        shares[j] = sum(_lagrange_at(group, j, i, base) * shares[i] for i in base) % group.order
    verifying = {i: group.base_mul(s) for i, s in shares.items()}
    pk = group.sum([verifying[i] * _lagrange_at(group, 0, i, base) for i in base])
    public = PublicKeyPackage(group, t, pk, verifying)
    return {i: KeyPackage(i, s, public) for i, s in shares.items()}


@pytest.fixture
def dealer() -> Any:
    return dealer_split_for_tests
