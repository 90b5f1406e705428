"""CBOR encodings of FROST signing data: round trips and strict decoding (field and party named)."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest
from py_ecc.bls.hash import expand_message_xmd as ref_expand

from mpc import frost
from mpc.errors import DecodeError, UsageError
from mpc.frost import Ciphersuite
from mpc.frost.ciphersuite import expand_message_xmd
from mpc.shamir import KeyPackage
from mpc.wire import cbor_dumps, cbor_loads
from tests.mpc.conftest import dealer_split_for_tests

SUITES = ["ed25519", "secp256k1", "bip340"]


@pytest.fixture(params=SUITES)
def setup(request: pytest.FixtureRequest) -> tuple[Ciphersuite, dict[int, KeyPackage]]:
    suite = frost.ciphersuite(request.param)
    return suite, dealer_split_for_tests(suite.group, 2, 3)


def _edit(data: bytes, **changes: Any) -> bytes:
    obj = cbor_loads(data)
    for k, v in changes.items():
        if v is KeyError:
            del obj[k]
        else:
            obj[k] = v
    return cbor_dumps(obj)


def test_round_trips(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    n1, c1 = frost.commit(suite, keys[1])
    n3, c3 = frost.commit(suite, keys[3])
    assert frost.SigningCommitments.from_bytes(c1.to_bytes(), suite=suite, party=1) == c1
    pkg = frost.signing_package([c3, c1], b"\x00\x01msg")
    pkg2 = frost.SigningPackage.from_bytes(pkg.to_bytes(), suite=suite)
    assert pkg2 == pkg and pkg2.identifiers == (1, 3)
    assert pkg2.to_bytes() == pkg.to_bytes()  # canonical
    restored = frost.SigningNonces.from_bytes(n1.to_bytes(), suite=suite, party=1)
    assert restored.commitments == c1 and not restored.used
    share = frost.sign(pkg2, restored, keys[1])
    assert frost.SignatureShare.from_bytes(share.to_bytes(), suite=suite, party=1) == share
    assert "share=" not in repr(share) and str(share.share) not in repr(share)
    assert str(n3._hiding) not in repr(n3)


def test_commitments_strict(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    data = frost.commit(suite, keys[2])[1].to_bytes()
    other = "ed25519" if suite.name != "ed25519" else "bip340"
    cases: list[tuple[bytes, str | None, int | None]] = [
        (_edit(data, id=0), "id", 2),
        (_edit(data, id=True), "id", 2),
        (_edit(data, id=70000), "id", 2),
        (_edit(data, id=3), "id", 2),  # claims another identity than the sender
        (_edit(data, suite="p256"), "suite", 2),
        (_edit(data, suite=other), "suite", 2),
        (_edit(data, hiding="00" * 32), "hiding", 2),
        (_edit(data, binding=KeyError), "commitments", 2),
        (_edit(data, extra=b""), "commitments", 2),
        (cbor_dumps([1, 2]), "commitments", 2),
        (b"\xff\x00", "commitments", 2),
        (data[:-1], "commitments", 2),
        (data + b"\x00", "commitments", 2),
        (cbor2.dumps(cbor2.CBORTag(42, cbor_loads(data))), "commitments", 2),
    ]
    for bad, field, party in cases:
        with pytest.raises(DecodeError) as exc:
            frost.SigningCommitments.from_bytes(bad, suite=suite, party=2)
        assert exc.value.field == field, bad
        assert exc.value.party == party


def test_package_strict(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    pairs = {i: frost.commit(suite, keys[i]) for i in (1, 2)}
    data = frost.signing_package([pairs[1][1], pairs[2][1]], b"m").to_bytes()
    entries = cbor_loads(data)["commitments"]
    cases: list[tuple[bytes, str]] = [
        (_edit(data, message="m"), "message"),
        (_edit(data, commitments=[]), "commitments"),
        (_edit(data, commitments=entries[::-1]), "commitments[1].id"),
        (_edit(data, commitments=[entries[0], entries[0]]), "commitments[1].id"),
        (_edit(data, commitments=[{**entries[0], "x": 1}]), "commitments[0]"),
        (_edit(data, commitments=[entries[0], 5]), "commitments[1]"),
        (_edit(data, suite=KeyError), "signing_package"),
    ]
    for bad, field in cases:
        with pytest.raises(DecodeError) as exc:
            frost.SigningPackage.from_bytes(bad, suite=suite)
        assert exc.value.field == field, field


def test_share_and_nonces_strict(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    g = suite.group
    nonces, _ = frost.commit(suite, keys[1])
    _, c2 = frost.commit(suite, keys[2])
    n1b, c1b = frost.commit(suite, keys[1])
    share = frost.sign(frost.signing_package([c1b, c2], b"m"), n1b, keys[1])
    data = share.to_bytes()
    order = "little" if g.name == "ed25519" else "big"
    for bad, field in [
        (_edit(data, share=g.order.to_bytes(32, order)), "share"),
        (_edit(data, share=bytes(31)), "share"),
        (_edit(data, id=2), "id"),
        (_edit(data, id=-1), "id"),
    ]:
        with pytest.raises(DecodeError) as exc:
            frost.SignatureShare.from_bytes(bad, suite=suite, party=1)
        assert exc.value.field == field and exc.value.party == 1
    stored = nonces.to_bytes()
    for bad, field in [
        (_edit(stored, hiding=bytes(32)), "hiding"),
        (_edit(stored, binding=g.order.to_bytes(32, order)), "binding"),
        (_edit(stored, id=2), "id"),
    ]:
        with pytest.raises(DecodeError) as exc:
            frost.SigningNonces.from_bytes(bad, suite=suite, party=1)
        assert exc.value.field == field


def test_signing_package_helper_validates(setup: tuple[Ciphersuite, dict[int, KeyPackage]]) -> None:
    suite, keys = setup
    c1 = frost.commit(suite, keys[1])[1]
    with pytest.raises(UsageError):
        frost.signing_package([], b"m")
    with pytest.raises(UsageError):
        frost.signing_package({2: c1}, b"m")
    with pytest.raises(UsageError):
        frost.SigningPackage(suite, (c1,), "m")  # type: ignore[arg-type]


# -- RFC 9380 expand_message_xmd (hand-written) ------------------------------------------------

DST = b"QUUX-V01-CS02-with-expander-SHA256-128"


@pytest.mark.parametrize(
    ("msg", "length", "expected"),
    [  # RFC 9380 Appendix K.1
        (b"", 0x20, "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
        (b"abc", 0x20, "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
    ],
)
def test_expand_message_xmd_rfc9380_vectors(msg: bytes, length: int, expected: str) -> None:
    assert expand_message_xmd(msg, DST, length).hex() == expected


@pytest.mark.parametrize("length", [1, 32, 48, 64, 100, 255])
def test_expand_message_xmd_matches_py_ecc(length: int) -> None:
    for msg in (b"", b"q128_" + b"q" * 128, bytes(range(200))):
        assert expand_message_xmd(msg, DST, length) == ref_expand(msg, DST, length, hashlib.sha256)


def test_expand_message_xmd_limits() -> None:
    with pytest.raises(UsageError):
        expand_message_xmd(b"", b"x" * 256, 32)
    with pytest.raises(UsageError):
        expand_message_xmd(b"", DST, 256 * 32)
