"""Attacks on FROST signing: each fails closed and names the culprit."""

from __future__ import annotations

import pytest

from mpc import frost, hazmat
from mpc.errors import DecodeError, MpcError, NonceReuseError, ProtocolError, UsageError
from mpc.frost import Ciphersuite
from mpc.shamir import KeyPackage
from mpc.wire import cbor_dumps, cbor_loads
from tests.mpc.conftest import dealer_split_for_tests, independent_verify

SUITES = ["ed25519", "secp256k1", "bip340"]


@pytest.fixture(params=SUITES)
def setup(request: pytest.FixtureRequest) -> tuple[Ciphersuite, dict[int, KeyPackage]]:
    suite = frost.ciphersuite(request.param)
    return suite, dealer_split_for_tests(suite.group, 3, 5)


def _round(
    suite: Ciphersuite, keys: dict[int, KeyPackage], signers: list[int], msg: bytes = b"pay 10"
) -> tuple[frost.SigningPackage, dict[int, frost.SignatureShare]]:
    pairs = {i: frost.commit(suite, keys[i]) for i in signers}
    pkg = frost.signing_package([pairs[i][1] for i in signers], msg)
    return pkg, {i: frost.sign(pkg, pairs[i][0], keys[i]) for i in signers}


def _tamper(share: frost.SignatureShare, delta: int = 1) -> frost.SignatureShare:
    return frost.SignatureShare(
        share.suite, share.identifier, (share.share + delta) % share.suite.group.order
    )


# -- bad signature shares ------------------------------------------------------------------


@pytest.mark.parametrize("verify_shares", [False, True])
def test_one_bad_share_is_named_and_the_others_verify(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]], verify_shares: bool
) -> None:
    suite, keys = setup
    public = keys[1].public
    pkg, shares = _round(suite, keys, [1, 2, 4])
    shares[4] = _tamper(shares[4])
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, shares, public, verify_shares=verify_shares)
    assert exc.value.culprits == (4,) and exc.value.party == 4
    for i in (1, 2):
        frost.verify_signature_share(pkg, shares[i], public)  # the honest shares still verify
    with pytest.raises(ProtocolError) as one:
        frost.verify_signature_share(pkg, shares[4], public)
    assert one.value.culprits == (4,)


def test_every_bad_share_is_named(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    pkg, shares = _round(suite, keys, [1, 3, 4, 5])
    shares[3] = _tamper(shares[3])
    shares[5] = frost.SignatureShare(suite, 5, 0)
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, shares, keys[1].public)
    assert exc.value.culprits == (3, 5)


def test_shares_that_cancel_out_are_still_named(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    # +d on one share and -d on another keep the sum valid: the aggregate verifies, so only
    # verify_shares=True can see it. Fail closed when asked.
    suite, keys = setup
    pkg, shares = _round(suite, keys, [1, 2, 3])
    shares[1] = _tamper(shares[1], 5)
    shares[2] = _tamper(shares[2], -5)
    sig = frost.aggregate(pkg, shares, keys[1].public)  # the signature itself is valid
    independent_verify(suite, pkg.message, sig, suite.encode_public_key(keys[1].group_public_key))
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, shares, keys[1].public, verify_shares=True)
    assert exc.value.culprits == (1, 2)


def test_missing_extra_and_mislabelled_shares(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    public = keys[1].public
    pkg, shares = _round(suite, keys, [1, 2, 3])
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, {1: shares[1], 2: shares[2]}, public)
    assert exc.value.culprits == (3,)
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, [*shares.values(), frost.SignatureShare(suite, 5, 1)], public)
    assert exc.value.culprits == (5,)
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, {1: shares[1], 2: shares[3], 3: shares[3]}, public)
    assert exc.value.culprits == (2,)
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, [shares[1], shares[2], shares[3], shares[3]], public)
    assert exc.value.culprits == (3,)
    other = frost.ciphersuite("secp256k1" if suite.name != "secp256k1" else "bip340")
    with pytest.raises(ProtocolError) as exc:
        frost.verify_signature_share(pkg, frost.SignatureShare(other, 2, 1), public)
    assert exc.value.culprits == (2,)


# -- malformed commitments -----------------------------------------------------------------


def test_identity_and_foreign_commitments_refused(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    g = suite.group
    good = g.base_mul(7)
    for bad in (
        g.identity,
        (frost.ciphersuite("ed25519" if g.name != "ed25519" else "secp256k1")).group.generator,
    ):
        with pytest.raises(ProtocolError) as exc:
            frost.SigningCommitments(suite, 3, bad, good)
        assert exc.value.culprits == (3,)
        with pytest.raises(ProtocolError):
            frost.SigningCommitments(suite, 3, good, bad)


def _commit_wire(
    suite: Ciphersuite, keys: dict[int, KeyPackage], i: int, field: str, value: bytes
) -> bytes:
    _, c = frost.commit(suite, keys[i])
    obj = cbor_loads(c.to_bytes())
    obj[field] = value
    return cbor_dumps(obj)


def _bad_elements(suite: Ciphersuite) -> list[bytes]:
    g = suite.group
    if g.name == "ed25519":
        return [
            bytes([1]) + bytes(31),  # identity
            bytes.fromhex(
                "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
            ),  # order 2
            bytes.fromhex(
                "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
            ),  # order 8
            (2**255 - 19 + 1).to_bytes(32, "little"),  # non-canonical y
            bytes([2]) + bytes(31),  # y = 2 is not on the curve
            g.generator.encode()[:31],
        ]
    p = 2**256 - 2**32 - 977
    return [
        bytes(33),  # identity has no encoding
        b"\x02" + (p + 1).to_bytes(32, "big"),  # x >= p
        b"\x02" + (5).to_bytes(32, "big"),  # x = 5 is not on the curve
        b"\x04" + g.generator.encode()[1:],
        g.generator.encode()[:32],
    ]


@pytest.mark.parametrize("field", ["hiding", "binding"])
def test_malformed_commitment_points_named(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]], field: str
) -> None:
    suite, keys = setup
    for bad in _bad_elements(suite):
        with pytest.raises(DecodeError) as exc:
            frost.SigningCommitments.from_bytes(
                _commit_wire(suite, keys, 2, field, bad), suite=suite, party=2
            )
        assert exc.value.field == field and exc.value.party == 2
        # ... and inside a signing package, the entry's identifier is named
        pairs = {i: frost.commit(suite, keys[i]) for i in (1, 2)}
        obj = cbor_loads(frost.signing_package([pairs[1][1], pairs[2][1]], b"m").to_bytes())
        obj["commitments"][1][field] = bad
        with pytest.raises(DecodeError) as exc2:
            frost.SigningPackage.from_bytes(cbor_dumps(obj), suite=suite)
        assert exc2.value.field == f"commitments[1].{field}" and exc2.value.party == 2


# -- signer identifiers --------------------------------------------------------------------


def test_identifier_zero_duplicate_or_outside_the_key(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    g = suite.group
    d, e = g.base_mul(3), g.base_mul(4)
    for bad_id in (0, -1, 65536):
        with pytest.raises(UsageError):
            frost.SigningCommitments(suite, bad_id, d, e)
    c1 = frost.commit(suite, keys[1])[1]
    c2 = frost.commit(suite, keys[2])[1]
    with pytest.raises(UsageError) as dup:
        frost.signing_package([c1, c2, frost.commit(suite, keys[2])[1]], b"m")
    assert dup.value.party == 2
    with pytest.raises(UsageError) as unsorted:
        frost.SigningPackage(suite, (c2, c1), b"m")
    assert unsorted.value.party == 1
    # identifier 9 is well formed but holds no share of this 5-party key
    stranger = frost.SigningCommitments(suite, 9, d, e)
    n1, c1 = frost.commit(suite, keys[1])
    pkg = frost.signing_package([c1, c2, stranger], b"m")
    with pytest.raises(UsageError) as out:
        frost.sign(pkg, n1, keys[1])
    assert out.value.party == 9
    assert not n1.used
    with pytest.raises(UsageError) as out2:
        frost.aggregate(pkg, [frost.SignatureShare(suite, i, 1) for i in (1, 2, 9)], keys[1].public)
    assert out2.value.party == 9
    # a signer that is not in the package it is asked to sign
    n3, _ = frost.commit(suite, keys[3])
    c4 = frost.commit(suite, keys[4])[1]
    with pytest.raises(UsageError) as notin:
        frost.sign(frost.signing_package([c1, c2, c4], b"m"), n3, keys[3])
    assert notin.value.party == 3


def test_identifier_zero_or_duplicate_on_the_wire(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    pairs = {i: frost.commit(suite, keys[i]) for i in (1, 2)}
    obj = cbor_loads(frost.signing_package([pairs[1][1], pairs[2][1]], b"m").to_bytes())
    for ids, field in (
        ((0, 2), "commitments[0].id"),
        ((2, 2), "commitments[1].id"),
        ((2, 1), "commitments[1].id"),
    ):
        obj["commitments"][0]["id"], obj["commitments"][1]["id"] = ids
        with pytest.raises(DecodeError) as exc:
            frost.SigningPackage.from_bytes(cbor_dumps(obj), suite=suite)
        assert exc.value.field == field


# -- nonces --------------------------------------------------------------------------------


def test_nonce_used_twice_is_refused(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    n1, c1 = frost.commit(suite, keys[1])
    _, c2 = frost.commit(suite, keys[2])
    _, c3 = frost.commit(suite, keys[3])
    pkg = frost.signing_package([c1, c2, c3], b"first")
    frost.sign(pkg, n1, keys[1])
    assert n1.used and "used" in repr(n1)
    assert n1._hiding == 0 and n1._binding == 0  # zeroed after use
    with pytest.raises(NonceReuseError) as exc:
        frost.sign(pkg, n1, keys[1])
    assert exc.value.party == 1
    # same commitments, other message: the classic nonce-reuse key extraction attempt
    with pytest.raises(NonceReuseError):
        frost.sign(frost.signing_package([c1, c2, c3], b"second"), n1, keys[1])
    with pytest.raises(NonceReuseError):
        n1.to_bytes()
    with pytest.raises(NonceReuseError):
        n1.take()


def test_nonces_must_match_the_package(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    n1, _ = frost.commit(suite, keys[1])
    _, c1_other = frost.commit(suite, keys[1])
    _, c2 = frost.commit(suite, keys[2])
    _, c3 = frost.commit(suite, keys[3])
    with pytest.raises(UsageError) as exc:
        frost.sign(frost.signing_package([c1_other, c2, c3], b"m"), n1, keys[1])
    assert exc.value.party == 1
    assert not n1.used  # refused before anything was consumed
    with pytest.raises(UsageError):
        frost.sign(frost.signing_package([c1_other, c2, c3], b"m"), n1, keys[2])


def test_replayed_commitments_and_share_are_blamed(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    # Signer 3 reuses its commitments and its old share in a second signing package. The
    # binding factors depend on the message and the whole commitment list, so the replayed
    # share is invalid there and signer 3 is named.
    suite, keys = setup
    public = keys[1].public
    n1, c1 = frost.commit(suite, keys[1])
    n3, c3 = frost.commit(suite, keys[3])
    n4, c4 = frost.commit(suite, keys[4])
    pkg1 = frost.signing_package([c1, c3, c4], b"pay Alice 10")
    old = frost.sign(pkg1, n3, keys[3])
    m1, d1 = frost.commit(suite, keys[1])
    m4, d4 = frost.commit(suite, keys[4])
    pkg2 = frost.signing_package([d1, c3, d4], b"pay Mallory 1000")
    shares = {1: frost.sign(pkg2, m1, keys[1]), 3: old, 4: frost.sign(pkg2, m4, keys[4])}
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg2, shares, public)
    assert exc.value.culprits == (3,)
    # and the honest signer asked to sign with its spent commitments refuses
    with pytest.raises(NonceReuseError):
        frost.sign(pkg2, n3, keys[3])
    # commitments replayed under another key do not verify either
    other_keys = dealer_split_for_tests(suite.group, 3, 5)
    with pytest.raises(ProtocolError):
        frost.aggregate(
            pkg1,
            {1: frost.sign(pkg1, n1, keys[1]), 3: old, 4: frost.sign(pkg1, n4, keys[4])},
            other_keys[1].public,
        )


def test_share_for_a_tampered_message_is_blamed(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    pairs = {i: frost.commit(suite, keys[i]) for i in (1, 2, 3)}
    comms = [pairs[i][1] for i in (1, 2, 3)]
    pkg = frost.signing_package(comms, b"pay 10")
    evil = frost.signing_package(comms, b"pay 10000")
    shares = {
        1: frost.sign(pkg, pairs[1][0], keys[1]),
        2: frost.sign(evil, pairs[2][0], keys[2]),
        3: frost.sign(pkg, pairs[3][0], keys[3]),
    }
    with pytest.raises(ProtocolError) as exc:
        frost.aggregate(pkg, shares, keys[1].public)
    assert exc.value.culprits == (2,)


def test_wrong_suite_or_group_refused(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    other = frost.ciphersuite("ed25519" if suite.name != "ed25519" else "bip340")
    with pytest.raises(UsageError):
        frost.commit(other, keys[1])
    if suite.name != "ed25519":  # secp256k1 vs bip340: same group, different suite
        sibling = frost.ciphersuite("bip340" if suite.name == "secp256k1" else "secp256k1")
        n1, c1 = frost.commit(suite, keys[1])
        _, c2 = frost.commit(sibling, keys[2])
        _, c3 = frost.commit(sibling, keys[3])
        _, c1s = frost.commit(sibling, keys[1])
        with pytest.raises(UsageError):
            frost.signing_package([c1, c2, c3], b"m")
        with pytest.raises(UsageError):
            frost.sign(frost.signing_package([c1s, c2, c3], b"m"), n1, keys[1])
        assert not n1.used


# -- verification of malformed signatures ----------------------------------------------------


def test_verify_rejects_malformed_signatures(
    setup: tuple[Ciphersuite, dict[int, KeyPackage]],
) -> None:
    suite, keys = setup
    pkg, shares = _round(suite, keys, [1, 2, 3])
    pk = keys[1].group_public_key
    sig = frost.aggregate(pkg, shares, keys[1].public)
    g = suite.group
    rlen = len(sig) - 32
    big_z = sig[:rlen] + (g.order.to_bytes(32, "little" if g.name == "ed25519" else "big"))
    off_r = (
        bytes([2]) + bytes(31)
        if g.name == "ed25519"
        else sig[: rlen - 32] + (5).to_bytes(32, "big")
    )
    for bad in (sig[:-1], sig + b"\x00", big_z, off_r + sig[rlen:], b"", bytes(len(sig))):
        assert not frost.verify(suite, pkg.message, bad, pk)
    assert not frost.verify(suite, pkg.message, sig, g.generator)
    assert not frost.verify(suite, pkg.message, sig, b"\x00" * 33)
    assert frost.verify(suite, pkg.message, sig, pk)


def test_errors_are_typed(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, _ = setup
    with pytest.raises(MpcError):
        frost.ciphersuite("p256")
    with pytest.raises(UsageError):
        hazmat.nonce_generate(suite, 5, b"short")
