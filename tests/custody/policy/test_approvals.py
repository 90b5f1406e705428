"""Approvals: quorum counting, AND/OR groups, expiry, rejection, the initiator rule, and
forged, misdirected and replayed approvals refused. Real Ed25519 signatures (pynacl),
checked independently with pyca/cryptography."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import approvals as ap
from custody import governance as gov
from custody import policy as pol
from custody.approvals import RefusalReason as R
from tests.custody.policy.helpers import T0, approvers, evm_tx, governance

F = frozenset
REQ = "sr_0001"
INITIATOR = "treasury-1"  # an approver who also initiated the request


@pytest.fixture
def setup():
    treasury, tkeys = approvers("treasury", 3)
    risk, rkeys = approvers("risk", 2)
    keys = {**tkeys, **rkeys}

    def requirement(op, *terms):
        return pol.Requirement(op, tuple(terms))

    both = requirement("all", pol.GroupQuorum("treasury", 2), pol.GroupQuorum("risk", 1))
    either = requirement("any", pol.GroupQuorum("treasury", 2), pol.GroupQuorum("risk", 2))
    nested = requirement(
        "any",
        pol.GroupQuorum("treasury", 3),
        requirement("all", pol.GroupQuorum("treasury", 1), pol.GroupQuorum("risk", 1)),
    )
    policy = pol.Policy(
        rules=(
            pol.Rule("both", "approve", keys=F({"k-both"}), approvals=both),
            pol.Rule("either", "approve", keys=F({"k-either"}), approvals=either),
            pol.Rule("nested", "approve", keys=F({"k-nested"}), approvals=nested),
            pol.Rule("auto", "allow", keys=F({"k-auto"})),
        ),
        approver_groups=(treasury, risk),
    )
    g = governance(policy, version=3)
    intent = evm_tx()
    request = ap.ApprovalRequest(REQ, ap.intent_digest(intent.kind, intent.summary()))
    return g, keys, request, intent


def decision(g, key_id: str, intent) -> pol.Decision:
    return pol.decide(g, intent, key_id=key_id, initiator=INITIATOR, now=T0)


def approve(keys, who, g, request, *, decision="approve", expires=T0 + 600, **over) -> ap.Approval:
    st = ap.ApprovalStatement(
        intent_digest=request.intent_digest,
        request_id=request.request_id,
        policy_version=g.version,
        governance_digest=g.digest,
        expires_at=expires,
        approver_id=who,
        decision=decision,
        initiator=INITIATOR,
    )
    return ap.sign_approval(keys[who], replace(st, **over))


def check(g, key_id, intent, request, approvals, now=T0):
    return ap.verify_approvals(decision(g, key_id, intent), approvals, g, request, now, INITIATOR)


def test_and_of_groups_counts_each_quorum_and_says_what_is_missing(setup) -> None:
    g, keys, req, intent = setup
    out = check(g, "k-both", intent, req, [approve(keys, "treasury-2", g, req)])
    assert (out.status, out.reason) == ("pending", "approvals-pending")
    assert set(out.missing) == {ap.Shortfall("treasury", 1, 2), ap.Shortfall("risk", 1, 1)}
    assert out.counted == {"treasury": ("treasury-2",), "risk": ()}
    more = [approve(keys, a, g, req) for a in ("treasury-2", "treasury-3")]
    assert check(g, "k-both", intent, req, more).missing == (ap.Shortfall("risk", 1, 1),)
    out = check(g, "k-both", intent, req, [*more, approve(keys, "risk-1", g, req)])
    assert out.satisfied and out.reason == "approvals-satisfied" and not out.refused
    # each signature also verifies under pyca/cryptography, over the documented bytes
    for a in (*more, approve(keys, "risk-1", g, req)):
        pk = Ed25519PublicKey.from_public_bytes(g.approver(a.statement.approver_id).public_key)
        pk.verify(a.signature, ap.APPROVAL_CONTEXT + a.statement.encode())
        pk.verify(a.signature, b"tpwc-approval-v1\x00" + a.statement.encode())


def test_or_of_groups_and_one_level_of_nesting(setup) -> None:
    g, keys, req, intent = setup
    assert check(
        g, "k-either", intent, req, [approve(keys, a, g, req) for a in ("risk-1", "risk-2")]
    ).satisfied
    assert check(
        g, "k-either", intent, req, [approve(keys, a, g, req) for a in ("treasury-2", "treasury-3")]
    ).satisfied
    out = check(
        g, "k-either", intent, req, [approve(keys, a, g, req) for a in ("treasury-2", "risk-1")]
    )
    assert out.status == "pending"
    assert set(out.missing) == {ap.Shortfall("treasury", 1, 2), ap.Shortfall("risk", 1, 2)}
    assert check(
        g, "k-nested", intent, req, [approve(keys, a, g, req) for a in ("treasury-2", "risk-2")]
    ).satisfied
    out = check(g, "k-nested", intent, req, [approve(keys, "treasury-2", g, req)])
    assert out.status == "pending" and ap.Shortfall("risk", 1, 1) in out.missing


def test_the_initiator_never_counts_and_duplicates_count_once(setup) -> None:
    g, keys, req, intent = setup
    mine = approve(keys, INITIATOR, g, req)
    twice = [
        approve(keys, "treasury-2", g, req),
        approve(keys, "treasury-2", g, req, expires=T0 + 900),
    ]
    out = check(g, "k-both", intent, req, [mine, *twice, approve(keys, "risk-1", g, req)])
    assert out.status == "pending" and out.missing == (ap.Shortfall("treasury", 1, 2),)
    assert [(r.approver_id, r.reason) for r in out.refused] == [
        (INITIATOR, R.INITIATOR),
        ("treasury-2", R.DUPLICATE),
    ]


def test_an_approval_shown_another_initiator_does_not_count(setup) -> None:
    """A coordinator that renames the initiator after approval (to let the real initiator's
    own approval count) spoils every approval: each signs the initiator it was shown."""
    g, keys, req, intent = setup
    shown = [approve(keys, a, g, req, initiator="someone-else") for a in ("treasury-2", "risk-1")]
    out = check(g, "k-both", intent, req, shown)
    assert out.status == "pending"
    assert {r.reason for r in out.refused} == {R.OTHER_INITIATOR}


def test_one_rejection_from_a_required_group_rejects(setup) -> None:
    g, keys, req, intent = setup
    yes = [approve(keys, a, g, req) for a in ("treasury-2", "treasury-3", "risk-1")]
    out = check(
        g, "k-both", intent, req, [*yes, approve(keys, "risk-2", g, req, decision="reject")]
    )
    assert (out.status, out.reason, out.rejected_by) == (
        "rejected",
        "approvals-rejected",
        ("risk-2",),
    )
    # approving and rejecting is rejecting
    out = check(
        g, "k-both", intent, req, [*yes, approve(keys, "risk-1", g, req, decision="reject")]
    )
    assert out.status == "rejected" and out.rejected_by == ("risk-1",)
    # a forged or expired rejection rejects nothing
    forged = approve(keys, "risk-2", g, req, decision="reject")
    forged = replace(forged, signature=bytes(64))
    expired = approve(keys, "risk-2", g, req, decision="reject", expires=T0)
    out = check(g, "k-both", intent, req, [*yes, forged, expired])
    assert out.satisfied and {r.reason for r in out.refused} == {R.BAD_SIGNATURE, R.EXPIRED}


def test_expiry_boundary(setup) -> None:
    g, keys, req, intent = setup
    approvals = [
        approve(keys, a, g, req, expires=T0 + 10) for a in ("treasury-2", "treasury-3", "risk-1")
    ]
    assert check(g, "k-both", intent, req, approvals, now=T0 + 9).satisfied
    out = check(g, "k-both", intent, req, approvals, now=T0 + 10)
    assert out.status == "pending"
    assert [(r.approver_id, r.reason) for r in out.refused] == [
        ("treasury-2", R.EXPIRED),
        ("treasury-3", R.EXPIRED),
        ("risk-1", R.EXPIRED),
    ]
    assert "risk-1" in out.refused[2].detail


def test_forged_misdirected_and_replayed_approvals_are_refused(setup) -> None:
    g, keys, req, intent = setup
    stranger = nacl.signing.SigningKey.generate()
    other_intent = evm_tx(value=2 * 10**18)
    old = governance(g.policy, version=2)
    cases = [
        (replace(approve(keys, "risk-1", g, req), signature=bytes(64)), R.BAD_SIGNATURE),
        (ap.sign_approval(stranger, approve(keys, "risk-1", g, req).statement), R.BAD_SIGNATURE),
        (approve({"mallory": stranger}, "mallory", g, req), R.UNKNOWN_APPROVER),
        (approve(keys, "risk-1", g, req, request_id="sr_other"), R.OTHER_REQUEST),
        (
            approve(
                keys,
                "risk-1",
                g,
                req,
                intent_digest=ap.intent_digest("evm-tx", other_intent.summary()),
            ),
            R.OTHER_INTENT,
        ),
        (
            approve(keys, "risk-1", g, req, policy_version=2, governance_digest=old.digest),
            R.STALE_POLICY,
        ),
        (approve(keys, "risk-1", g, req, governance_digest=bytes(32)), R.OTHER_GOVERNANCE),
    ]
    yes = [approve(keys, a, g, req) for a in ("treasury-2", "treasury-3")]
    for bad, reason in cases:
        out = check(g, "k-both", intent, req, [*yes, bad])
        assert out.status == "pending", reason
        assert [(r.approver_id, r.reason) for r in out.refused] == [
            (bad.statement.approver_id, reason)
        ]
    # a statement edited after signing does not verify
    edited = approve(keys, "risk-1", g, req, expires=T0 + 1)
    edited = replace(edited, statement=replace(edited.statement, expires_at=T0 + 10**6))
    assert check(g, "k-both", intent, req, [*yes, edited]).refused[0].reason == R.BAD_SIGNATURE


def test_decisions_outside_approve_and_of_other_governance(setup) -> None:
    g, keys, req, intent = setup
    assert check(g, "k-auto", intent, req, []).reason == "approvals-not-required"
    out = check(g, "k-none", intent, req, [approve(keys, "risk-1", g, req)])
    assert (out.status, out.reason) == ("rejected", "approvals-policy-denied")
    newer = g.successor()
    d = decision(g, "k-both", intent)
    all_yes = [approve(keys, a, g, req) for a in ("treasury-2", "treasury-3", "risk-1")]
    out = ap.verify_approvals(d, all_yes, newer, req, T0, INITIATOR)
    assert (out.status, out.reason) == ("rejected", "approvals-decision-of-other-governance")
    # approvals made under the older version are replays once a node holds the newer one
    out = check(newer, "k-both", intent, req, all_yes)
    assert out.status == "pending" and {r.reason for r in out.refused} == {R.STALE_POLICY}


def test_wire_form_round_trips_and_is_strict(setup) -> None:
    g, keys, req, intent = setup
    a = approve(keys, "risk-1", g, req)
    assert ap.decode_approval(a.encode()) == a
    st = cbor2.loads(a.statement.encode())
    assert set(st) == {
        "format",
        "intent_digest",
        "request_id",
        "policy_version",
        "governance_digest",
        "expires_at",
        "approver_id",
        "decision",
        "initiator",
    }
    yes = [approve(keys, x, g, req).encode() for x in ("treasury-2", "treasury-3")]
    assert check(g, "k-both", intent, req, [*yes, a.encode()]).satisfied
    bad_cases = [
        b"\x00",
        cbor2.dumps(
            {"statement": a.statement.encode(), "signature": a.signature, "x": 1}, canonical=True
        ),
        cbor2.dumps(
            {
                "statement": cbor2.dumps({**st, "decision": "maybe"}, canonical=True),
                "signature": a.signature,
            },
            canonical=True,
        ),
        cbor2.dumps(
            {"statement": cbor2.dumps({**st, "note": 1}, canonical=True), "signature": a.signature},
            canonical=True,
        ),
        cbor2.dumps({"statement": a.statement.encode(), "signature": a.signature}),  # not canonical
    ]
    for raw in bad_cases:
        with pytest.raises(ap.ApprovalError):
            ap.decode_approval(raw)
    out = check(g, "k-both", intent, req, [*yes, b"\x00"])
    assert out.status == "pending" and out.refused[0].reason == R.MALFORMED


def test_approver_key_files_share_the_officer_mechanism_and_never_mix() -> None:
    approver, blob = gov.create_approver_key("ann", b"correct horse", cost=gov.INTERACTIVE)
    assert gov.read_approver_public(blob) == approver
    opened, signer = gov.open_approver_key(blob, b"correct horse")
    assert opened == approver and bytes(signer.verify_key) == approver.public_key
    with pytest.raises(gov.OfficerKeyError, match="wrong passphrase"):
        gov.open_approver_key(blob, b"wrong horse!")
    with pytest.raises(gov.KeyFileError, match="approver key file"):
        gov.read_officer_public(blob)
    officer, oblob = gov.create_officer_key("olga", b"correct horse", cost=gov.INTERACTIVE)
    with pytest.raises(gov.OfficerKeyError, match="officer key file"):
        gov.open_approver_key(oblob, b"correct horse")
    assert gov.open_officer_key(oblob, b"correct horse")[0] == officer
    header = cbor2.loads(cbor2.loads(blob)["header"])
    assert header["format"] == "tpwc-approver-key-v1" and header["approver_id"] == "ann"
