"""The transcript-derived gadget of the DKLs23 multiplication (docs/decisions/dkls23-gadget.md).

The gadget ``g`` of each multiplication is derived from ``mul_ctx``, i.e. from the session
context, the direction and both parties' fresh contributions (mpc.dkls23.params.gadget),
and ``XI`` follows the stronger bound ``log q + 3s + 2 lambda_c`` (reported by Asharov,
ePrint 2026/976). These tests pin what that means: the sizes, that ``g`` changes with
every input of ``mul_ctx`` and that both sides use the same one (the product is right),
and that Bob refuses a second, different contribution of Alice (naming her).
"""

from __future__ import annotations

import secrets

import pytest

from mpc.dkls23 import EcdsaKeyShare
from mpc.dkls23.mul import MulAlice, MulBob, mul_context, pair_context
from mpc.dkls23.params import ETA, KAPPA, LAMBDA_C, XI, Q, S, gadget
from mpc.errors import ProtocolError, UsageError
from mpc.groups import SECP256K1
from mpc.testing import run_keygen_local

G = SECP256K1


@pytest.fixture(scope="module")
def keys() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(2, 3)


def test_sizes_follow_the_stronger_bound() -> None:
    assert Q.bit_length() == KAPPA == 256
    assert XI == 256 + 3 * S + 2 * LAMBDA_C == 896
    assert ETA == XI + S == 1024


def test_gadget_depends_on_every_part_of_mul_ctx() -> None:
    ctx, ra, rb = (secrets.token_bytes(32) for _ in range(3))
    base = gadget(mul_context(pair_context(ctx, 1, 2, ra, rb), 1, 2))
    assert len(base) == XI and all(0 <= v < Q for v in base)
    assert len(set(base)) == XI
    others = [
        gadget(mul_context(pair_context(ctx, 1, 2, ra, rb), 2, 1)),  # other direction
        gadget(mul_context(pair_context(ctx, 1, 2, secrets.token_bytes(32), rb), 1, 2)),
        gadget(mul_context(pair_context(ctx, 1, 2, ra, secrets.token_bytes(32)), 1, 2)),
        gadget(mul_context(pair_context(secrets.token_bytes(32), 1, 2, ra, rb), 1, 2)),
    ]
    for g in others:
        assert g != base and not set(g) & set(base)


def test_both_sides_use_the_same_gadget_and_chi_is_bound_late(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    ctx, rho_a, rho_b = (secrets.token_bytes(32) for _ in range(3))
    bob = MulBob(keys[1].bob[2], ctx, alice=2, bob=1, rho=rho_b)
    alice = MulAlice(keys[2].alice[1], ctx, alice=2, bob=1, rho=rho_a)
    with pytest.raises(UsageError):
        bob.bind(rho_a)  # before round 1 there is no x to bind
    ext = bob.round1()
    assert bob.chi == 0  # chi needs g, and g needs Alice's contribution
    chi = bob.bind(rho_a)
    assert chi == bob.bind(rho_a)  # idempotent for the same contribution
    a = (G.random_scalar(), G.random_scalar())
    reply, c = alice.round2(ext, a)
    d = bob.round3(reply, rho_alice=rho_a)
    assert all((c[i] + d[i]) % Q == chi * a[i] % Q for i in range(2))


def test_bob_refuses_a_second_different_contribution(keys: dict[int, EcdsaKeyShare]) -> None:
    """Attack: Alice's round-2 is computed under one rho_A, but Bob already bound chi (and
    sent psi) under another. Bob refuses, naming Alice, before using her round 2."""
    ctx, rho_a, rho_b = (secrets.token_bytes(32) for _ in range(3))
    bob = MulBob(keys[1].bob[2], ctx, alice=2, bob=1, rho=rho_b)
    ext = bob.round1()
    bob.bind(rho_a)
    other = secrets.token_bytes(32)
    alice = MulAlice(keys[2].alice[1], ctx, alice=2, bob=1, rho=other)
    reply, _ = alice.round2(ext, (1, 2))
    with pytest.raises(ProtocolError) as exc:
        bob.round3(reply, rho_alice=other)
    assert exc.value.culprits == (2,) and exc.value.pair == (1, 2)
    assert "party 2" in str(exc.value)
