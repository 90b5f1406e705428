"""Issue 15 at the nodes: a passkey approver joins the treasury group by an officer-signed
governance version (format 3), and every real node process (HTTP, SoftHSM2, SQLCipher)
verifies the WebAuthn assertion itself. This test plays a compromised coordinator: it holds
the coordinator key and sends each node what it likes. A passkey approval counts like a
key-file one (the ECDSA signature checked by coincurve, the transaction by eth-account);
replayed, UV-cleared, other-origin, stale-counter and forged assertions are refused by every
node with their stable codes and nothing is released. The counter a node accepted is kept
in its store: a second assertion with that counter is refused, a retry of the very same
approval is not taken for one."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from nacl.signing import SigningKey

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from tests.console.authenticator import UP, SoftAuthenticator
from tests.nodes.conftest import Coordinator, NodeRefused
from tests.nodes.test_ecdsa_cluster import presign
from tests.nodes.test_policy_enforcement import (
    ALICE,
    KEY,
    SCHEME,
    _approval,
    _heads,
    _policy,
    _refused_everywhere,
    _request,
    _sign,
    _sign_call,
)


def _statement(request: dict[str, Any], g: gov.Governance, who: str) -> appr.ApprovalStatement:
    _, areq = appr.request_intent(SCHEME, request)
    return appr.ApprovalStatement(
        areq.intent_digest,
        areq.request_id,
        g.version,
        g.digest,
        int(time.time()) + 600,
        who,
        "approve",
        str(request["initiator"]),
    )


def _wire(a: appr.PasskeyApproval) -> str:
    return base64.b64encode(a.encode()).decode()


@pytest.fixture
def governed(cluster: Coordinator) -> dict[str, Any]:
    """An ECDSA key; governance v2: treasury = treasury-1..3 (key files) and alice (passkey)."""
    key = cluster.dkg(SCHEME, KEY, 2, [1, 2, 3])
    treasury = {f"treasury-{i}": SigningKey.generate() for i in (1, 2, 3)}
    base = _policy(int(time.time()), treasury, {"ops-1": SigningKey.generate()})
    alice = SoftAuthenticator()
    groups = tuple(
        pol.ApproverGroup(g.group_id, (*g.approvers, pol.Approver("alice", b"", alice.credential)))
        if g.group_id == "treasury"
        else g
        for g in base.approver_groups
    )
    genesis = gov.decode(cluster.genesis).body
    v2 = genesis.successor(policy=pol.Policy(base.rules, base.allowlists, base.wallets, groups))
    assert v2.format == gov.FORMAT_WITH_PASSKEYS
    cluster.govern(v2)
    for n in cluster.nodes.values():
        assert cluster.call(n, "GET", "/v1/governance")["version"] == 2
    return {"pk": bytes.fromhex(key["public_key"]), "gov": v2, "t": treasury, "alice": alice}


def test_every_node_verifies_passkey_approvals_itself(
    cluster: Coordinator, governed: dict[str, Any]
) -> None:
    g: gov.Governance = governed["gov"]
    alice: SoftAuthenticator = governed["alice"]
    t1 = governed["t"]["treasury-1"]
    big = _request("sr-pk-1", ALICE, 5000)
    other = _request("sr-pk-2", ALICE, 5000)
    pre = presign(cluster, KEY, [1, 2, 3])  # all three sign: each records the counter
    heads = _heads(cluster)

    def with_alice(req: dict[str, Any], approval: appr.PasskeyApproval) -> dict[str, Any]:
        return {**req, "approvals": [_approval(t1, "treasury-1", req, g), _wire(approval)]}

    alice.counter = 10
    replayed = alice.approve(_statement(other, g, "alice"))  # 11, for another request
    no_uv = alice.approve(_statement(big, g, "alice"), flags=UP)
    phished = alice.approve(_statement(big, g, "alice"), origin="https://console.evil.example")
    mallory = SoftAuthenticator(credential_id=alice.credential_id)  # her id, not her key
    forged = mallory.approve(_statement(big, g, "alice"))
    attacks = [
        (with_alice(big, replayed), "approval-other-request", "sr-pk-2"),
        (with_alice(big, no_uv), "passkey-user-not-verified", "flag UV is clear"),
        (with_alice(big, phished), "passkey-wrong-origin", "console.evil.example"),
        (with_alice(big, forged), "passkey-bad-signature", "alice"),
        (
            {**big, "approvals": [_wire(alice.approve(_statement(big, g, "alice")))]},
            "approvals-pending",
            "group treasury needs 1 more of 2",
        ),
    ]
    for request, code, needle in attacks:
        for detail in _refused_everywhere(cluster, pre, request, code):
            assert needle in detail, (code, detail)
    assert _heads(cluster) == heads  # nothing released

    alice.counter = 15
    good = alice.approve(_statement(big, g, "alice"))  # counter 16: above all seen so far
    request = with_alice(big, good)
    _sign(cluster, pre, request, governed["pk"])  # coincurve + eth-account inside
    # a retry of the same approval is not a stale counter (the presignature is spent)
    with pytest.raises(NodeRefused) as e:
        _sign_call(cluster, 1, pre, request)
    assert e.value.problem["type"] != "urn:tpwc:node:passkey-stale-counter", e.value.problem

    # a clone of alice's authenticator, still at counter 16, approves another request
    pre2 = presign(cluster, KEY, [1, 2, 3])
    alice.counter = 15
    clone = alice.approve(_statement(other, g, "alice"))
    cloned = with_alice(other, clone)
    for detail in _refused_everywhere(cluster, pre2, cloned, "passkey-stale-counter"):
        assert "16 does not exceed 16" in detail
    fresh = alice.approve(_statement(other, g, "alice"))  # 17: the real authenticator
    _sign(cluster, pre2, with_alice(other, fresh), governed["pk"])
