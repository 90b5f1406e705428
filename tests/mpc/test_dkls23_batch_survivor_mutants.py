"""DKLs23 batched presigning (mpc.dkls23.batch): the survivors of its first full mutation
run (session 22, issue 16; docs/MUTATION.md). Shares from the test-only dealer plus one OT
setup (module-scoped: no whole key is formed)."""

from __future__ import annotations

import os

import pytest

from mpc.dkls23.batch import BatchPresignSession
from mpc.dkls23.keygen import EcdsaKeyShare, OtSetupSession
from mpc.groups import SECP256K1
from mpc.hazmat import set_rng
from mpc.testing import run_local, seeded_rng
from tests.mpc.conftest import dealer_split_for_tests


@pytest.fixture(scope="module")
def shares() -> dict[int, EcdsaKeyShare]:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    sid = os.urandom(32)
    out: dict[int, EcdsaKeyShare] = run_local({i: OtSetupSession(k, sid) for i, k in keys.items()})
    return out


def _round1(shares: dict[int, EcdsaKeyShare], seed: bytes, sid: bytes) -> list[object]:
    s = BatchPresignSession(shares[1], sid, (1, 2), 2)
    set_rng(s, seeded_rng(seed))
    return [m.payload for m in s.start()]


def test_every_instance_draws_from_the_sessions_rng(shares: dict[int, EcdsaKeyShare]) -> None:
    """``mpc.hazmat.set_rng`` on the batch session reaches every instance (its ``rho``,
    ``r_i``, ``phi_i``, Bob's choice bits): the same RNG gives the same messages byte for
    byte, another gives others, and within one batch no two instances draw the same."""
    sid = os.urandom(32)
    a = _round1(shares, b"seed-a", sid)
    assert a == _round1(shares, b"seed-a", sid)
    b = _round1(shares, b"seed-b", sid)
    assert a != b
    (batch,) = a
    assert isinstance(batch, dict)
    first, second = batch["batch"]
    assert first["rho"] != second["rho"] and first["com"] != second["com"]
