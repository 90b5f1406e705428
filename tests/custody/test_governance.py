"""Governance documents (custody.governance): genesis, chained versions, two quorums, refusals.

Every attack a holder must survive is here at the document level: forged, under-signed,
unchained, skipped, rolled-back and wrong-cluster versions, malformed bodies, and officer
key files opened with the wrong passphrase or edited.
"""

from __future__ import annotations

from dataclasses import replace

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import governance as gov
from custody.governance import GovernanceErrorKind as Kind

CLUSTER = "test-cluster"


def officers(n: int) -> tuple[list[gov.Officer], dict[str, nacl.signing.SigningKey]]:
    keys = {f"officer-{i}": nacl.signing.SigningKey.generate() for i in range(1, n + 1)}
    return [gov.Officer(oid, bytes(k.verify_key)) for oid, k in keys.items()], keys


def node(i: int) -> gov.RosterNode:
    sign = nacl.signing.SigningKey.generate()
    box = bytes(sign.to_curve25519_private_key().public_key)
    return gov.RosterNode(f"node-{i}", i, bytes(sign.verify_key), box)


def sign(doc: gov.SignedGovernance, keys: dict[str, nacl.signing.SigningKey], *ids: str):
    for oid in ids:
        doc = doc.with_signature(keys[oid], oid)
    return doc


@pytest.fixture
def genesis() -> tuple[gov.SignedGovernance, dict[str, nacl.signing.SigningKey]]:
    offs, keys = officers(3)
    body = gov.Governance(
        cluster_id=CLUSTER,
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=tuple(offs),
        quorum=2,
        roster=tuple(node(i) for i in (1, 2, 3)),
    )
    return sign(gov.unsigned(body), keys, "officer-1", "officer-2"), keys


def roundtrip(doc: gov.SignedGovernance) -> gov.SignedGovernance:
    return gov.decode(doc.encode())


def test_genesis_and_a_chained_version_verify_and_signatures_check_independently(genesis):
    doc, keys = genesis
    state = gov.GovernanceState.from_genesis(roundtrip(doc), cluster_id=CLUSTER)
    assert state.current.version == 1
    # each officer signature verifies under pyca/cryptography too, over the documented bytes
    for s in doc.signatures:
        pk = Ed25519PublicKey.from_public_bytes(doc.body.officer(s.officer_id).public_key)
        pk.verify(s.signature, gov.SIGNING_CONTEXT + doc.body.encode())
    v2 = sign(
        gov.unsigned(state.current.successor(roster=(*state.current.roster, node(4)))),
        keys,
        "officer-2",
        "officer-3",
    )
    assert state.advance(roundtrip(v2)).version == 2
    assert state.current.node("node-4") is not None
    assert state.current.previous == doc.body.digest


def test_under_signed_version_is_refused_and_names_the_count(genesis):
    doc, keys = genesis
    state = gov.GovernanceState.from_genesis(doc)
    v2 = sign(gov.unsigned(state.current.successor(roster=())), keys, "officer-1")
    with pytest.raises(gov.GovernanceError, match="1 valid signatures.*needs 2") as err:
        state.advance(roundtrip(v2))
    assert err.value.kind is Kind.UNDER_SIGNED
    assert state.current.version == 1  # unchanged on refusal


def test_forged_signatures_count_for_nothing(genesis):
    doc, keys = genesis
    state = gov.GovernanceState.from_genesis(doc)
    body = state.current.successor(quorum=1)
    rogue = nacl.signing.SigningKey.generate()
    forged = sign(gov.unsigned(body), keys, "officer-1")
    forged = forged.with_signature(rogue, "officer-2")  # claims to be officer-2
    forged = forged.with_signature(rogue, "mallory")  # not an officer at all
    with pytest.raises(gov.GovernanceError, match="invalid signature from officer-2") as err:
        state.advance(roundtrip(forged))
    assert "non-officers mallory" in str(err.value)
    # a signature over another body does not transfer either
    other = sign(gov.unsigned(state.current.successor(quorum=3)), keys, "officer-2")
    moved = gov.SignedGovernance(body, (*forged.signatures[:1], other.signatures[0]))
    with pytest.raises(gov.GovernanceError, match="invalid signature from officer-2"):
        state.advance(moved)


def test_new_officers_alone_cannot_take_over(genesis):
    """TUF 5.3.4: the current quorum must sign; a version that swaps in new officers
    signed only by them is refused, as is one the new officers did not sign."""
    doc, keys = genesis
    state = gov.GovernanceState.from_genesis(doc)
    new_offs, new_keys = officers(2)
    new_offs = [gov.Officer(f"new-{o.officer_id}", o.public_key) for o in new_offs]
    new_keys = {f"new-{k}": v for k, v in new_keys.items()}
    body = state.current.successor(officers=tuple(new_offs), quorum=2)
    takeover = sign(gov.unsigned(body), new_keys, *new_keys)
    with pytest.raises(gov.GovernanceError, match="version 1's officers"):
        state.advance(takeover)
    old_only = sign(gov.unsigned(body), keys, "officer-1", "officer-2")
    with pytest.raises(gov.GovernanceError, match="its own officers"):
        state.advance(old_only)
    both = sign(old_only, new_keys, *new_keys)
    assert state.advance(both).officers == tuple(new_offs)


def test_rollback_skip_and_fork_are_refused(genesis):
    doc, keys = genesis
    state = gov.GovernanceState.from_genesis(doc)
    v2 = sign(gov.unsigned(state.current.successor(quorum=3)), keys, *keys)
    v2_body = state.advance(v2)
    v3 = sign(gov.unsigned(v2_body.successor(quorum=2)), keys, *keys)
    with pytest.raises(gov.GovernanceError) as err:
        state.advance(v2)  # the same version again
    assert err.value.kind is Kind.ROLLBACK
    v1_again = gov.GovernanceState(state.current)
    with pytest.raises(gov.GovernanceError) as err:
        v1_again.advance(doc)
    assert err.value.kind is Kind.ROLLBACK
    # a version 4 chained to v3 offered before v3: refused, install in order
    v4 = sign(gov.unsigned(v3.body.successor(quorum=1)), keys, *keys)
    with pytest.raises(gov.GovernanceError, match="skips version 3") as err:
        state.advance(v4)
    assert err.value.kind is Kind.UNCHAINED
    # a fork: version 3 that names some other previous digest
    fork = sign(gov.unsigned(replace(v3.body, previous=bytes(range(32)))), keys, *keys)
    with pytest.raises(gov.GovernanceError, match="names previous") as err:
        state.advance(fork)
    assert err.value.kind is Kind.UNCHAINED
    assert state.advance(v3).version == 3


def test_wrong_cluster_is_refused(genesis):
    doc, keys = genesis
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_genesis(doc, cluster_id="other-cluster")
    assert err.value.kind is Kind.WRONG_CLUSTER


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: {"quorum": 0}, "quorum"),
        (lambda b: {"quorum": 4}, "quorum"),
        (lambda b: {"roster": (*b.roster, b.roster[0])}, "duplicate node id node-1"),
        (
            lambda b: {"roster": (*b.roster, replace(node(9), party_id=1))},
            "node node-9: party id 1 already taken",
        ),
        (
            lambda b: {"roster": (*b.roster, replace(node(9), sign_pk=b.roster[0].sign_pk))},
            "node node-9: identity key shared with another node",
        ),
        (
            lambda b: {"roster": (gov.RosterNode("node-0", 0, b.roster[0].sign_pk, b"\x01" * 32),)},
            "0 is never an id",
        ),
        (
            lambda b: {"roster": (gov.RosterNode("node-1", 1, bytes(32), b"\x01" * 32),)},
            "not a valid Ed25519 point",
        ),
        (
            lambda b: {"roster": (gov.RosterNode("node-1", 1, b.roster[0].sign_pk, bytes(32)),)},
            "X25519",
        ),
        (lambda b: {"officers": ()}, "at least one"),
        (lambda b: {"officers": (b.officers[0], b.officers[0])}, "duplicate officer id"),
        (
            lambda b: {"officers": (gov.Officer("x", b.officers[0].public_key[:31]),)},
            "32 bytes",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_the_field_named(genesis, change, message):
    doc, _ = genesis
    with pytest.raises(gov.GovernanceError, match=message) as err:
        doc.body.successor(**change(doc.body))
    assert err.value.kind is Kind.MALFORMED


def test_wire_form_is_strict(genesis):
    doc, _ = genesis
    raw = cbor2.loads(doc.encode())
    extra = cbor2.dumps({**raw, "note": "hi"}, canonical=True)
    with pytest.raises(gov.GovernanceError, match="expected fields"):
        gov.decode(extra)
    not_canonical = cbor2.dumps({"signatures": raw["signatures"], "body": raw["body"]})
    if not_canonical != doc.encode():
        with pytest.raises(gov.GovernanceError, match="canonical"):
            gov.decode(not_canonical)
    body = cbor2.loads(raw["body"])
    body["format"] = 2
    wrong_format = cbor2.dumps({**raw, "body": cbor2.dumps(body, canonical=True)}, canonical=True)
    with pytest.raises(gov.GovernanceError, match="format"):
        gov.decode(wrong_format)
    with pytest.raises(gov.GovernanceError, match="at most"):
        gov.decode(b"\x00" * (gov.MAX_DOCUMENT_BYTES + 1))


@settings(max_examples=200)
@given(data=st.data())
def test_any_byte_flip_is_refused(data):
    offs, keys = officers(2)
    body = gov.Governance(CLUSTER, 1, gov.GENESIS_PREVIOUS, tuple(offs), 2, (node(1),))
    encoded = bytearray(sign(gov.unsigned(body), keys, *keys).encode())
    i = data.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= data.draw(st.integers(1, 255))
    try:
        gov.verify_genesis(gov.decode(bytes(encoded)))
    except gov.GovernanceError:
        return
    pytest.fail(f"flipping byte {i} gave a document that still verifies")


def test_refuse_outsiders_names_them(genesis):
    doc, _ = genesis
    doc.body.refuse_outsiders(["node-1", "node-3"])
    with pytest.raises(gov.GovernanceError, match="rogue-4, rogue-5"):
        doc.body.refuse_outsiders(["node-3", "rogue-4", "rogue-5"])


def test_officer_key_file_opens_only_with_its_passphrase():
    officer, blob = gov.create_officer_key("alice", b"correct horse", cost=gov.INTERACTIVE)
    assert gov.read_officer_public(blob) == officer
    opened, signer = gov.open_officer_key(blob, b"correct horse")
    assert opened == officer and bytes(signer.verify_key) == officer.public_key
    assert signer.encode() not in blob  # the seed is not stored in the clear
    with pytest.raises(gov.OfficerKeyError, match="wrong passphrase"):
        gov.open_officer_key(blob, b"wrong horse")
    # an edited header (say, a swapped public key) makes the file unopenable
    outer = cbor2.loads(blob)
    header = cbor2.loads(outer["header"])
    header["officer_id"] = "mallory"
    outer["header"] = cbor2.dumps(header, canonical=True)
    with pytest.raises(gov.OfficerKeyError, match="altered"):
        gov.open_officer_key(cbor2.dumps(outer, canonical=True), b"correct horse")
    with pytest.raises(gov.OfficerKeyError, match="not an officer key file"):
        gov.open_officer_key(b"garbage", b"correct horse")
    with pytest.raises(gov.OfficerKeyError, match="8 bytes"):
        gov.create_officer_key("bob", b"short", cost=gov.INTERACTIVE)
