"""BIP-341 Taproot tweak of FROST BIP-340 keys, checked against libsecp256k1."""

from __future__ import annotations

import hashlib
import itertools
import os

import coincurve
import pytest

from mpc import frost
from mpc.errors import UsageError
from mpc.frost.taproot import tap_tweak_scalar, taproot_tweak
from mpc.groups import ED25519, SECP256K1, Secp256k1Point
from tests.mpc.conftest import dealer_split_for_tests

SUITE = frost.ciphersuite("bip340")


def _tagged(tag: str, msg: bytes) -> bytes:
    th = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(th + th + msg).digest()


def _output_key_by_libsecp256k1(pk: Secp256k1Point, merkle_root: bytes) -> bytes:
    """BIP-341 taproot_tweak_pubkey computed with coincurve's xonly tweak (no code of ours)."""
    x = pk.x_only()
    t = _tagged("TapTweak", x + merkle_root)
    q = coincurve.PublicKeyXOnly(x)
    q.tweak_add(t)
    return q.format()


def _sign(keys: dict, signers: tuple[int, ...], msg: bytes) -> bytes:
    batch = {i: frost.commit(SUITE, keys[i]) for i in signers}
    pkg = frost.signing_package([batch[i][1] for i in signers], msg)
    shares = [frost.sign(pkg, batch[i][0], keys[i]) for i in signers]
    return frost.aggregate(pkg, shares, keys[signers[0]].public, verify_shares=True)


def _keys_with_parity(even: bool) -> dict:
    """A fresh 2-of-3 key whose group key has the wanted Y parity (both must be covered)."""
    for _ in range(200):
        keys = dealer_split_for_tests(SECP256K1, 2, 3)
        pk = keys[1].group_public_key
        assert isinstance(pk, Secp256k1Point)
        if pk.has_even_y() == even:
            return keys
    raise AssertionError("no key of the wanted parity in 200 tries")


@pytest.mark.parametrize("even_internal_key", [True, False])
@pytest.mark.parametrize("merkle_root", [b"", bytes(range(32))])
def test_tweaked_threshold_key_signs_for_the_bip341_output_key(
    merkle_root: bytes, even_internal_key: bool
) -> None:
    keys = _keys_with_parity(even_internal_key)
    pk = keys[1].group_public_key
    assert isinstance(pk, Secp256k1Point)
    tweaked = {i: taproot_tweak(k, merkle_root) for i, k in keys.items()}
    output = SUITE.encode_public_key(tweaked[1].group_public_key)
    assert output == _output_key_by_libsecp256k1(pk, merkle_root)
    assert taproot_tweak(keys[1].public, merkle_root) == tweaked[1].public
    for signers in itertools.combinations((1, 2, 3), 2):
        msg = os.urandom(32)
        sig = _sign(tweaked, signers, msg)
        assert coincurve.PublicKeyXOnly(output).verify(sig, msg)
        # the untweaked internal key does not verify it
        assert not coincurve.PublicKeyXOnly(pk.x_only()).verify(sig, msg)


def test_tweak_scalar_matches_bip341_definition() -> None:
    p = SECP256K1.base_mul(SECP256K1.random_scalar())
    assert isinstance(p, Secp256k1Point)
    expected = int.from_bytes(_tagged("TapTweak", p.x_only()), "big")
    assert tap_tweak_scalar(p) == expected


def test_tweak_refuses_bad_input() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    with pytest.raises(UsageError, match="merkle_root"):
        taproot_tweak(keys[1], b"\x00" * 31)
    ed = dealer_split_for_tests(ED25519, 2, 3)
    with pytest.raises(UsageError, match="secp256k1"):
        taproot_tweak(ed[1])
