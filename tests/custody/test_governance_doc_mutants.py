"""The governance document's structure (``check_body``, ``decode_body`` and their helpers in
``custody/governance.py``): every bound at its edge and one past, each refusal by its exact
detail, so that a bound moved by one or a check removed fails here (issue 16,
docs/MUTATION.md). Pure and fast: real Ed25519 and X25519 keys (pynacl), bodies encoded and
decoded as nodes do; no signature is needed to reach these checks.

Only the fields of the body as it stands (cluster id, version, previous, officers, quorum,
roster, raw signing keys, policy), so that these tests hold whatever fields are added.
"""

from __future__ import annotations

import dataclasses

import cbor2
import nacl.public
import nacl.signing
import pytest

from custody import governance as gov
from custody.governance import GovernanceErrorKind as Kind
from custody.policy import Approver, ApproverGroup, Policy

CLUSTER = "test-cluster"


def ed() -> bytes:
    return bytes(nacl.signing.SigningKey.generate().verify_key)


def x() -> bytes:
    return bytes(nacl.public.PrivateKey.generate().public_key)


OFFICERS = tuple(gov.Officer(f"officer-{i}", ed()) for i in (1, 2, 3))


def node(i: int, **changes: object) -> gov.RosterNode:
    n = gov.RosterNode(f"node-{i}", i, ed(), x())
    return dataclasses.replace(n, **changes)


ROSTER = (node(1), node(2), node(3))


def body(**changes: object) -> gov.Governance:
    b = gov.Governance(
        cluster_id=CLUSTER,
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=OFFICERS,
        quorum=2,
        roster=ROSTER,
    )
    return dataclasses.replace(b, **changes)


def malformed(b: gov.Governance, detail: str) -> None:
    with pytest.raises(gov.GovernanceError) as err:
        gov.check_body(b)
    assert err.value.kind is Kind.MALFORMED
    assert err.value.detail == detail, err.value.detail


def bad_decode(data: bytes, detail: str) -> None:
    with pytest.raises(gov.GovernanceError) as err:
        gov.decode_body(data)
    assert err.value.kind is Kind.MALFORMED
    assert detail in err.value.detail, err.value.detail


def test_the_plain_body_checks_and_round_trips() -> None:
    b = body()
    assert gov.check_body(b) is b
    assert gov.decode_body(b.encode()) == b


def test_ids_of_1_and_64_characters_and_nothing_else() -> None:
    for ok in ("a", "A" * 64, "x.y_z:1-2"):
        gov.check_body(body(cluster_id=ok))
    msg = "cluster_id: an id is 1-64 characters of [A-Za-z0-9._:-]"
    for bad in ("", "A" * 65, "a b", "a\n", "é", 7, None):
        malformed(body(cluster_id=bad), msg)
    malformed(
        body(officers=(gov.Officer("o 1", ed()),), quorum=1),
        "officers[0].officer_id: an id is 1-64 characters of [A-Za-z0-9._:-]",
    )
    malformed(
        body(roster=(node(1), node(2, node_id="n/2"))),
        "roster[1].node_id: an id is 1-64 characters of [A-Za-z0-9._:-]",
    )


def test_version_and_previous_chain_the_genesis_only() -> None:
    gov.check_body(body(version=2, previous=b"\x01" * 32))
    for bad in (0, -1, True, 1.0, "1"):
        malformed(body(version=bad), "version: a positive integer")
    for bad in (bytes(31), bytes(33), "00" * 32, None):
        malformed(body(previous=bad), "previous: a 32-byte digest")
    chain = "previous: all zero exactly for version 1 (the genesis)"
    malformed(body(previous=b"\x01" + bytes(31)), chain)  # a genesis that names a parent
    malformed(body(version=2), chain)  # a successor that names none


def test_officers_at_least_one_distinct_ids_and_keys() -> None:
    gov.check_body(body(officers=OFFICERS[:1], quorum=1))
    malformed(body(officers=(), quorum=1), "officers: at least one")
    o1 = OFFICERS[0]
    malformed(
        body(officers=(o1, gov.Officer(o1.officer_id, ed()))),
        "officers: duplicate officer id officer-1",
    )
    malformed(
        body(officers=(o1, gov.Officer("officer-9", o1.public_key))),
        "officer officer-9: public key used by another officer",
    )


def test_ed25519_keys_must_be_32_byte_points_of_large_order() -> None:
    length = "officer officer-1: public_key: an Ed25519 public key is 32 bytes"
    for bad in (bytes(31), ed() + b"\x00", bytearray(ed()), ed().hex()):
        malformed(body(officers=(gov.Officer("officer-1", bad),), quorum=1), length)
    point = (
        "officer officer-1: public_key: not a valid Ed25519 point (off the curve or small order)"
    )
    identity = b"\x01" + bytes(31)  # the neutral element: small order
    for bad in (identity, bytes(32)):
        malformed(body(officers=(gov.Officer("officer-1", bad),), quorum=1), point)
    malformed(
        body(roster=(node(1, sign_pk=identity),)),
        "node node-1: sign_pk: not a valid Ed25519 point (off the curve or small order)",
    )


def test_quorum_between_one_and_the_officers() -> None:
    gov.check_body(body(quorum=1))
    gov.check_body(body(quorum=3))
    for bad in (0, 4, -1, True, 2.0, "2"):
        malformed(body(quorum=bad), "quorum: between 1 and the 3 officers")


def test_party_ids_are_integers_from_1_to_255() -> None:
    gov.check_body(body(roster=(node(1), node(255))))
    for bad in (True, 1.0, "1", None):
        malformed(body(roster=(node(1, party_id=bad),)), "node node-1: party_id is an integer")
    for bad in (0, 256, -1):
        malformed(
            body(roster=(node(1, party_id=bad),)),
            "node node-1: party_id between 1 and 255 (0 is never an id)",
        )


def test_box_keys_are_32_bytes_and_not_zero() -> None:
    msg = "node node-1: box_pk: an X25519 public key is 32 bytes, not all zero"
    for bad in (bytes(32), x()[:31], x() + b"\x00", bytearray(x()), None):
        malformed(body(roster=(node(1, box_pk=bad),)), msg)
    gov.check_body(body(roster=(node(1, box_pk=b"\x01" + bytes(31)),)))


def test_roster_ids_parties_and_identity_keys_are_distinct() -> None:
    a = node(1)
    malformed(body(roster=(a, node(2, node_id="node-1"))), "roster: duplicate node id node-1")
    malformed(body(roster=(a, node(2, party_id=1))), "node node-2: party id 1 already taken")
    shared = "node node-2: identity key shared with another node"
    malformed(body(roster=(a, node(2, sign_pk=a.sign_pk))), shared)
    malformed(body(roster=(a, node(2, box_pk=a.box_pk))), shared)
    # the box key of one as the signing key of another: one set holds both kinds
    b = node(2)
    c = node(3, box_pk=b.sign_pk)
    malformed(body(roster=(a, b, c)), "node node-3: identity key shared with another node")
    # the empty roster (a cluster before its nodes are admitted) is a roster
    gov.check_body(body(roster=()))


def test_raw_signing_keys_of_1_to_128_characters() -> None:
    gov.check_body(body(raw_signing_keys=frozenset({"k", "K" * 128, gov.ALL_KEYS})))
    msg = "raw_signing_keys: key ids of 1-128 characters"
    for bad in ("", "K" * 129, 7):
        malformed(body(raw_signing_keys=frozenset({"k", bad})), msg)


def group(*approvers: Approver) -> Policy:
    return Policy(approver_groups=(ApproverGroup("treasury", tuple(approvers)),))


def test_approver_keys_are_points_and_never_an_officers() -> None:
    gov.check_body(body(policy=group(Approver("alice", ed()))))
    malformed(
        body(policy=group(Approver("alice", OFFICERS[1].public_key))),
        "approver alice: public key is an officer's",
    )
    malformed(
        body(policy=group(Approver("alice", ed()), Approver("bob", b"\x01" + bytes(31)))),
        "approver bob: public_key: not a valid Ed25519 point (off the curve or small order)",
    )


def test_a_passkey_approver_before_them_does_not_end_the_approver_key_checks() -> None:
    from tests.console.authenticator import SoftAuthenticator

    passkey = Approver("carol", b"", SoftAuthenticator().credential)
    b = body(policy=group(passkey, Approver("alice", ed())))
    assert gov.check_body(b).format == gov.FORMAT_WITH_PASSKEYS
    malformed(
        body(policy=group(passkey, Approver("alice", OFFICERS[0].public_key))),
        "approver alice: public key is an officer's",
    )


def test_a_policy_refused_by_check_policy_is_a_malformed_body() -> None:
    a = Approver("alice", ed())
    with pytest.raises(gov.GovernanceError) as err:
        gov.check_body(body(policy=group(a, a)))  # one approver twice
    assert err.value.kind is Kind.MALFORMED and err.value.detail.startswith("policy: ")
    assert isinstance(err.value.__cause__, ValueError)


# -- decode_body: the wire form -----------------------------------------------------------


def fields(b: gov.Governance) -> dict[str, object]:
    value = cbor2.loads(b.encode())
    assert isinstance(value, dict)
    return value


def enc(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True)


def test_decode_body_refuses_what_is_not_canonical_cbor() -> None:
    bad_decode(b"\xff", "body: not CBOR")
    bad_decode(b"", "body: not CBOR")
    raw = fields(body())
    noncanonical = cbor2.dumps(dict(reversed(raw.items())))  # not RFC 8949 4.2.1 order
    assert noncanonical != body().encode()
    bad_decode(noncanonical, "body: CBOR is not in canonical form (RFC 8949 section 4.2.1)")
    bad_decode(cbor2.dumps(cbor2.CBORTag(1, 0)), "body: ")


def test_decode_body_fields_exactly() -> None:
    raw = fields(body())
    bad_decode(enc({**raw, "extra": 1}), "body: expected fields")
    del raw["quorum"]
    bad_decode(enc(raw), "body: expected fields")
    bad_decode(enc([1, 2]), "body: expected fields")
    with pytest.raises(gov.GovernanceError) as err:
        gov.decode_body(enc({**fields(body()), "extra": 1}))
    assert "'extra'" in err.value.detail and "'quorum'" in err.value.detail


def test_decode_body_format_is_1_2_or_3() -> None:
    for fmt in (0, 4, "1", None):
        bad_decode(enc({**fields(body()), "format": fmt}), "format: ")
    # format 1 with a policy field: the field is not one of format 1
    p = body(policy=group(Approver("alice", ed())))
    raw = fields(p)
    assert raw["format"] == gov.FORMAT_WITH_POLICY
    assert gov.decode_body(p.encode()) == p
    bad_decode(enc({**raw, "format": gov.FORMAT}), "body: expected fields")
    # format 3 for a policy without a passkey approver
    bad_decode(
        enc({**raw, "format": gov.FORMAT_WITH_PASSKEYS}), "format: 3 for a document of format 2"
    )


def test_decode_body_refuses_format_2_with_an_empty_policy() -> None:
    raw = fields(body(policy=group(Approver("alice", ed()))))
    raw["policy"] = Policy().to_cbor()
    bad_decode(enc(raw), "format: 2 with an empty policy is format 1")


def test_decode_body_raw_signing_keys_are_distinct_strings() -> None:
    raw = fields(body(raw_signing_keys=frozenset({"a", "b"})))
    assert gov.decode_body(enc(raw)).raw_signing_keys == {"a", "b"}
    for bad in (["a", "a"], ["a", 1], [b"a"]):
        bad_decode(enc({**raw, "raw_signing_keys": bad}), "raw_signing_keys: distinct strings")
    bad_decode(enc({**raw, "raw_signing_keys": "a"}), "raw_signing_keys: a list")
    # the one encoding: the list sorted
    bad_decode(enc({**raw, "raw_signing_keys": ["b", "a"]}), "body: not in the one encoding")


def test_decode_body_officers_and_roster_are_lists_of_pairs_and_quads() -> None:
    raw = fields(body())
    officers = raw["officers"]
    assert isinstance(officers, list)
    bad_decode(enc({**raw, "officers": {"a": 1}}), "officers: a list")
    bad_decode(
        enc({**raw, "officers": [*officers[:1], [*officers[1], 1]]}), "officers[1]: a list of 2"
    )
    bad_decode(enc({**raw, "officers": [officers[0][0]]}), "officers[0]: a list of 2")
    roster = raw["roster"]
    assert isinstance(roster, list)
    bad_decode(enc({**raw, "roster": [roster[0], roster[1][:3]]}), "roster[1]: a list of 4")
    bad_decode(enc({**raw, "roster": [roster[0][:3]]}), "roster[0]: a list of 4")


def test_decode_body_names_a_policy_that_decode_policy_refuses() -> None:
    raw = fields(body(policy=group(Approver("alice", ed()))))
    for bad in ({"rules": []}, [], "policy"):
        with pytest.raises(gov.GovernanceError) as err:
            gov.decode_body(enc({**raw, "policy": bad}))
        assert err.value.kind is Kind.MALFORMED and err.value.detail.startswith("policy: ")
        assert isinstance(err.value.__cause__, ValueError)  # the PolicyError it wraps
