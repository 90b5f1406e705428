"""Approvals, the checks mutation testing found untested (issue 16; docs/MUTATION.md).

Pure and fast: the statement's bytes written out by hand from the module docstring (not
by cbor2), the wire form's size bound at 2048 and 2049 bytes, each statement field at its
bound and one past, the intent digest of a summary whose keys are out of canonical order,
the intent of a raw request and of a decoded one, decisions that differ from the governance
in version only or digest only, and every result type frozen. Real Ed25519 signatures
(pynacl), each also checked by pyca/cryptography where a test counts one."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import approvals as ap
from custody import passkeys as pk
from custody import policy as pol
from custody.approvals import RefusalReason as R
from tests.custody.policy.helpers import T0, approvers, evm_tx, governance

F = frozenset
INITIATOR = "ops-1"


@pytest.fixture(scope="module")
def world():
    treasury, keys = approvers("treasury", 2)
    rule = pol.Rule(
        "big",
        "approve",
        keys=F({"k1"}),
        approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 2),)),
    )
    g = governance(pol.Policy(rules=(rule,), approver_groups=(treasury,)), version=2)
    intent = evm_tx()
    request = ap.ApprovalRequest("sr_1", ap.intent_digest(intent.kind, intent.summary()))
    d = pol.decide(g, intent, key_id="k1", initiator=INITIATOR, now=T0)
    assert d.action == "approve"
    return {"g": g, "keys": keys, "req": request, "decision": d}


def statement(w, who="treasury-1", **over) -> ap.ApprovalStatement:
    st = ap.ApprovalStatement(
        intent_digest=w["req"].intent_digest,
        request_id=w["req"].request_id,
        policy_version=w["g"].version,
        governance_digest=w["g"].digest,
        expires_at=T0 + 600,
        approver_id=who,
        decision="approve",
        initiator=INITIATOR,
    )
    return replace(st, **over)


def signed(w, who="treasury-1", **over) -> ap.Approval:
    return ap.sign_approval(w["keys"][who], statement(w, who, **over))


def count(w, approvals, decision=None):
    return ap.verify_approvals(
        decision or w["decision"], approvals, w["g"], w["req"], T0, INITIATOR
    )


# -- the statement's bytes, written out (RFC 8949 section 4.2.1 canonical CBOR) ---------------


def _tstr(s: str) -> bytes:
    assert len(s) < 24
    return bytes([0x60 + len(s)]) + s.encode()


def _bstr32(b: bytes) -> bytes:
    assert len(b) == 32
    return b"\x58\x20" + b


def test_the_statement_bytes_are_the_documented_canonical_map() -> None:
    """Nine fields, keys sorted by encoded length then bytes, ``format`` 1: the bytes an
    approver's signature covers are fixed by the docstring, not by the code that makes them."""
    st = ap.ApprovalStatement(
        intent_digest=bytes(range(32)),
        request_id="sr_1",
        policy_version=7,
        governance_digest=bytes(range(32, 64)),
        expires_at=0x6B49D200,  # 1_800_000_000
        approver_id="ann",
        decision="reject",
        initiator="bob",
    )
    want = (
        b"\xa9"  # map of 9
        + _tstr("format")
        + b"\x01"
        + _tstr("decision")
        + _tstr("reject")
        + _tstr("initiator")
        + _tstr("bob")
        + _tstr("expires_at")
        + b"\x1a\x6b\x49\xd2\x00"
        + _tstr("request_id")
        + _tstr("sr_1")
        + _tstr("approver_id")
        + _tstr("ann")
        + _tstr("intent_digest")
        + _bstr32(bytes(range(32)))
        + _tstr("policy_version")
        + b"\x07"
        + _tstr("governance_digest")
        + _bstr32(bytes(range(32, 64)))
    )
    assert st.encode() == want
    assert st.signed_bytes() == b"tpwc-approval-v1\x00" + want
    # and what a passkey signs over is SHA-256 of exactly those bytes
    assert pk.challenge_for(st.signed_bytes()) == hashlib.sha256(st.signed_bytes()).digest()


def test_a_statement_of_another_format_is_refused(world) -> None:
    a = signed(world)
    raw = cbor2.loads(a.statement.encode())
    for fmt in (0, 2):
        body = cbor2.dumps({**raw, "format": fmt}, canonical=True)
        wire = cbor2.dumps({"statement": body, "signature": a.signature}, canonical=True)
        with pytest.raises(ap.ApprovalError, match="statement.format: not 1"):
            ap.decode_approval(wire)


# -- the intent digest ------------------------------------------------------------------------


def test_the_intent_digest_is_over_the_canonical_map_whatever_the_summary_order() -> None:
    """SHA-256(context || canonical CBOR {"kind", "summary"}): two summaries with the same
    items in another order give one digest, and it is the one written out here."""
    a = ap.intent_digest("raw", {"zz": 1, "message": "00"})
    b = ap.intent_digest("raw", {"message": "00", "zz": 1})
    body = (
        b"\xa2"
        + _tstr("kind")
        + _tstr("raw")
        + _tstr("summary")
        + b"\xa2"
        + _tstr("zz")
        + b"\x01"
        + _tstr("message")
        + _tstr("00")
    )
    want = hashlib.sha256(b"tpwc-intent-digest-v1\x00" + body).digest()
    assert a == b == want


def test_the_intent_of_a_raw_request_is_its_message_and_of_a_decoded_one_its_summary() -> None:
    raw = {"id": "sr_1", "key_id": "k1", "kind": "raw", "message": "00ff"}
    intent, request = ap.request_intent("ed25519", raw)
    assert intent == "raw"
    assert request == ap.ApprovalRequest("sr_1", ap.intent_digest("raw", {"message": "00ff"}))
    tx = evm_tx()
    body = {
        "id": "sr_2",
        "key_id": "k1",
        "kind": "evm-tx",
        "payload": {"tx": "0x" + tx.unsigned.hex()},
    }
    decoded, request = ap.request_intent("ecdsa-secp256k1", body)
    assert not isinstance(decoded, str) and decoded.summary() == tx.summary()
    assert request == ap.ApprovalRequest("sr_2", ap.intent_digest("evm-tx", tx.summary()))


def test_the_intent_of_a_derived_request_binds_its_path() -> None:
    """Issue 13: the summary of a request under a derivation path carries ``derivation``,
    so an approval for the root key (or another path) never counts for it."""
    raw = {"id": "sr_1", "key_id": "k1", "kind": "raw", "message": "00ff"}
    _, root = ap.request_intent("ed25519", raw)
    _, child = ap.request_intent("ed25519", {**raw, "derivation_path": "m/0/1"})
    want = {"message": "00ff", "derivation": {"path": "m/0/1"}}
    assert child == ap.ApprovalRequest("sr_1", ap.intent_digest("raw", want))
    assert child.intent_digest != root.intent_digest


# -- the wire form's bounds -------------------------------------------------------------------


def _passkey_wire(w, pad: int) -> bytes:
    """A passkey approval's wire form whose credential id is ``pad`` bytes, beside a
    1000-byte clientDataJSON and a 400-byte authenticatorData (decoding only: the bytes are
    never verified here)."""
    a = pk.PasskeyAssertion(b"c" * pad, bytes(400), b"x" * 1000, bytes(64))
    return ap.PasskeyApproval(statement(w), a).encode()


def test_the_wire_form_is_at_most_2048_bytes(world) -> None:
    pad = 300 + 2048 - len(_passkey_wire(world, 300))  # one length header size
    exact = _passkey_wire(world, pad)
    assert len(exact) == 2048
    decoded = ap.decode_approval(exact)
    assert isinstance(decoded, ap.PasskeyApproval)
    assert decoded.assertion.credential_id == b"c" * pad
    over = _passkey_wire(world, pad + 1)
    assert len(over) == 2049
    with pytest.raises(ap.ApprovalError, match="approval: bytes of at most 2048"):
        ap.decode_approval(over)
    # an inner statement is held to the same bound, by its own name
    with pytest.raises(ap.ApprovalError, match="statement: bytes of at most 2048"):
        ap._statement(b"\x00" * 2049)


def test_only_bytes_decode(world) -> None:
    wire = signed(world).encode()
    for bad in (wire.hex(), bytearray(wire), memoryview(wire), None):
        with pytest.raises(ap.ApprovalError, match="approval: bytes of at most 2048"):
            ap.decode_approval(bad)  # type: ignore[arg-type]
    raw = cbor2.loads(wire)
    with pytest.raises(ap.ApprovalError, match="statement: bytes of at most"):
        ap.decode_approval(
            cbor2.dumps({**raw, "statement": raw["statement"].hex()}, canonical=True)
        )


def test_bytes_that_are_not_cbor_or_not_canonical_are_named_so(world) -> None:
    wire = signed(world).encode()
    for bad in (b"", b"\xff", wire[:-1], b"\x1c"):
        with pytest.raises(ap.ApprovalError, match="^approval: not CBOR$"):
            ap.decode_approval(bad)
    raw = cbor2.loads(wire)
    loose = cbor2.dumps({"statement": raw["statement"], "signature": raw["signature"]})
    assert loose != wire  # the same map, its keys out of canonical order
    with pytest.raises(ap.ApprovalError, match="^approval: not canonical CBOR$"):
        ap.decode_approval(loose)


def test_the_signature_is_exactly_64_bytes(world) -> None:
    a = signed(world)
    for sig in (a.signature[:63], a.signature + b"\x00", a.signature.hex()):
        wire = cbor2.dumps({"statement": a.statement.encode(), "signature": sig}, canonical=True)
        with pytest.raises(ap.ApprovalError, match="signature: 64 bytes"):
            ap.decode_approval(wire)


def _wire_with(w, **fields) -> bytes:
    a = signed(w)
    raw = cbor2.loads(a.statement.encode())
    body = cbor2.dumps({**raw, **fields}, canonical=True)
    return cbor2.dumps({"statement": body, "signature": a.signature}, canonical=True)


@pytest.mark.parametrize("name", ["intent_digest", "governance_digest"])
def test_the_digests_are_32_bytes(world, name) -> None:
    for bad in (bytes(31), bytes(33), "00" * 32):
        with pytest.raises(ap.ApprovalError, match=f"statement.{name}: 32 bytes"):
            ap.decode_approval(_wire_with(world, **{name: bad}))


@pytest.mark.parametrize("name", ["request_id", "approver_id", "initiator"])
def test_the_names_are_1_to_64_characters(world, name) -> None:
    ok = ap.decode_approval(_wire_with(world, **{name: "a" * 64}))
    assert getattr(ok.statement, name) == "a" * 64
    assert getattr(ap.decode_approval(_wire_with(world, **{name: "a"})).statement, name) == "a"
    for bad in ("", "a" * 65, b"abc", 7):
        with pytest.raises(ap.ApprovalError, match=f"statement.{name}: a string of 1-64"):
            ap.decode_approval(_wire_with(world, **{name: bad}))


@pytest.mark.parametrize("name", ["policy_version", "expires_at"])
def test_the_integers_are_below_2_to_the_63(world, name) -> None:
    for good in (0, 2**63 - 1):
        assert getattr(ap.decode_approval(_wire_with(world, **{name: good})).statement, name) == (
            good
        )
    for bad in (-1, 2**63, True, False, 1.5, "1"):
        with pytest.raises(ap.ApprovalError, match=f"statement.{name}: a non-negative integer"):
            ap.decode_approval(_wire_with(world, **{name: bad}))


def test_the_decision_is_approve_or_reject(world) -> None:
    assert ap.decode_approval(_wire_with(world, decision="reject")).statement.decision == "reject"
    for bad in ("Approve", "", 1):
        with pytest.raises(ap.ApprovalError, match="statement.decision: approve or reject"):
            ap.decode_approval(_wire_with(world, decision=bad))


# -- verification -----------------------------------------------------------------------------


def test_a_decision_of_another_governance_in_version_or_digest_only_rejects(world) -> None:
    both = [signed(world, w) for w in ("treasury-1", "treasury-2")]
    assert count(world, both).satisfied is True
    d = world["decision"]
    for other in (
        replace(d, governance_digest=bytes(32)),  # same version, another document
        replace(d, policy_version=d.policy_version + 1),  # same digest, another version
    ):
        out = count(world, both, other)
        assert (out.status, out.reason) == ("rejected", "approvals-decision-of-other-governance")
        assert out.satisfied is False


def test_an_approve_decision_without_a_requirement_fails_closed(world) -> None:
    d = replace(world["decision"], requirement=None)
    both = [signed(world, w) for w in ("treasury-1", "treasury-2")]
    out = count(world, both, d)
    assert (out.status, out.reason) == ("rejected", "approvals-no-requirement")


def test_ed25519_approvals_record_no_passkey_counter(world) -> None:
    both = [signed(world, w) for w in ("treasury-1", "treasury-2")]
    out = count(world, both)
    assert out.satisfied is True and out.passkey_counters == () and out.refused == ()
    for a in both:
        key = world["g"].approver(a.statement.approver_id).public_key
        Ed25519PublicKey.from_public_bytes(key).verify(a.signature, a.statement.signed_bytes())


def test_a_signature_of_the_wrong_length_or_type_is_a_bad_signature(world) -> None:
    """Built in memory (not decoded), as a caller could: libsodium's length and type
    errors are refusals, not exceptions."""
    a = signed(world)
    for sig in (a.signature[:10], a.signature + b"\x00"):
        out = count(world, [replace(a, signature=sig)])
        assert [(r.approver_id, r.reason) for r in out.refused] == [("treasury-1", R.BAD_SIGNATURE)]
    out = count(world, [replace(a, signature=a.signature.hex())])  # type: ignore[arg-type]
    assert [r.reason for r in out.refused] == [R.BAD_SIGNATURE]


def test_a_group_absent_from_the_counts_has_none() -> None:
    term = pol.GroupQuorum("risk", 1)
    assert ap._term_ok(term, {}) is False
    assert ap._term_ok(pol.Requirement("any", (term,)), {"treasury": 5}) is False
    assert ap._shortfalls(pol.Requirement("all", (pol.GroupQuorum("risk", 2),)), {}) == [
        ap.Shortfall("risk", 2, 2)
    ]


def test_a_rejected_outcome_keeps_what_was_counted_refused_and_recorded(world) -> None:
    yes = signed(world, "treasury-1")
    no = signed(world, "treasury-2", decision="reject")
    forged = replace(signed(world, "treasury-2"), signature=bytes(64))
    out = count(world, [yes, no, forged])
    assert out.status == "rejected" and out.rejected_by == ("treasury-2",)
    assert out.counted == {"treasury": ("treasury-1",)}
    assert [(r.approver_id, r.reason) for r in out.refused] == [("treasury-2", R.BAD_SIGNATURE)]


def test_every_approval_type_is_frozen(world) -> None:
    a = signed(world)
    out = count(world, [a])
    objs = [
        a,
        a.statement,
        ap.PasskeyApproval(a.statement, pk.PasskeyAssertion(bytes(16), bytes(37), b"{}", b"s")),
        ap.PasskeyCounter("x", bytes(16), 1, bytes(32)),
        world["req"],
        ap.Refusal("x", R.EXPIRED, "d"),
        ap.Shortfall("g", 1, 2),
        out,
    ]
    for obj in objs:
        name = dataclasses.fields(obj)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
        if not isinstance(obj, ap.ApprovalOutcome):  # it holds a mapping: not hashable
            hash(obj)


def test_a_signing_key_other_than_the_approvers_is_refused_and_cryptography_agrees(world) -> None:
    st = statement(world)
    mallory = nacl.signing.SigningKey.generate()
    forged = ap.sign_approval(mallory, st)
    out = count(world, [forged])
    assert [r.reason for r in out.refused] == [R.BAD_SIGNATURE]
    from cryptography.exceptions import InvalidSignature

    key = Ed25519PublicKey.from_public_bytes(world["g"].approver("treasury-1").public_key)
    with pytest.raises(InvalidSignature):
        key.verify(forged.signature, st.signed_bytes())


def test_a_rejection_from_a_group_the_requirement_does_not_name_rejects_nothing() -> None:
    """Only a group the requirement names can veto: a risk approver's valid rejection of a
    request that needs treasury approvals is refused as not in a required group, and the
    treasury quorum still counts (as does their approval: it counts for no group)."""
    treasury, tkeys = approvers("treasury", 2)
    risk, rkeys = approvers("risk", 1)
    rule = pol.Rule(
        "t",
        "approve",
        keys=F({"k1"}),
        approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 2),)),
    )
    g = governance(pol.Policy(rules=(rule,), approver_groups=(treasury, risk)))
    intent = evm_tx()
    request = ap.ApprovalRequest("sr_1", ap.intent_digest(intent.kind, intent.summary()))
    w = {"g": g, "keys": {**tkeys, **rkeys}, "req": request}
    d = pol.decide(g, intent, key_id="k1", initiator=INITIATOR, now=T0)
    yes = [signed(w, "treasury-1"), signed(w, "treasury-2")]
    for outsider in (signed(w, "risk-1", decision="reject"), signed(w, "risk-1")):
        out = ap.verify_approvals(d, [*yes, outsider], g, request, T0, INITIATOR)
        assert out.satisfied is True and out.rejected_by == ()
        assert out.counted == {"treasury": ("treasury-1", "treasury-2")}
        assert [(r.approver_id, r.reason) for r in out.refused] == [
            ("risk-1", R.NOT_IN_REQUIRED_GROUP)
        ]
        assert out.refused[0].detail == "risk-1 is in none of ['treasury']"


def test_refused_approvals_before_a_quorum_do_not_stop_the_count(world) -> None:
    """Junk, a forgery and a misdirected approval placed first (a coordinator that pads
    the list): each is refused by name and the quorum after them still counts."""
    yes = [signed(world, "treasury-1").encode(), signed(world, "treasury-2")]
    forged = replace(signed(world, "treasury-1"), signature=bytes(64))
    other = signed(world, "treasury-2", request_id="sr_other")
    out = count(world, [b"\x00", forged, other, *yes])
    assert out.satisfied is True
    assert out.counted == {"treasury": ("treasury-1", "treasury-2")}
    assert [(r.approver_id, r.reason) for r in out.refused] == [
        ("", R.MALFORMED),
        ("treasury-1", R.BAD_SIGNATURE),
        ("treasury-2", R.OTHER_REQUEST),
    ]


def test_an_approver_listed_twice_in_a_group_still_counts_once() -> None:
    """Defence in depth behind check_policy (which refuses the listing since session 23):
    a governance built without that check, whose 2-of-2 group lists treasury-1 twice, is
    not satisfied by treasury-1's one approval."""
    group, keys = approvers("treasury", 2)
    twice = pol.ApproverGroup("treasury", group.approvers[:1] * 2)  # treasury-1, treasury-1
    rule = pol.Rule(
        "big",
        "approve",
        keys=F({"k1"}),
        approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 2),)),
    )
    good = governance(pol.Policy(rules=(rule,), approver_groups=(group,)), version=2)
    g = replace(good, policy=replace(good.policy, approver_groups=(twice,)))  # unchecked
    with pytest.raises(pol.PolicyError, match="twice"):
        pol.check_policy(g.policy)
    intent = evm_tx()
    request = ap.ApprovalRequest("sr_1", ap.intent_digest(intent.kind, intent.summary()))
    d = pol.decide(g, intent, key_id="k1", initiator=INITIATOR, now=T0)
    assert d.action == "approve"
    st = ap.ApprovalStatement(
        intent_digest=request.intent_digest,
        request_id="sr_1",
        policy_version=g.version,
        governance_digest=g.digest,
        expires_at=T0 + 600,
        approver_id="treasury-1",
        decision="approve",
        initiator=INITIATOR,
    )
    out = ap.verify_approvals(
        d, [ap.sign_approval(keys["treasury-1"], st)], g, request, T0, INITIATOR
    )
    assert out.status == "pending", out
    assert out.counted == {"treasury": ("treasury-1",)}
