"""FROST signing end to end: every t-subset signs, fewer than t cannot, BIP-340 parities,
preprocessing, awkward messages and signatures. Every signature is checked by independent
verifiers (pynacl + cryptography for Ed25519, coincurve for BIP-340, py-ecc for RFC secp256k1).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc import frost, hazmat
from mpc.errors import ProtocolError, UsageError
from mpc.groups import Secp256k1Point
from mpc.shamir import KeyPackage
from tests.mpc.conftest import dealer_split_for_tests, independent_verify, sign_with

SUITES = ["ed25519", "secp256k1", "bip340"]


@settings(max_examples=6, deadline=None)
@given(
    name=st.sampled_from(SUITES),
    tn=st.sampled_from([(2, 2), (2, 3), (3, 4), (3, 5)]),
    msg=st.binary(max_size=64),
)
def test_every_t_subset_signs(name: str, tn: tuple[int, int], msg: bytes) -> None:
    suite = frost.ciphersuite(name)
    t, n = tn
    keys = dealer_split_for_tests(suite.group, t, n)
    pk = keys[1].group_public_key
    for subset in itertools.combinations(range(1, n + 1), t):
        sig = sign_with(suite, keys, list(subset), msg)
        assert frost.verify(suite, msg, sig, pk)


@pytest.mark.parametrize("name", SUITES)
def test_more_than_t_signers_also_work(name: str) -> None:
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, 2, 4)
    sign_with(suite, keys, [1, 2, 3, 4], b"all four")


@settings(max_examples=4, deadline=None)
@given(name=st.sampled_from(SUITES), t=st.integers(min_value=2, max_value=4))
def test_fewer_than_t_cannot_sign(name: str, t: int) -> None:
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, t, t + 1)
    signers = list(range(1, t))  # t - 1 signers
    pairs = {i: frost.commit(suite, keys[i]) for i in signers}
    pkg = frost.signing_package([pairs[i][1] for i in signers], b"too few")
    # The honest code refuses outright ...
    with pytest.raises(UsageError, match="needs"):
        frost.sign(pkg, pairs[signers[0]][0], keys[signers[0]])
    assert not pairs[signers[0]][0].used  # nothing consumed by a refused request
    # ... and t-1 signers who lie about the threshold get shares that do not add up.
    lie = replace(keys[1].public, min_signers=t - 1)
    liars = {i: KeyPackage(i, keys[i].signing_share, lie) for i in signers}
    shares = [frost.sign(pkg, pairs[i][0], liars[i]) for i in signers]
    with pytest.raises(ProtocolError, match="does not verify"):
        frost.aggregate(pkg, shares, lie)
    z = sum(s.share for s in shares) % suite.group.order
    prep_r = hazmat.compute_group_commitment(
        suite,
        pkg.commitments,
        hazmat.compute_binding_factors(
            suite, keys[1].group_public_key, pkg.commitments, pkg.message
        ),
    )
    forged = suite.encode_signature(-prep_r if suite.needs_negation(prep_r) else prep_r, z)
    assert not frost.verify(suite, pkg.message, forged, keys[1].group_public_key)


def test_bip340_odd_key_and_both_r_parities() -> None:
    suite = frost.ciphersuite("bip340")
    for _ in range(64):  # an odd-Y group key turns up with probability 1/2 per try
        keys = dealer_split_for_tests(suite.group, 2, 3)
        pk = keys[1].group_public_key
        assert isinstance(pk, Secp256k1Point)
        if not pk.has_even_y():
            break
    else:
        pytest.fail("no odd-Y key in 64 tries")
    seen: set[bool] = set()
    for k in range(64):
        msg = k.to_bytes(2, "big")
        pairs = {i: frost.commit(suite, keys[i]) for i in (1, 3)}
        pkg = frost.signing_package([pairs[i][1] for i in (1, 3)], msg)
        shares = [frost.sign(pkg, pairs[i][0], keys[i]) for i in (1, 3)]
        sig = frost.aggregate(pkg, shares, keys[1].public, verify_shares=True)
        independent_verify(suite, msg, sig, suite.encode_public_key(pk))
        rho = hazmat.compute_binding_factors(suite, -pk, pkg.commitments, msg)
        r = hazmat.compute_group_commitment(suite, pkg.commitments, rho)
        assert isinstance(r, Secp256k1Point)
        seen.add(r.has_even_y())
        if len(seen) == 2:
            break
    assert seen == {True, False}
    # The x-only key is what BIP-340 verifiers use; the compressed odd key also works here.
    assert len(suite.encode_public_key(pk)) == 32
    assert frost.verify(suite, msg, sig, pk.encode())


@pytest.mark.parametrize("name", SUITES)
def test_preprocessed_nonces_make_signing_one_round(name: str) -> None:
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, 2, 3)
    batches = {i: frost.preprocess(suite, keys[i], 3) for i in (1, 2)}
    assert len({c.hiding for _, c in batches[1]}) == 3  # fresh nonces each time
    for k in range(3):
        msg = b"payment %d" % k
        pkg = frost.signing_package({i: batches[i][k][1] for i in (1, 2)}, msg)
        # node side: nonces come out of sealed storage as bytes
        stored = {i: batches[i][k][0].to_bytes() for i in (1, 2)}
        shares = [
            frost.sign(
                pkg, frost.SigningNonces.from_bytes(stored[i], suite=suite, party=i), keys[i]
            )
            for i in (1, 2)
        ]
        sig = frost.aggregate(pkg, shares, keys[1].public)
        independent_verify(suite, msg, sig, suite.encode_public_key(keys[1].group_public_key))
    with pytest.raises(UsageError):
        frost.preprocess(suite, keys[1], 0)


@pytest.mark.parametrize("name", SUITES)
def test_messages_with_zero_bytes_and_empty(name: str) -> None:
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, 2, 3)
    for msg in (b"", b"\x00", b"\x00\x00abc", b"\x00" * 32, bytes(range(256)) * 4):
        pairs = {i: frost.commit(suite, keys[i]) for i in (2, 3)}
        wire = frost.signing_package([pairs[i][1] for i in (2, 3)], msg).to_bytes()
        pkg = frost.SigningPackage.from_bytes(wire, suite=suite)
        assert pkg.message == msg
        shares = [
            frost.SignatureShare.from_bytes(
                frost.sign(pkg, pairs[i][0], keys[i]).to_bytes(), party=i
            )
            for i in (2, 3)
        ]
        sig = frost.aggregate(pkg, shares, keys[2].public)
        assert frost.verify(suite, msg, sig, keys[2].group_public_key)
        assert not frost.verify(suite, msg + b"\x00", sig, keys[2].group_public_key)
        independent_verify(suite, msg, sig, suite.encode_public_key(keys[2].group_public_key))


@pytest.mark.parametrize("name", ["ed25519", "bip340"])
def test_signature_with_leading_zero_byte(name: str) -> None:
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, 2, 2)
    for k in range(2000):  # about 1 in 256 signatures starts with 0x00
        msg = b"z" + k.to_bytes(2, "big")
        sig = sign_with(suite, keys, [1, 2], msg)
        if sig[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte")
    assert len(sig) == suite.signature_len
    assert frost.verify(suite, msg, bytes(sig), keys[1].group_public_key)


def test_ed25519_key_is_usable_by_standard_libraries() -> None:
    suite = frost.ciphersuite("ed25519")
    keys = dealer_split_for_tests(suite.group, 3, 5)
    sig = sign_with(suite, keys, [5, 1, 3], b"order of signers does not matter")
    assert len(sig) == 64


@pytest.mark.parametrize("name", SUITES)
def test_keys_from_the_dkg_sign(name: str) -> None:
    from mpc.testing import run_dkg_local

    suite = frost.ciphersuite(name)
    keys = {kp.identifier: kp for kp in run_dkg_local(suite.group, 2, 3)}
    for subset in ([1, 2], [1, 3], [2, 3]):
        sign_with(suite, keys, subset, b"dkg key")
