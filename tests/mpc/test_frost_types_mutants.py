"""mpc.frost.types: the constructors' and decoders' checks, each on both sides (issue 16).

Pure and fast (no key, no dealer): commitments come from nonces built from fixed test
scalars, which is all the RFC 9591 section 5.1 objects need. First in ``mutation.toml``'s
selection for ``mpc/frost/types.py``.
"""

from __future__ import annotations

import dataclasses

import pytest

from mpc import frost
from mpc.errors import DecodeError, NonceReuseError, ProtocolError, UsageError
from mpc.frost.ciphersuite import ED25519_SHA512, SECP256K1_SHA256, SECP256K1_TR, Ciphersuite
from mpc.frost.types import (
    MAX_IDENTIFIER,
    SignatureShare,
    SigningCommitments,
    SigningNonces,
    SigningPackage,
    check_identifier,
    signing_package,
)
from mpc.wire import cbor_dumps, cbor_loads

SUITES = pytest.mark.parametrize(
    "suite", [ED25519_SHA512, SECP256K1_SHA256, SECP256K1_TR], ids=lambda s: s.name
)


def _nonces(suite: Ciphersuite, ident: int, k: int = 0) -> SigningNonces:
    return SigningNonces(suite, ident, 1000 + 2 * ident + k, 2000 + 3 * ident + k)


def _commit(suite: Ciphersuite, ident: int) -> SigningCommitments:
    return _nonces(suite, ident).commitments


def test_identifiers_are_ints_from_1_to_65535() -> None:
    assert MAX_IDENTIFIER == 65535
    assert check_identifier(1) == 1 and check_identifier(65535) == 65535
    for bad in (0, -1, 65536, True, 1.0, "1", None):
        with pytest.raises(UsageError, match=r"must be an integer in \[1, 65535\]") as exc:
            check_identifier(bad)
        assert exc.value.party == (bad if type(bad) is int else None)


@SUITES
def test_commitments_must_be_non_identity_elements_of_the_suite(suite: Ciphersuite) -> None:
    good = _commit(suite, 1)
    other = SECP256K1_SHA256 if suite is ED25519_SHA512 else ED25519_SHA512
    foreign = other.group.generator
    for hiding, binding, what in (
        (suite.group.identity, good.binding, "hiding"),
        (good.hiding, suite.group.identity, "binding"),
        (foreign, good.binding, "hiding"),
        (good.hiding, foreign, "binding"),
    ):
        with pytest.raises(ProtocolError, match=f"{what} nonce commitment is not") as exc:
            SigningCommitments(suite, 1, hiding, binding)
        assert exc.value.culprits == (1,)
    assert SigningCommitments(suite, 65535, good.hiding, good.binding).identifier == 65535
    with pytest.raises(UsageError):
        SigningCommitments(suite, 0, good.hiding, good.binding)


@SUITES
def test_signature_share_is_a_canonical_scalar(suite: Ciphersuite) -> None:
    q = suite.group.order
    assert SignatureShare(suite, 1, 0).share == 0
    assert SignatureShare(suite, 1, q - 1).share == q - 1
    for bad in (q, q + 1, -1, True, 1.0):
        with pytest.raises(ProtocolError, match="not a canonical scalar") as exc:
            SignatureShare(suite, 7, bad)  # type: ignore[arg-type]
        assert exc.value.culprits == (7,)
    share = SignatureShare(suite, 3, 12345)
    assert SignatureShare.from_bytes(share.to_bytes(), suite=suite) == share
    assert SignatureShare.from_bytes(share.to_bytes()) == share  # suite read from the bytes
    assert cbor_loads(share.to_bytes()) == {
        "suite": suite.name,
        "id": 3,
        "share": suite.group.encode_scalar(12345),
    }


@SUITES
def test_signing_package_is_sorted_unique_and_of_one_suite(suite: Ciphersuite) -> None:
    c1, c2, c3 = (_commit(suite, i) for i in (1, 2, 3))
    pkg = SigningPackage(suite, (c1, c3), b"m")
    assert pkg.identifiers == (1, 3)
    assert pkg.commitment_for(3) is c3 and pkg.commitment_for(1) is c1
    with pytest.raises(UsageError, match="participant 2 is not in the signing package") as missing:
        pkg.commitment_for(2)
    assert missing.value.party == 2
    with pytest.raises(UsageError, match="appears twice") as twice:
        SigningPackage(suite, (c1, c3, c3), b"m")
    assert twice.value.party == 3
    with pytest.raises(UsageError, match=r"not sorted by identifier \(at 2\)") as unsorted:
        SigningPackage(suite, (c1, c3, c2), b"m")
    assert unsorted.value.party == 2
    for bad in ((), [c1, c2]):
        with pytest.raises(UsageError, match="non-empty tuple"):
            SigningPackage(suite, bad, b"m")  # type: ignore[arg-type]
    other = SECP256K1_TR if suite is not SECP256K1_TR else SECP256K1_SHA256
    with pytest.raises(UsageError, match=f"is not {suite.name} SigningCommitments"):
        SigningPackage(suite, (c1, _commit(other, 2)), b"m")
    with pytest.raises(UsageError, match=f"is not {suite.name} SigningCommitments"):
        SigningPackage(suite, (c1, "c2"), b"m")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="message must be bytes"):
        SigningPackage(suite, (c1,), bytearray(b"m"))  # type: ignore[arg-type]
    # the package's own encoding lists the entries in order and decodes to the same package
    doc = cbor_loads(pkg.to_bytes())
    assert doc["message"] == b"m" and [e["id"] for e in doc["commitments"]] == [1, 3]
    assert SigningPackage.from_bytes(pkg.to_bytes()) == pkg


@SUITES
def test_signing_package_helper_sorts_and_checks_the_keys_of_a_mapping(suite: Ciphersuite) -> None:
    c1, c2, c3 = (_commit(suite, i) for i in (1, 2, 3))
    assert signing_package([c3, c1, c2], b"m").identifiers == (1, 2, 3)
    assert signing_package({3: c3, 1: c1}, b"m").identifiers == (1, 3)
    with pytest.raises(UsageError, match="filed under 2 belong to 3") as exc:
        signing_package({1: c1, 2: c3}, b"m")
    assert exc.value.party == 2
    empties: tuple[list[SigningCommitments], dict[int, SigningCommitments]] = ([], {})
    for empty in empties:
        with pytest.raises(UsageError, match="no commitments"):
            signing_package(empty, b"m")


def test_decoded_package_ids_must_rise_and_blame_the_entry() -> None:
    suite = SECP256K1_SHA256
    pkg = signing_package([_commit(suite, 1), _commit(suite, 65535)], b"m")
    assert SigningPackage.from_bytes(pkg.to_bytes(), suite=suite).identifiers == (1, 65535)
    doc = cbor_loads(pkg.to_bytes())
    doc["commitments"][1]["id"] = 1
    with pytest.raises(DecodeError, match="duplicated or out of order") as exc:
        SigningPackage.from_bytes(cbor_dumps(doc), suite=suite, party=9)
    assert exc.value.field == "commitments[1].id" and exc.value.party == 1
    doc["commitments"][1]["id"] = 0
    with pytest.raises(DecodeError) as zero:
        SigningPackage.from_bytes(cbor_dumps(doc), suite=suite, party=9)
    assert zero.value.field == "commitments[1].id" and zero.value.party == 9
    doc["commitments"] = "x"
    with pytest.raises(DecodeError, match="non-empty array") as arr:
        SigningPackage.from_bytes(cbor_dumps(doc), suite=suite)
    assert arr.value.field == "commitments"


@SUITES
def test_nonces_are_non_zero_canonical_and_single_use(suite: Ciphersuite) -> None:
    q = suite.group.order
    assert SigningNonces(suite, 1, 1, q - 1).commitments.binding == suite.group.base_mul(q - 1)
    for h, b in ((0, 5), (5, 0), (q, 5), (5, q), (-1, 5), (True, 5), (5, 5.0)):
        with pytest.raises(UsageError, match="non-zero canonical scalars") as exc:
            SigningNonces(suite, 4, h, b)  # type: ignore[arg-type]
        assert exc.value.party == 4
    n = SigningNonces.from_scalars(suite, 2, 11, 13)
    assert n.commitments.hiding == suite.group.base_mul(11)
    assert n.commitments.binding == suite.group.base_mul(13)
    assert repr(n) == f"<SigningNonces {suite.name} id=2 fresh>" and not n.used
    stored = n.to_bytes()
    assert SigningNonces.from_bytes(stored).commitments == n.commitments
    assert n.take() == (11, 13)
    assert n.used and repr(n) == f"<SigningNonces {suite.name} id=2 used>"
    assert (n._hiding, n._binding) == (0, 0)
    with pytest.raises(NonceReuseError, match="already used") as again:
        n.take()
    assert again.value.party == 2
    with pytest.raises(NonceReuseError, match="refusing to serialize used nonces"):
        n.to_bytes()


def test_decoders_name_the_unexpected_and_missing_fields() -> None:
    suite = ED25519_SHA512
    c = _commit(suite, 5)
    doc = cbor_loads(c.to_bytes())
    del doc["binding"]
    doc["zzz"] = 1
    with pytest.raises(
        DecodeError, match=r"unexpected fields \['zzz'\], missing fields \['binding'\]"
    ):
        SigningCommitments.from_bytes(cbor_dumps(doc), party=5)
    assert SigningCommitments.from_bytes(c.to_bytes()) == c  # no party: no identity check
    with pytest.raises(DecodeError, match="expected ciphersuite 'secp256k1', got 'ed25519'") as s:
        SigningCommitments.from_bytes(c.to_bytes(), suite=SECP256K1_SHA256, party=5)
    assert s.value.field == "suite"
    with pytest.raises(DecodeError, match="claim identifier 5") as who:
        SigningCommitments.from_bytes(c.to_bytes(), party=6)
    assert who.value.party == 6
    share = SignatureShare(suite, 5, 1)
    with pytest.raises(DecodeError, match="claims identifier 5"):
        SignatureShare.from_bytes(share.to_bytes(), party=6)
    nonces = _nonces(suite, 5)
    with pytest.raises(DecodeError, match="belong to identifier 5"):
        SigningNonces.from_bytes(nonces.to_bytes(), party=6)
    with pytest.raises(DecodeError, match="expected a CBOR map") as m:
        SignatureShare.from_bytes(cbor_dumps([1]), party=6)
    assert m.value.field == "signature_share"


def test_frost_reexports_the_same_types() -> None:
    assert frost.SigningPackage is SigningPackage and frost.SigningNonces is SigningNonces


def test_public_signing_objects_cannot_be_altered() -> None:
    """Frozen: a SigningPackage caches binding factors and the challenge keyed by the group
    key, which is sound only if its commitments and message never change after checks."""
    suite = ED25519_SHA512
    c1, c2 = _commit(suite, 1), _commit(suite, 2)
    pkg = signing_package([c1, c2], b"m")
    for obj, name, value in (
        (pkg, "message", b"other"),
        (pkg, "commitments", (c1,)),
        (c1, "hiding", c2.hiding),
        (c1, "identifier", 2),
        (SignatureShare(suite, 1, 5), "share", 6),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)


@SUITES
def test_a_zero_signature_share_round_trips(suite: Ciphersuite) -> None:
    """z_i = 0 is a canonical scalar (RFC 9591 section 5.2 output mod q): decoded as 0, and
    judged by the share check at aggregation, never refused as a decoding error."""
    share = SignatureShare(suite, 3, 0)
    assert SignatureShare.from_bytes(share.to_bytes(), suite=suite, party=3).share == 0


def test_the_package_cache_is_private_and_outside_equality_hash_and_repr() -> None:
    """A caller cannot hand a package precomputed binding factors, and what the package has
    cached never changes what it is equal to, its hash or its repr."""
    suite = SECP256K1_SHA256
    c1, c2 = _commit(suite, 1), _commit(suite, 2)
    with pytest.raises(TypeError):
        SigningPackage(suite, (c1, c2), b"m", {})  # type: ignore[call-arg]
    pkg = signing_package([c1, c2], b"m")
    copy = SigningPackage.from_bytes(pkg.to_bytes(), suite=suite)
    pkg._cache[b"k"] = ("binding factors", 1)
    assert pkg == copy and hash(pkg) == hash(copy)
    assert "_cache" not in repr(pkg) and "binding factors" not in repr(pkg)


def test_the_helper_takes_the_suite_of_the_lowest_identifier_and_refuses_the_rest() -> None:
    ed, k1 = _commit(ED25519_SHA512, 1), _commit(SECP256K1_SHA256, 2)
    with pytest.raises(UsageError, match="entry is not ed25519 SigningCommitments"):
        signing_package([k1, ed], b"m")
    ed2, k1_1 = _commit(ED25519_SHA512, 2), _commit(SECP256K1_SHA256, 1)
    with pytest.raises(UsageError, match="entry is not secp256k1 SigningCommitments"):
        signing_package([ed2, k1_1], b"m")
