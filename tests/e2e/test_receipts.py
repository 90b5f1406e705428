"""Authorization receipts and node refusals through the HTTP API and real node processes.

* A signed request has a receipt: the body every releasing node attested (intent digest,
  policy version, rule, signer set) and each node's identity signature over it and its own
  release-log entry. It verifies offline against the governance document
  (:func:`custody.receipts.verify_receipt`, and ``custody receipt get|verify`` in a
  separate process); a tampered one does not.
* ``iso20022`` (pacs.008) requests are denied until a rule allows them, then signed over
  the XMLDSig SignedInfo of the message's exclusive C14N digest.
* When the coordinator lets a request through that the nodes refuse (here: a velocity
  window the coordinator cannot count, since only the nodes hold the release history), the
  request fails with the node's stable code; no node is blamed or marked down, and the
  next request within the window signs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nacl.signing
import pytest
from eth_account import Account
from lxml import etree

from custody import policy as pol
from custody import receipts
from custody.client import CustodyError
from custody.cluster import ALLOWLIST, DEMO_ETH_DESTINATIONS
from tests.custody.kinds.test_iso20022 import pacs008
from tests.e2e.conftest import Live, current_governance, install_policy
from tests.e2e.test_kinds import unsigned_1559

ECDSA = "ecdsa-secp256k1"
TO = bytes.fromhex(DEMO_ETH_DESTINATIONS[0][2:])
ETH = 10**18


def _sign_evm(live: Live, value: int, nonce: int) -> object:
    key = live.key(ECDSA)
    tx = unsigned_1559(1, 10**9, TO, value, nonce)
    return live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx}, timeout=60)


def test_a_signed_request_has_a_receipt_that_verifies_offline(live: Live, tmp_path: Path) -> None:
    key = live.key(ECDSA)
    r = _sign_evm(live, ETH // 10, 0)
    assert r.status == "signed", r
    assert r.result is not None
    sender = Account.recover_transaction(r.result.signed_tx)
    assert sender == live.admin.get_key(key.id).addresses["ethereum"]
    receipt = live.auditor.get_receipt(r.id).model_dump(mode="json", exclude_none=True)
    g, raw = current_governance(live)
    ok = receipts.verify_receipt(receipt, g, public_key=bytes.fromhex(key.public_key or ""))
    assert ok.signature_checked and len(ok.nodes) == 2
    assert ok.body.request_id == r.id and ok.body.rule == "eth-under-limit"
    assert ok.body.policy_version == g.version
    assert receipt["audit"]["seq"] >= 1
    # the same with the CLI, in another process, against the genesis chain on disk
    chain = [live.cluster.data_dir / "governance" / "v1.gov"]
    if g.version > 1:
        chain.append(tmp_path / f"v{g.version}.gov")
        chain[-1].write_bytes(raw)
    env = {"CUSTODY_CLUSTER": str(live.cluster.cluster_file)}
    out = tmp_path / "receipt.json"
    cli = [sys.executable, "-m", "custody.cli"]
    got = subprocess.run(  # noqa: S603 - our own CLI, arguments built here
        [*cli, "receipt", "get", r.id, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**_env(), **env},
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    gov_args = [a for p in chain for a in ("--governance", str(p))]
    check = subprocess.run(  # noqa: S603 - our own CLI, arguments built here
        [*cli, "receipt", "verify", str(out), *gov_args, "--public-key", key.public_key or ""],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert check.returncode == 0 and "receipt verifies" in check.stdout, check.stderr
    # a receipt whose body is changed (another rule) verifies no more
    doc = json.loads(out.read_text())
    doc["body"] = doc["body"].replace(b"eth-under-limit".hex(), b"eth-under-limiT".hex())
    with pytest.raises(receipts.ReceiptError) as e:
        receipts.verify_receipt(doc, g)
    assert e.value.code.startswith("receipt-")


def test_a_request_the_nodes_refuse_fails_with_their_code_and_blames_nobody(
    live: Live,
) -> None:
    """A successor policy allows ETH transfers to the allowlist within a velocity window of
    1 ETH per key and hour. The coordinator (which holds no release history) lets a second
    0.6 ETH through; every node counts its own releases and refuses it."""
    cur, _ = current_governance(live)
    velocity = pol.Rule(
        "eth-velocity",
        "allow",
        kinds=frozenset({"evm-tx"}),
        assets=frozenset({"ETH"}),
        allowlists=frozenset({ALLOWLIST}),
        velocity=(pol.Velocity("key", 3600, ETH),),
    )
    policy = pol.Policy(
        rules=(velocity,),
        allowlists=cur.policy.allowlists,
        wallets=cur.policy.wallets,
        approver_groups=cur.policy.approver_groups,
    )
    install_policy(live, policy)
    first = _sign_evm(live, 6 * ETH // 10, 1)
    assert first.status == "signed", first
    second = _sign_evm(live, 6 * ETH // 10, 2)
    assert second.status == "failed", second
    assert second.error is not None
    problem = second.error.model_dump()
    assert problem["type"].endswith("refused-by-node") and problem["status"] == 403, problem
    assert problem["code"] == "policy-denied" and "default-deny" in (problem["detail"] or "")
    assert second.blamed == []
    # over HTTP the refusal is the answer's status: a 403 problem with the request in it
    tx = unsigned_1559(1, 10**9, TO, 6 * ETH // 10, 2)
    body = {"key_id": live.key(ECDSA).id, "kind": "evm-tx", "payload": {"tx": tx}}
    r = live.requester.http.post(
        "/v1/sign-requests", json=body, headers={"Idempotency-Key": "refused-over-http"}
    )
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    refused = r.json()
    assert refused["type"].endswith("refused-by-node") and refused["code"] == "policy-denied"
    assert refused["sign_request"]["status"] == "failed"
    assert r.headers["Location"] == "/v1/sign-requests/" + refused["sign_request"]["id"]
    nodes = live.admin.nodes()
    assert {n.status for n in nodes} == {"healthy"}
    third = _sign_evm(live, 3 * ETH // 10, 2)  # within the window's room: signs
    assert third.status == "signed", third


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}


def test_an_iso20022_payment_is_signed_over_its_canonical_form_once_a_rule_allows_it(
    live: Live,
) -> None:
    """``iso20022`` over the API: the demo-derived policy has no rule for it (the
    coordinator denies at once, 403, nothing stored); a successor version allows EUR
    payments up to 10 000.00; then an Ed25519 key signs the canonical SignedInfo over the
    SHA-256 of the message's exclusive C14N, which the test computes with the W3C algorithm
    itself and PyNaCl verifies; the receipt names the rule."""
    key = live.key("ed25519")
    xml = pacs008(amount="1234.50", ccy="EUR")
    with pytest.raises(CustodyError) as e:
        live.requester.sign(key.id, kind="iso20022", payload={"xml": xml})
    assert e.value.status == 403 and e.value.problem["type"].endswith("policy-denied")
    cur, _ = current_governance(live)
    sepa = pol.Rule(
        "eur-payments",
        "allow",
        kinds=frozenset({"iso20022"}),
        assets=frozenset({"EUR"}),
        max_amount=1_000_000,  # minor units: 10 000.00 EUR
    )
    install_policy(live, replace(cur.policy, rules=(*cur.policy.rules, sepa)))
    r = live.requester.sign(key.id, kind="iso20022", payload={"xml": xml}, timeout=60)
    assert r.status == "signed", r
    root = etree.fromstring(xml.encode())
    c14n = etree.tostring(root.getroottree(), method="c14n", exclusive=True, with_comments=False)
    digest = hashlib.sha256(c14n).digest()
    # the nodes signed the canonical XMLDSig SignedInfo over that digest (custody.xmldsig)
    signed_info = etree.fromstring(bytes.fromhex(r.message or ""))
    value = signed_info.findtext(".//{http://www.w3.org/2000/09/xmldsig#}DigestValue")
    assert base64.b64decode(value or "") == digest
    assert etree.tostring(signed_info, method="c14n", exclusive=True).hex() == r.message
    nacl.signing.VerifyKey(bytes.fromhex(key.public_key or "")).verify(
        bytes.fromhex(r.message or ""), bytes.fromhex(r.signature or "")
    )
    g, _ = current_governance(live)
    receipt = live.auditor.get_receipt(r.id).model_dump(mode="json", exclude_none=True)
    assert receipts.verify_receipt(receipt, g).body.rule == "eur-payments"
    too_big = pacs008(msg_id="MSG-2", amount="10000.01", ccy="EUR")
    with pytest.raises(CustodyError) as e:
        live.requester.sign(key.id, kind="iso20022", payload={"xml": too_big})
    assert e.value.status == 403
