"""``Group.random_scalar``: 64 bytes reduced modulo the order, zero drawn again (mpc/groups.py).

The wide reduction (512 bits onto a ~253/256-bit order, bias below 2^-250, as RFC 9380
section 5 hash_to_field) is what makes nonces and polynomial coefficients uniform; it is
pinned here through the injectable byte source, for both groups.
"""

from __future__ import annotations

import pytest

from mpc.groups import ED25519, SECP256K1, Group


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_random_scalar_is_64_bytes_reduced_mod_the_order(group: Group) -> None:
    asked: list[int] = []
    block = bytes(range(1, 65))

    def rng(n: int) -> bytes:
        asked.append(n)
        return block[:n]

    assert group.random_scalar(rng) == int.from_bytes(block, "big") % group.order
    assert asked == [64]


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_random_scalar_draws_again_when_it_reduces_to_zero(group: Group) -> None:
    draws = [(group.order * 3).to_bytes(64, "big"), (7).to_bytes(64, "big")]
    asked: list[int] = []

    def rng(n: int) -> bytes:
        asked.append(n)
        return draws.pop(0)

    assert group.random_scalar(rng) == 7
    assert asked == [64, 64]
