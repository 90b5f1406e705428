"""Issue 10, item 4 (nodes decide): a COMPROMISED COORDINATOR, played by this test (it holds
the coordinator key and calls real node processes over HTTP, SoftHSM2 and SQLCipher
underneath), cannot get a partial signature the policy each node holds does not allow: a
request lacking approvals, with forged, expired, replayed, self- or otherwise misdirected
approvals, the payload swapped behind an approved digest, a destination still in its time
lock, or over a velocity window: every node refuses with a stable code and nothing is
released (release-log heads unchanged). Happy paths sign, checked by eth-account and
coincurve."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from coincurve import PublicKey
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account import Account
from nacl.signing import SigningKey

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from custody import receipts
from custody.kinds.addresses import ethereum_address
from custody.signing import message_to_sign, sign_result
from mpc import dkls23
from mpc.groups import SECP256K1
from tests.nodes.conftest import Coordinator, NodeRefused
from tests.nodes.test_ecdsa_cluster import presign

SCHEME = "ecdsa-secp256k1"
KEY = "pol-k"
ALICE = "0x" + "a1" * 20  # allowlisted, active
LOCKED = "0x" + "10" * 20  # allowlisted, still in its time lock
INITIATOR = "req-alice"
LIMIT = 1000  # wei: up to it, auto-allowed to payees; above it, two treasury approvals
VELOCITY = 2500  # wei per key per hour for the auto-allowed rule


def _policy(now: int, treasury: dict[str, SigningKey], ops: dict[str, SigningKey]) -> pol.Policy:
    def group(name: str, keys: dict[str, SigningKey]) -> pol.ApproverGroup:
        return pol.ApproverGroup(
            name, tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in keys.items())
        )

    payees = pol.Allowlist(
        "payees",
        (
            pol.AllowlistEntry(ALICE, 0, "alice"),
            pol.AllowlistEntry(LOCKED, now + 7 * 86_400, "new payee, time-locked a week"),
        ),
    )
    common: dict[str, Any] = {
        "kinds": frozenset({"evm-tx"}),
        "assets": frozenset({"ETH"}),
        "allowlists": frozenset({"payees"}),
    }
    return pol.Policy(
        rules=(
            pol.Rule(
                "small-to-payees",
                "allow",
                max_amount=LIMIT,
                velocity=(pol.Velocity("key", 3600, VELOCITY),),
                **common,
            ),
            pol.Rule(
                "large-to-payees",
                "approve",
                min_amount=LIMIT + 1,
                approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 2),)),
                **common,
            ),
        ),
        allowlists=(payees,),
        approver_groups=(group("treasury", treasury), group("ops", ops)),
    )


def _tx(to: str, value: int, nonce: int = 0) -> str:
    tx = UnsignedDynamicFeeTransaction(
        chain_id=1,
        nonce=nonce,
        max_priority_fee_per_gas=1,
        max_fee_per_gas=2,
        gas=21_000,
        to=bytes.fromhex(to[2:]),
        value=value,
        data=b"",
        access_list=[],
    )
    return "0x" + tx.get_message_for_signing().hex()


def _request(rid: str, to: str, value: int, **extra: Any) -> dict[str, Any]:
    req = {
        "id": rid,
        "key_id": KEY,
        "kind": "evm-tx",
        "payload": {"tx": _tx(to, value)},
        "initiator": INITIATOR,
    }
    return {**req, **extra}


def _approval(
    key: SigningKey,
    approver: str,
    request: dict[str, Any],
    governance: gov.Governance,
    *,
    expires_at: int | None = None,
    decision: str = "approve",
    **overrides: Any,
) -> str:
    """An approver's signed statement for ``request`` (its wire form, base64)."""
    _, areq = appr.request_intent(SCHEME, request)
    fields: dict[str, Any] = {
        "intent_digest": areq.intent_digest,
        "request_id": areq.request_id,
        "policy_version": governance.version,
        "governance_digest": governance.digest,
        "expires_at": expires_at if expires_at is not None else int(time.time()) + 600,
        "approver_id": approver,
        "decision": decision,
        "initiator": str(request["initiator"]),
        **overrides,
    }
    approval = appr.sign_approval(key, appr.ApprovalStatement(**fields))
    return base64.b64encode(approval.encode()).decode()


def _heads(cluster: Coordinator) -> dict[int, dict[str, Any]]:
    return {p: cluster.call(n, "GET", "/v1/releases")["head"] for p, n in cluster.nodes.items()}


def _sign_call(
    cluster: Coordinator, party: int, pre: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any]:
    return dict(
        cluster.call(
            cluster.nodes[party],
            "POST",
            "/v1/ecdsa/sign",
            {"key_id": KEY, "presignature_id": pre["presignature_id"], "request": request},
        )
    )


def _sign(
    cluster: Coordinator, pre: dict[str, Any], request: dict[str, Any], pk: bytes
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both parties of ``pre`` sign; the combined signature is checked by coincurve and
    the signed transaction recovered by eth-account. Returns the signature (as a receipt
    carries it) and the node answers."""
    answers = [_sign_call(cluster, p, pre, request) for p in pre["participants"]]
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    partials = [
        dkls23.PartialSignature.from_bytes(bytes.fromhex(a["partial"]), sender=p)
        for a, p in zip(answers, pre["participants"], strict=True)
    ]
    digest = message_to_sign(SCHEME, request)
    sig = dkls23.combine_signature(public, partials, digest, SECP256K1.decode_point(pk))
    raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
    recovered = PublicKey.from_signature_and_message(
        raw + bytes([sig.recovery_id]), digest, hasher=None
    )
    assert recovered.format(compressed=True) == PublicKey(pk).format(compressed=True)
    result = sign_result(SCHEME, request, raw, sig.recovery_id, pk)
    assert result is not None
    assert Account.recover_transaction(result["signed_tx"]) == ethereum_address(pk)
    signature = {"public_key": pk.hex(), "signature": raw.hex(), "recovery_id": sig.recovery_id}
    return signature, answers


def _refused_everywhere(
    cluster: Coordinator, pre: dict[str, Any], request: dict[str, Any], code: str
) -> list[str]:
    """Every node (also one that holds no part of ``pre``: the policy is decided first)
    refuses ``request`` with the stable ``code``; the details, one per node."""
    details = []
    for p in cluster.nodes:
        with pytest.raises(NodeRefused) as e:
            _sign_call(cluster, p, pre, request)
        problem = e.value.problem
        assert problem["type"] == f"urn:tpwc:node:{code}", (code, p, problem)
        assert e.value.status in (403, 422), problem
        details.append(str(problem["detail"]))
    return details


@pytest.fixture
def governed(cluster: Coordinator) -> dict[str, Any]:
    """The cluster with an ECDSA key and governance version 2 carrying the policy."""
    key = cluster.dkg(SCHEME, KEY, 2, [1, 2, 3])
    treasury = {f"treasury-{i}": SigningKey.generate() for i in (1, 2, 3)}
    ops = {"ops-1": SigningKey.generate()}
    genesis = gov.decode(cluster.genesis).body
    v2 = genesis.successor(policy=_policy(int(time.time()), treasury, ops))
    cluster.govern(v2)
    for n in cluster.nodes.values():
        assert cluster.call(n, "GET", "/v1/governance")["version"] == 2
    return {"pk": bytes.fromhex(key["public_key"]), "gov": v2, "treasury": treasury, "ops": ops}


def test_a_compromised_coordinator_gets_nothing_the_policy_does_not_allow(
    cluster: Coordinator, governed: dict[str, Any]
) -> None:
    g: gov.Governance = governed["gov"]
    t: dict[str, SigningKey] = governed["treasury"]
    pre = presign(cluster, KEY, [1, 2])
    heads = _heads(cluster)
    big = _request("sr-big", ALICE, 5000)

    def approve(req: dict[str, Any], *who: str, **kw: Any) -> list[str]:
        return [_approval(t[a], a, req, g, **kw) for a in who]

    forger = SigningKey.generate()
    other_req = _request("sr-other", ALICE, 5000)
    swapped = {**big, "payload": {"tx": _tx(ALICE, 9000)}}
    self_req = {**big, "initiator": "treasury-1"}
    attacks: list[tuple[str, dict[str, Any], str, str]] = [
        ("no approvals", big, "approvals-pending", "group treasury needs 2 more of 2"),
        (
            "one approval",
            {**big, "approvals": approve(big, "treasury-1")},
            "approvals-pending",
            "group treasury needs 1 more of 2",
        ),
        (
            "forged",
            {
                **big,
                "approvals": [
                    _approval(forger, "treasury-1", big, g),
                    _approval(forger, "treasury-2", big, g),
                ],
            },
            "approval-bad-signature",
            "treasury-1",
        ),
        (
            "expired",
            {**big, "approvals": approve(big, "treasury-1", "treasury-2", expires_at=1000)},
            "approval-expired",
            "expired",
        ),
        (
            "replayed from another request",
            {**big, "approvals": approve(other_req, "treasury-1", "treasury-2")},
            "approval-other-request",
            "sr-other",
        ),
        (
            "self-approval",
            {**self_req, "approvals": approve(self_req, "treasury-1", "treasury-2")},
            "approval-by-initiator",
            "treasury-1 initiated",
        ),
        (
            "other initiator",
            {
                **big,
                "approvals": approve(big, "treasury-1", "treasury-2", initiator="someone-else"),
            },
            "approval-other-initiator",
            "someone-else",
        ),
        (
            "payload swapped behind the approved digest",
            {**swapped, "approvals": approve(big, "treasury-1", "treasury-2")},
            "approval-other-intent",
            "another intent",
        ),
        (
            "stale policy version",
            {**big, "approvals": approve(big, "treasury-1", "treasury-2", policy_version=1)},
            "approval-stale-policy-version",
            "version 1",
        ),
        (
            "duplicate",
            {**big, "approvals": approve(big, "treasury-1", "treasury-1")},
            "approval-duplicate",
            "twice",
        ),
        (
            "not in a required group",
            {
                **big,
                "approvals": [
                    *approve(big, "treasury-1"),
                    _approval(governed["ops"]["ops-1"], "ops-1", big, g),
                ],
            },
            "approval-not-in-a-required-group",
            "ops-1",
        ),
        (
            "rejected",
            {
                **big,
                "approvals": [
                    *approve(big, "treasury-1", "treasury-2"),
                    *approve(big, "treasury-3", decision="reject"),
                ],
            },
            "approvals-rejected",
            "treasury-3",
        ),
        (
            "time-locked destination",
            _request("sr-locked", LOCKED, 10),
            "policy-denied",
            "policy-no-rule-matched (rule default-deny",
        ),
        (
            "no initiator",
            {k: v for k, v in _request("sr-anon", ALICE, 10).items() if k != "initiator"},
            "initiator-missing",
            "no initiator",
        ),
        (
            "approvals not base64",
            {**big, "approvals": ["not base64!"]},
            "approval-not-base64",
            "approvals[0]",
        ),
        (
            "too many approvals",
            {**big, "approvals": approve(big, "treasury-1") * 65},
            "approvals-too-many",
            "at most 64",
        ),
        (
            "approvals not a list",
            {**big, "approvals": "AAAA"},
            "approvals-malformed",
            "a list",
        ),
    ]
    for name, request, code, words in attacks:
        for detail in _refused_everywhere(cluster, pre, request, code):
            assert words in detail, (name, detail)
    # nothing was released anywhere: release-log heads unchanged, the presignature unused
    assert _heads(cluster) == heads
    for p in (1, 2):
        st = cluster.call(cluster.nodes[p], "GET", "/v1/status")
        assert st["presignatures_used"] == 0 and st["presignatures_unused"] == 1
    # the same request with two valid approvals of the treasury signs
    good = {**big, "approvals": approve(big, "treasury-1", "treasury-3")}
    signature, answers = _sign(cluster, pre, good, governed["pk"])
    for p, answer in zip((1, 2), answers, strict=True):
        entries = cluster.call(cluster.nodes[p], "GET", "/v1/releases")["entries"]
        (entry,) = entries
        assert entry["rule"] == "large-to-payees" and entry["policy_version"] == 2
        assert [a for a, _ in entry["approvals"]] == ["treasury-1", "treasury-3"]
        assert entry["initiator"] == INITIATOR
        assert entry["asset"] == "ETH" and entry["transfers"] == [[ALICE, 5000]]
        # the node's receipt attestation names this very release-log entry
        node = answer["receipt"]["node"]
        assert (node["release_seq"], node["release_hash"]) == (entry["seq"], entry["hash"])
    # phase 2: the nodes' attestations make a receipt that verifies offline against v2
    (body,) = {a["receipt"]["body"] for a in answers}
    receipt = {
        "format": 1,
        "body": body,
        "nodes": [a["receipt"]["node"] for a in answers],
        "signature": signature,
    }
    ok = receipts.verify_receipt(receipt, g, public_key=governed["pk"])
    assert ok.nodes == ("node-1", "node-2") and ok.signature_checked
    assert ok.body.rule == "large-to-payees" and ok.body.signers == (1, 2)
    assert [a for a, _ in ok.body.approvals] == ["treasury-1", "treasury-3"]
    assert ok.body.request_digest.hex() == entry["request_digest"]
    assert ok.body.intent_digest == appr.request_intent(SCHEME, good)[1].intent_digest
    # one node's attestation alone is not a receipt; a tampered rule breaks them all
    with pytest.raises(receipts.ReceiptError) as e:
        receipts.verify_receipt({**receipt, "nodes": receipt["nodes"][:1]}, g)
    assert e.value.code == "receipt-too-few-nodes"


def test_velocity_is_counted_from_each_nodes_own_release_log(
    cluster: Coordinator, governed: dict[str, Any]
) -> None:
    pk = governed["pk"]
    a, a_retry, b, c = (presign(cluster, KEY, s) for s in ([1, 2], [1, 3], [1, 2], [1, 2]))
    small_a = _request("sr-a", ALICE, LIMIT)
    _sign(cluster, a, small_a, pk)  # auto-allowed: small, to an active payee
    # a retry of the same request on another signer subset counts once on node 1
    _sign(cluster, a_retry, small_a, pk)
    # node 1 has 1000 in its window (not 2000): 2000 with this one, within 2500
    _sign(cluster, b, _request("sr-b", ALICE, LIMIT), pk)
    heads = _heads(cluster)
    # a third: 3000 > 2500 on nodes 1 and 2, who took part in both; refused by them
    over = _request("sr-c", ALICE, LIMIT)
    for p in (1, 2):
        with pytest.raises(NodeRefused) as e:
            _sign_call(cluster, p, c, over)
        assert e.value.problem["type"] == "urn:tpwc:node:policy-denied", e.value.problem
        assert "default-deny" in e.value.problem["detail"]
    # node 3 saw only sr-a's retry (1000): it would allow (the documented n/t bound of a
    # per-node window); it holds no part of this presignature, so nothing is released
    with pytest.raises(NodeRefused) as e:
        _sign_call(cluster, 3, c, over)
    assert e.value.problem["type"] == "urn:tpwc:node:unknown-presignature", e.value.problem
    assert _heads(cluster) == heads
    # a restarted node rebuilds its window from its release log: still refused
    n1 = cluster.nodes[1]
    n1.stop()
    n1.start()
    with pytest.raises(NodeRefused) as e:
        _sign_call(cluster, 1, c, over)
    assert e.value.problem["type"] == "urn:tpwc:node:policy-denied", e.value.problem
    assert _heads(cluster) == heads
    # a request above the limit is not "small": it needs approvals (velocity is per rule)
    with pytest.raises(NodeRefused) as e:
        _sign_call(cluster, 2, c, _request("sr-d", ALICE, LIMIT + 1))
    assert e.value.problem["type"] == "urn:tpwc:node:approvals-pending", e.value.problem
