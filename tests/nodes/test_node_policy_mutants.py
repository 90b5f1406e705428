"""The node's authorization seam (signer_nodes.policy.authorize), the checks mutation testing
asks to pin (issue 16; docs/MUTATION.md).

Pure (no node, no cluster: the function every signing path calls), real Ed25519 approvals
(pynacl; the counted ones checked by pyca/cryptography): each transport check by its code;
the ``initiator`` and ``approvals`` members at their bounds (64 characters, 64 approvals,
the base64 length of a 2048-byte approval) and one past; base64 that decodes but is not the
canonical encoding; an approver who sent several approvals, one valid beside expired,
misdirected or stale copies whose signatures are also valid (the node must record the
digest of the one that counted); the release history asked for the request's asset under
the request's own key, and not asked at all for a request that moves no asset."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from typing import Any

import nacl.signing
import pytest
import rlp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from custody.signing import message_to_sign
from signer_nodes import policy as npol
from signer_nodes.policy import AuthorizationContext, NotAuthorized, authorize

SCHEME = "ecdsa-secp256k1"
DEST = "0x" + "a1" * 20
NOW = 1_800_000_000
KEYS = {f"t-{i}": nacl.signing.SigningKey.generate() for i in (1, 2, 3)}
GROUP = pol.ApproverGroup("t", tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in KEYS.items()))
POLICY = pol.Policy(
    rules=(
        pol.Rule("msg", "allow", kinds=frozenset({"message"})),
        pol.Rule("small", "allow", kinds=frozenset({"evm-tx"}), max_amount=100),
        pol.Rule(
            "big",
            "approve",
            kinds=frozenset({"evm-tx"}),
            approvals=pol.Requirement("all", (pol.GroupQuorum("t", 2),)),
        ),
    ),
    approver_groups=(GROUP,),
)
GOV = gov.check_body(
    gov.Governance(
        cluster_id="c",
        version=2,
        previous=bytes(range(32)),
        officers=(gov.Officer("o", bytes(nacl.signing.SigningKey.generate().verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=frozenset({"raw-k"}),
        policy=POLICY,
    )
)


def req(value: int = 1000, **extra: Any) -> dict[str, Any]:
    fields = [1, 0, 1, 2, 21_000, bytes.fromhex(DEST[2:]), value, b"", []]
    return {
        "id": "sr-1",
        "key_id": "k",
        "kind": "evm-tx",
        "payload": {"tx": "0x02" + rlp.encode(fields).hex()},
        "initiator": "alice",
        **extra,
    }


def statement(r: dict[str, Any], who: str, **over: Any) -> appr.ApprovalStatement:
    _, areq = appr.request_intent(SCHEME, r)
    st = appr.ApprovalStatement(
        areq.intent_digest,
        areq.request_id,
        GOV.version,
        GOV.digest,
        NOW + 60,
        who,
        "approve",
        "alice",
    )
    return replace(st, **over)


def b64(a: appr.Approval) -> str:
    return base64.b64encode(a.encode()).decode()


def approval(r: dict[str, Any], who: str, **over: Any) -> str:
    return b64(appr.sign_approval(KEYS[who], statement(r, who, **over)))


def ctx(r: dict[str, Any], key: str = "k", **over: Any) -> AuthorizationContext:
    msg = message_to_sign(SCHEME, r)
    c = AuthorizationContext(
        "node-1", key, SCHEME, r, msg, msg, True, GOV.raw_enabled(key), GOV, NOW
    )
    return replace(c, **over)


def refused(c: AuthorizationContext) -> NotAuthorized:
    with pytest.raises(NotAuthorized) as e:
        authorize(c)
    assert str(e.value) == f"{e.value.reason}: {e.value.detail}"
    return e.value


# -- transport and members --------------------------------------------------------------------


def test_each_transport_check_by_its_code() -> None:
    r = req(10)
    assert authorize(ctx(r)).decision.rule_id == "small"
    assert refused(ctx(r, coordinator_verified=False)).reason == "not-coordinator"
    assert refused(ctx(r, key="k2")).reason == "key-mismatch"
    assert refused(ctx(r, requested_message=b"\x00" * 32)).reason == "message-mismatch"
    raw = {"id": "r", "key_id": "k", "kind": "raw", "message": "11" * 32}
    assert refused(ctx(raw)).reason == "raw-not-enabled"
    assert refused(ctx(r, governance=None)).reason == "governance-missing"
    # raw for a key of raw_signing_keys goes without an initiator and moves nothing
    ok = authorize(ctx({**raw, "key_id": "raw-k"}, key="raw-k"))
    assert (ok.initiator, ok.facts, ok.asset, ok.transfers) == (None, None, None, ())


def test_the_initiator_is_1_to_64_characters() -> None:
    assert authorize(ctx(req(10, initiator="a" * 64))).initiator == "a" * 64
    assert authorize(ctx(req(10, initiator="a"))).initiator == "a"
    for bad in ("", "a" * 65, 7, ["alice"]):
        e = refused(ctx(req(10, initiator=bad)))
        assert (e.reason, e.detail) == (
            "initiator-malformed",
            "initiator: a principal id of 1-64 characters",
        )
    no_one = req(10)
    del no_one["initiator"]
    assert refused(ctx(no_one)).reason == "initiator-missing"


def test_at_most_64_approvals_each_a_canonical_base64_string() -> None:
    r = req()
    good = [approval(r, "t-1"), approval(r, "t-2")]
    assert authorize(ctx({**r, "approvals": good + [good[0]] * 62})).decision.rule_id == "big"
    e = refused(ctx({**r, "approvals": good + [good[0]] * 63}))
    assert (e.reason, e.detail) == ("approvals-too-many", "approvals: at most 64, got 65")
    loose = "approvals[1]: not standard padded base64"
    for bad, code, detail in (
        ("AAEC", None, None),  # not an approval: counted as malformed by verify_approvals
        ("AR==", "approval-not-base64", "approvals[1]: not in canonical padded base64"),
        ("AAE", "approval-not-base64", loose),
        ("AA\nEC", "approval-not-base64", loose),  # refused by the alphabet, not re-encoding
        ("AAé=", "approval-not-base64", loose),
        (5, "approvals-malformed", "approvals[1]: a base64 string"),
    ):
        e = refused(ctx({**r, "approvals": [good[0], bad]}))
        assert e.reason == (code or "approval-malformed"), (bad, e)
        if detail is not None:
            assert e.detail == detail, (bad, e)
    assert refused(ctx({**r, "approvals": good[0]})).reason == "approvals-malformed"
    assert refused(ctx({**r, "approvals": None})).reason == "approvals-pending"


def test_an_approval_string_is_at_most_the_base64_length_of_2048_bytes() -> None:
    assert npol.MAX_APPROVAL_B64 == len(base64.b64encode(bytes(appr.MAX_APPROVAL_BYTES))) == 2732
    r = req()
    at = base64.b64encode(bytes(2049)).decode()[:2732]  # 2732 characters, canonical
    assert len(at) == 2732 and base64.b64encode(base64.b64decode(at)).decode() == at
    # decoded, but 2049 bytes: refused by the approval decoder, not by the length check
    assert refused(ctx({**r, "approvals": [at]})).reason == "approval-malformed"
    over = base64.b64encode(bytes(2052)).decode()[:2736]
    e = refused(ctx({**r, "approvals": [over]}))
    assert (e.reason, e.detail) == (
        "approval-too-large",
        "approvals[0]: longer than 2732 base64 characters",
    )


def test_a_malformed_request_and_an_intent_that_cannot_be_stated() -> None:
    bad = req(10, id="")
    c = AuthorizationContext("node-1", "k", SCHEME, bad, b"m", b"m", True, False, GOV, NOW)
    e = refused(c)
    assert e.reason == "request-malformed" and "'id'" in e.detail
    # an ERC-20 transfer that also sends ETH: denied as not understood, with the detail
    data = bytes.fromhex("a9059cbb") + bytes(12) + bytes.fromhex(DEST[2:]) + (5).to_bytes(32, "big")
    fields = [1, 0, 1, 2, 60_000, bytes.fromhex(DEST[2:]), 1, data, []]
    r = req(payload={"tx": "0x02" + rlp.encode(fields).hex()})
    e = refused(ctx(r))
    assert e.reason == "policy-denied"
    assert e.detail == (
        "policy-intent-not-understood (rule default-deny, policy version 2): "
        "tx.value: an ERC-20 call that also sends ETH"
    )
    # a plain denial has no trailing detail
    raw_denied = {
        "id": "m",
        "key_id": "k",
        "kind": "payment",
        "payload": {"a": 1},
        "initiator": "x",
    }
    e = refused(ctx(raw_denied))
    assert e.detail.startswith(
        "policy-no-rule-matched (rule default-deny, policy version 2): no rule"
    )


# -- history ----------------------------------------------------------------------------------


def test_history_is_asked_for_the_asset_under_the_requests_own_key() -> None:
    asked: list[tuple[str, tuple[str, str, bytes]]] = []

    def history(asset: str, exclude: tuple[str, str, bytes]) -> list[pol.Release]:
        asked.append((asset, exclude))
        return []

    r = req(10)
    auth = authorize(ctx(r, history=history))
    _, areq = appr.request_intent(SCHEME, r)
    assert asked == [("ETH", ("sr-1", "k", areq.intent_digest))]
    assert npol.request_key("sr-1", "k", areq.intent_digest) == ("sr-1", "k", areq.intent_digest)
    assert auth.intent_digest == areq.intent_digest and auth.asset == "ETH"
    assert auth.transfers == (pol.Transfer(DEST, 10),)

    def never(asset: str, exclude: tuple[str, str, bytes]) -> list[pol.Release]:
        raise AssertionError("a request that moves no asset has no velocity to count")

    msg = {
        "id": "m",
        "key_id": "k",
        "kind": "message",
        "payload": {"message": "0x6869"},
        "initiator": "a",
    }
    assert authorize(ctx(msg, history=never)).decision.rule_id == "msg"


# -- approvals --------------------------------------------------------------------------------


def test_a_valid_rejection_and_a_shortfall_by_their_codes() -> None:
    r = req()
    no = approval(r, "t-3", decision="reject")
    e = refused(ctx({**r, "approvals": [approval(r, "t-1"), approval(r, "t-2"), no]}))
    assert (e.reason, e.detail) == ("approvals-rejected", "rule big: rejected by t-3")
    e = refused(ctx({**r, "approvals": [approval(r, "t-1")]}))
    assert (e.reason, e.detail) == ("approvals-pending", "rule big: group t needs 1 more of 2")
    junk = base64.b64encode(b"\xa0").decode()
    expired = approval(r, "t-2", expires_at=NOW)
    e = refused(ctx({**r, "approvals": [approval(r, "t-1"), junk, expired]}))
    assert e.reason == "approval-malformed"
    assert e.detail == (
        "rule big: group t needs 1 more of 2; refused: approval-malformed: "
        "approval: fields statement and signature (or webauthn); "
        f"approval-expired (t-2): approval of t-2 expired at {NOW}"
    )


@pytest.mark.parametrize(
    "decoy",
    [
        {"expires_at": NOW},  # expired
        {"request_id": "sr-9"},  # another request
        {"intent_digest": bytes(32)},  # another intent
        {"policy_version": 1},  # an older governance version
        {"governance_digest": bytes(32)},  # another document of this version
        {"initiator": "bob"},  # shown another initiator
    ],
)
def test_the_counted_digest_is_of_the_approval_that_counted(decoy) -> None:
    """An approver who also sent a validly signed copy that does not count (placed first):
    the node records the digest of the one that counted."""
    r = req()
    real = statement(r, "t-1")
    first = b64(appr.sign_approval(KEYS["t-1"], replace(real, **decoy)))
    auth = authorize(ctx({**r, "approvals": [first, approval(r, "t-1"), approval(r, "t-2")]}))
    digests = dict(auth.approvals)
    assert digests["t-1"] == hashlib.sha256(real.signed_bytes()).digest()
    assert sorted(digests) == ["t-1", "t-2"]
    sig = appr.sign_approval(KEYS["t-1"], real).signature
    Ed25519PublicKey.from_public_bytes(GOV.approver("t-1").public_key).verify(
        sig, real.signed_bytes()
    )


def test_of_two_counting_copies_the_first_whose_signature_verifies_is_recorded() -> None:
    r = req()
    a = statement(r, "t-1")
    b = statement(r, "t-1", expires_at=NOW + 120)
    forged = b64(appr.sign_approval(nacl.signing.SigningKey.generate(), b))
    sent = [
        forged,
        approval(r, "t-1"),
        approval(r, "t-1", expires_at=NOW + 120),
        approval(r, "t-2"),
    ]
    auth = authorize(ctx({**r, "approvals": sent}))
    assert dict(auth.approvals)["t-1"] == hashlib.sha256(a.signed_bytes()).digest()
    assert auth.passkey_counters == ()


def test_authorization_types_are_frozen() -> None:
    auth = authorize(ctx(req(10)))
    for obj, name in ((auth, "decision"), (ctx(req(10)), "key_id")):
        with pytest.raises(AttributeError):
            setattr(obj, name, None)


def test_a_context_that_omits_raw_enabled_refuses_raw() -> None:
    """The defaults fail closed: a caller that forgets raw_enabled does not enable raw
    signing, even for a key the governance lists (the node passes the governance's answer)."""
    raw = {"id": "r", "key_id": "raw-k", "kind": "raw", "message": "11" * 32}
    msg = message_to_sign(SCHEME, raw)
    c = AuthorizationContext(
        "node-1", "raw-k", SCHEME, raw, msg, msg, True, governance=GOV, now=NOW
    )
    assert refused(c).reason == "raw-not-enabled"
    assert authorize(replace(c, raw_enabled=True)).decision.reason == pol.Reason.RAW_SIGNING


def test_of_exactly_two_copies_a_forged_first_one_is_not_recorded() -> None:
    """Two candidates: a forged statement of t-1 (another expiry) first, t-1's real one
    second. The recorded digest is the real statement's, not the first candidate's."""
    r = req()
    a = statement(r, "t-1")
    other = statement(r, "t-1", expires_at=NOW + 120)
    forged = b64(appr.sign_approval(nacl.signing.SigningKey.generate(), other))
    auth = authorize(ctx({**r, "approvals": [forged, approval(r, "t-1"), approval(r, "t-2")]}))
    assert dict(auth.approvals)["t-1"] == hashlib.sha256(a.signed_bytes()).digest()


def test_a_raw_signing_key_gains_nothing_for_other_kinds() -> None:
    """raw_signing_keys lets *raw* requests go without an initiator; an evm-tx for the same
    key still needs one, and its velocity still counts the node's history."""
    r = {**req(10), "key_id": "raw-k"}
    del r["initiator"]
    e = refused(ctx(r, key="raw-k"))
    assert e.reason == "initiator-missing"
    asked: list[str] = []

    def history(asset: str, exclude: tuple[str, str, bytes]) -> list[pol.Release]:
        asked.append(asset)
        return []

    auth = authorize(ctx({**r, "initiator": "alice"}, key="raw-k", history=history))
    assert auth.decision.rule_id == "small" and asked == ["ETH"] and auth.facts is not None
