"""Shared fixtures for the mpc tests: third-party vectors and a test-only share dealer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import coincurve
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from py_ecc.secp256k1 import secp256k1 as ref  # imported early: it raises the recursion limit

from mpc import frost
from mpc.frost import Ciphersuite
from mpc.groups import Group
from mpc.shamir import KeyPackage, PublicKeyPackage, check_threshold, lagrange_coefficient

# vendored copies, checked against tests/vectors/SHA256SUMS
VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load_json(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / rel).read_text())
    return data


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
        terms = (lagrange_coefficient(group, i, base, at=j) * shares[i] for i in base)
        shares[j] = sum(terms) % group.order
    verifying = {i: group.base_mul(s) for i, s in shares.items()}
    pk = group.sum([verifying[i] * lagrange_coefficient(group, i, base) for i in base])
    public = PublicKeyPackage(group, t, pk, verifying)
    return {i: KeyPackage(i, s, public) for i, s in shares.items()}


@pytest.fixture
def dealer() -> Any:
    return dealer_split_for_tests


def independent_verify(suite: Ciphersuite, msg: bytes, sig: bytes, pk_bytes: bytes) -> None:
    """Check a FROST output with verifiers that share no code with ours."""
    if suite.name == "ed25519":
        nacl.signing.VerifyKey(pk_bytes).verify(msg, sig)  # raises on failure
        Ed25519PublicKey.from_public_bytes(pk_bytes).verify(sig, msg)
    elif suite.name == "bip340":
        assert len(sig) == 64
        assert coincurve.PublicKeyXOnly(pk_bytes).verify(sig, msg)
    else:  # RFC FROST(secp256k1): R || z, checked with py-ecc arithmetic

        def dec(b: bytes) -> Any:
            x = int.from_bytes(b[1:], "big")
            y2 = (pow(x, 3, ref.P) + 7) % ref.P
            y = pow(y2, (ref.P + 1) // 4, ref.P)
            if y % 2 != b[0] - 2:
                y = ref.P - y
            return (x, y)

        r, z = dec(sig[:33]), int.from_bytes(sig[33:], "big")
        pk = dec(pk_bytes)
        c = suite.H2(sig[:33] + pk_bytes + msg)
        assert ref.multiply(ref.G, z) == ref.add(r, ref.multiply(pk, c))


def sign_with(
    suite: Ciphersuite, keys: dict[int, KeyPackage], signers: list[int], msg: bytes
) -> bytes:
    """One honest FROST signing by ``signers``; also checked by the independent verifiers."""
    pairs = {i: frost.commit(suite, keys[i]) for i in signers}
    pkg = frost.signing_package([pairs[i][1] for i in signers], msg)
    shares = [frost.sign(pkg, pairs[i][0], keys[i]) for i in signers]
    public = keys[signers[0]].public
    sig = frost.aggregate(pkg, shares, public)
    independent_verify(suite, msg, sig, suite.encode_public_key(public.group_public_key))
    return sig
