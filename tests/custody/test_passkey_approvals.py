"""Passkey approvals at the function level (issue 15, slice 1): a passkey approver in
governance (format 3, chained after format-2 versions that still verify), approvals as
WebAuthn assertions over the statement's digest, counted exactly like Ed25519 ones, and each
attack refused with its stable code. The authenticator is a software one (an EC P-256 key,
tests/console/authenticator.py); every assertion that counts is also checked by
pyca/cryptography over the bytes WebAuthn L3 section 6.3.3 says are signed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from custody import approvals as ap
from custody import governance as gov
from custody import passkeys as pk
from custody import policy as pol
from custody.approvals import RefusalReason as R
from tests.console.authenticator import ORIGIN, UP, UV, SoftAuthenticator, b64url
from tests.custody.policy.helpers import T0, approvers, evm_tx

F = frozenset
REQ = "sr_0001"
OTHER_REQ = "sr_0002"
INITIATOR = "ops-1"


@pytest.fixture
def world():
    """A v1 (format 2: Ed25519 approvers only) and v2 (format 3: a passkey joins the group,
    signed by the officer) chain, and a 2-of-3 treasury rule."""
    officer = nacl.signing.SigningKey.generate()
    treasury, keys = approvers("treasury", 2)
    rule = pol.Rule(
        "big",
        "approve",
        keys=F({"k1"}),
        approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 2),)),
    )
    v1 = gov.Governance(
        cluster_id="test-cluster",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("officer-1", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
        policy=pol.Policy(rules=(rule,), approver_groups=(treasury,)),
    )
    signed_v1 = gov.unsigned(v1).with_signature(officer, "officer-1")
    state = gov.GovernanceState.from_genesis(gov.decode(signed_v1.encode()))
    alice = SoftAuthenticator()
    group = pol.ApproverGroup(
        "treasury", (*treasury.approvers, pol.Approver("alice", b"", alice.credential))
    )
    v2 = v1.successor(policy=replace(v1.policy, approver_groups=(group,)))
    signed_v2 = gov.unsigned(v2).with_signature(officer, "officer-1")
    g = state.advance(gov.decode(signed_v2.encode()))  # verified like a node does
    intent = evm_tx()
    request = ap.ApprovalRequest(REQ, ap.intent_digest(intent.kind, intent.summary()))
    return {"v1": v1, "g": g, "keys": keys, "alice": alice, "intent": intent, "req": request}


def statement(g, request, who="alice", decision="approve", **over) -> ap.ApprovalStatement:
    st = ap.ApprovalStatement(
        intent_digest=request.intent_digest,
        request_id=request.request_id,
        policy_version=g.version,
        governance_digest=g.digest,
        expires_at=T0 + 600,
        approver_id=who,
        decision=decision,
        initiator=INITIATOR,
    )
    return replace(st, **over)


def count(w, approvals, floor=None, request=None):
    g = w["g"]
    d = pol.decide(g, w["intent"], key_id="k1", initiator=INITIATOR, now=T0)
    assert d.action == "approve"
    return ap.verify_approvals(d, approvals, g, request or w["req"], T0, INITIATOR, floor)


def independently_verified(cred: pk.PasskeyCredential, a: pk.PasskeyAssertion) -> None:
    """pyca/cryptography, from the COSE key's coordinates, over authData || SHA-256(cData)."""
    cose = cbor2.loads(cred.public_key)
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big"), ec.SECP256R1()
    )
    numbers.public_key().verify(
        a.signature,
        a.authenticator_data + hashlib.sha256(a.client_data_json).digest(),
        ec.ECDSA(hashes.SHA256()),
    )


# -- governance -----------------------------------------------------------------------------


def test_a_passkey_approver_makes_format_3_and_older_versions_keep_their_bytes(world) -> None:
    v1, g = world["v1"], world["g"]
    assert cbor2.loads(v1.encode())["format"] == gov.FORMAT_WITH_POLICY == 2
    assert cbor2.loads(g.encode())["format"] == gov.FORMAT_WITH_PASSKEYS == 3
    assert gov.decode_body(g.encode()) == g and gov.decode_body(v1.encode()) == v1
    entry = cbor2.loads(g.encode())["policy"]["approver_groups"][0][1]
    assert ["alice", world["alice"].credential.to_cbor()] in entry
    assert g.approver("alice").passkey == world["alice"].credential
    # a passkey document labelled format 2 is refused, naming the format
    raw = cbor2.loads(g.encode())
    raw["format"] = 2
    with pytest.raises(gov.GovernanceError, match="format: 2 for a document of format 3"):
        gov.decode_body(cbor2.dumps(raw, canonical=True))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"origins": ("https://evil.example",)}, "outside rp_id"),
        ({"origins": ("http://example.com",)}, "not https://host"),
        ({"origins": ()}, "1-8 distinct origins"),
        ({"credential_id": b"short"}, "credential_id: 16-1023 bytes"),
        ({"public_key": b"\xa1\x01\x02"}, "not a supported COSE_Key"),
        ({"rp_id": "Local Host"}, "rp_id: a lower-case host name"),
    ],
)
def test_a_malformed_credential_is_refused_naming_the_field(world, change, message) -> None:
    cred = replace(world["alice"].credential, **change)
    group = pol.ApproverGroup("treasury", (pol.Approver("alice", b"", cred),))
    with pytest.raises(pol.PolicyError, match=message):
        pol.check_policy(pol.Policy(approver_groups=(group,)))


def test_one_credential_cannot_belong_to_two_approvers(world) -> None:
    cred = world["alice"].credential
    group = pol.ApproverGroup(
        "treasury", (pol.Approver("alice", b"", cred), pol.Approver("bob", b"", cred))
    )
    with pytest.raises(pol.PolicyError, match="bob: passkey credential used by another"):
        pol.check_policy(pol.Policy(approver_groups=(group,)))


# -- counting -------------------------------------------------------------------------------


def test_a_passkey_approval_counts_like_a_key_file_approval(world) -> None:
    g, req, alice = world["g"], world["req"], world["alice"]
    st = statement(g, req)
    approval = alice.approve(st)
    wire = approval.encode()
    assert ap.decode_approval(wire) == approval  # the wire form round-trips
    cd = json.loads(approval.assertion.client_data_json)
    assert cd["challenge"] == b64url(hashlib.sha256(ap.APPROVAL_CONTEXT + st.encode()).digest())
    independently_verified(alice.credential, approval.assertion)
    ed = ap.sign_approval(world["keys"]["treasury-1"], statement(g, req, "treasury-1"))
    out = count(world, [wire, ed])
    assert out.satisfied and out.counted == {"treasury": ("alice", "treasury-1")}
    assert out.passkey_counters == (
        ap.PasskeyCounter("alice", alice.credential_id, 1, approval.assertion_digest),
    )
    alone = count(world, [approval])  # one of two: pending, nothing refused
    assert alone.status == "pending" and not alone.refused
    assert alone.missing == (ap.Shortfall("treasury", 1, 2),)


def test_a_passkey_rejection_rejects(world) -> None:
    g, req = world["g"], world["req"]
    no = world["alice"].approve(statement(g, req, decision="reject"))
    yes = [
        ap.sign_approval(world["keys"][w], statement(g, req, w))
        for w in ("treasury-1", "treasury-2")
    ]
    out = count(world, [*yes, no])
    assert out.status == "rejected" and out.rejected_by == ("alice",)


def test_an_authenticator_without_a_counter_is_accepted_again(world) -> None:
    alice = world["alice"]
    alice.use_counter = False  # counter stays 0 (WebAuthn L3 section 6.1.1 allows it)
    a = alice.approve(statement(world["g"], world["req"]))
    assert (
        ap.PasskeyCounter("alice", alice.credential_id, 0, a.assertion_digest)
        in count(world, [a], floor=lambda cid, d: 0).passkey_counters
    )


# -- attacks: each refused with its precise reason -------------------------------------------


def refusal(world, approval, floor=None, request=None) -> ap.Refusal:
    out = count(world, [approval], floor, request)
    assert out.status == "pending" and out.counted == {"treasury": ()}
    assert len(out.refused) == 1 and not out.passkey_counters
    return out.refused[0]


def test_replayed_on_another_request(world) -> None:
    g, req, alice = world["g"], world["req"], world["alice"]
    approval = alice.approve(statement(g, req))
    other = ap.ApprovalRequest(OTHER_REQ, req.intent_digest)
    r = refusal(world, approval, request=other)
    assert r.reason is R.OTHER_REQUEST and "sr_0001" in r.detail
    # the statement swapped for the other request's, the assertion kept: challenge differs
    swapped = ap.PasskeyApproval(statement(g, other), approval.assertion)
    r = refusal(world, swapped, request=other)
    assert r.reason is R.PASSKEY_CHALLENGE and r.approver_id == "alice"


def test_user_verification_cleared(world) -> None:
    a = world["alice"].approve(statement(world["g"], world["req"]), flags=UP)
    r = refusal(world, a)
    assert (r.reason, r.detail) == (
        R.PASSKEY_USER_VERIFICATION,
        "passkey of alice: authenticatorData flag UV is clear",
    )


def test_user_presence_cleared(world) -> None:
    a = world["alice"].approve(statement(world["g"], world["req"]), flags=UV)
    assert refusal(world, a).reason is R.PASSKEY_USER_PRESENCE


def test_another_origin(world) -> None:
    a = world["alice"].approve(
        statement(world["g"], world["req"]), origin="https://console.evil.example"
    )
    r = refusal(world, a)
    assert r.reason is R.PASSKEY_ORIGIN and "https://console.evil.example" in r.detail
    assert ORIGIN in r.detail


def test_cross_origin_frame_and_wrong_type_and_rp_id(world) -> None:
    st = statement(world["g"], world["req"])
    alice = world["alice"]
    assert refusal(world, alice.approve(st, cross_origin=True)).reason is R.PASSKEY_CROSS_ORIGIN
    assert refusal(world, alice.approve(st, type_="webauthn.create")).reason is R.PASSKEY_WRONG_TYPE
    assert refusal(world, alice.approve(st, rp_id="evil.example")).reason is R.PASSKEY_RP_ID


def test_stale_signature_counter(world) -> None:
    alice = world["alice"]
    alice.counter = 41
    a = alice.approve(statement(world["g"], world["req"]))  # counter 42
    r = refusal(world, a, floor=lambda cid, d: 42)
    assert r.reason is R.PASSKEY_STALE_COUNTER and "42 does not exceed 42" in r.detail
    assert refusal(world, a, floor=lambda cid, d: 50).reason is R.PASSKEY_STALE_COUNTER
    assert count(world, [a], floor=lambda cid, d: 41).passkey_counters[0].sign_count == 42


def test_bad_signature(world) -> None:
    g, req, alice = world["g"], world["req"], world["alice"]
    a = alice.approve(statement(g, req))
    sig = bytearray(a.assertion.signature)
    sig[-1] ^= 1
    forged = ap.PasskeyApproval(a.statement, replace(a.assertion, signature=bytes(sig)))
    assert refusal(world, forged).reason is R.PASSKEY_BAD_SIGNATURE
    # another key claiming alice's credential id (a stolen id, not a stolen key)
    mallory = SoftAuthenticator(credential_id=alice.credential_id)
    r = refusal(world, mallory.approve(statement(g, req)))
    assert r.reason is R.PASSKEY_BAD_SIGNATURE and r.approver_id == "alice"
    # a stale counter on a forged assertion is a bad signature first
    assert refusal(world, forged, floor=lambda c, d: 99).reason is R.PASSKEY_BAD_SIGNATURE


def test_flags_tampered_after_signing_is_a_bad_signature(world) -> None:
    a = world["alice"].approve(statement(world["g"], world["req"]), flags=UP)  # UV clear
    data = bytearray(a.assertion.authenticator_data)
    data[32] |= UV  # set UV after the fact
    tampered = ap.PasskeyApproval(a.statement, replace(a.assertion, authenticator_data=bytes(data)))
    assert refusal(world, tampered).reason is R.PASSKEY_BAD_SIGNATURE


def test_wrong_kind_either_way(world) -> None:
    g, req = world["g"], world["req"]
    ed = ap.sign_approval(nacl.signing.SigningKey.generate(), statement(g, req))  # as alice
    r = refusal(world, ed)
    assert (r.reason, r.detail) == (R.PASSKEY_KIND, "alice approves with a passkey, not a key file")
    as_t1 = world["alice"].approve(statement(g, req, "treasury-1"))
    assert refusal(world, as_t1).reason is R.PASSKEY_KIND


def test_another_credential_and_malformed_wire(world) -> None:
    g, req = world["g"], world["req"]
    other = SoftAuthenticator().approve(statement(g, req))
    assert refusal(world, other).reason is R.PASSKEY_UNKNOWN_CREDENTIAL
    good = world["alice"].approve(statement(g, req)).encode()
    raw = cbor2.loads(good)
    raw["webauthn"]["signature"] = b""
    r = refusal(world, cbor2.dumps(raw, canonical=True))
    assert r.reason is R.MALFORMED and "webauthn.signature" in r.detail
    raw = cbor2.loads(good)
    raw["webauthn"]["client_data_json"] = b"\xff\xfe"
    a = ap.decode_approval(cbor2.dumps(raw, canonical=True))
    assert refusal(world, a).reason is R.PASSKEY_MALFORMED


# -- the officers' policy file (custody policy): the entry the console shows -------------------


def test_a_policy_file_takes_the_consoles_passkey_entry_and_round_trips(world) -> None:
    from custody import policy_file as pf

    alice = world["alice"]
    c = alice.credential
    entry = {
        "id": "alice",
        "passkey": {
            "credential_id": b64url(c.credential_id),
            "public_key": c.public_key.hex(),
            "rp_id": c.rp_id,
            "origins": list(c.origins),
        },
    }
    other = SoftAuthenticator()
    doc = pf.print_policy(world["g"].policy)
    group = doc["approver_groups"][0]
    assert entry in group["approvers"]  # the file shows the governance's passkey as entered
    group["approvers"].append({**entry, "id": "bob", "passkey": {
        **entry["passkey"], "credential_id": b64url(other.credential_id),
        "public_key": other.credential.public_key.hex()}})  # fmt: skip
    parsed = pf.parse_policy(doc)
    assert parsed.approver("alice").passkey == c
    assert parsed.approver("bob").passkey == other.credential
    assert pf.print_policy(parsed) == doc
    # the same credential under two ids, and a bad origin, are refused naming the entry
    doc["approver_groups"][0]["approvers"][-1]["passkey"] = entry["passkey"]
    with pytest.raises(pf.PolicyFileError, match="public key already used by approver alice"):
        pf.parse_policy(doc)
    doc["approver_groups"][0]["approvers"][-1]["passkey"] = {
        **entry["passkey"], "origins": ["https://evil.example"]}  # fmt: skip
    with pytest.raises(pf.PolicyFileError, match="outside rp_id"):
        pf.parse_policy(doc)


def test_every_passkey_refusal_is_an_approval_refusal_reason() -> None:
    """Each check verify_assertion can fail has its stable code among RefusalReason (so a
    node's problem type and the coordinator's both name it)."""
    assert {r.value for r in pk.PasskeyRefusal} <= {r.value for r in R}
