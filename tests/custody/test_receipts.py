"""Authorization receipts (custody.receipts): the format, its verification against the
governance, and ``custody receipt verify``. Node signatures are real Ed25519 (pynacl); the
request signatures real Ed25519 and ECDSA, checked by the module with pynacl/coincurve and
here again by eth-keys where it applies."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import coincurve
import pytest
from eth_keys import keys as eth_keys
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from typer.testing import CliRunner

from custody import governance as gov
from custody import receipts
from custody.cli import app

NODES = {f"node-{i}": SigningKey.generate() for i in (1, 2, 3)}
OFFICER = SigningKey.generate()


def _governance(version: int = 1) -> gov.Governance:
    body = gov.Governance(
        cluster_id="rc-cluster",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("officer-1", bytes(OFFICER.verify_key)),),
        quorum=1,
        roster=tuple(
            gov.RosterNode(n, i, bytes(k.verify_key), bytes(PrivateKey.generate().public_key))
            for i, (n, k) in enumerate(NODES.items(), start=1)
        ),
    )
    while body.version < version:
        body = body.successor()
    return body


GOV = _governance()


def _body(**changes: Any) -> receipts.ReceiptBody:
    base = receipts.ReceiptBody(
        cluster_id="rc-cluster",
        request_id="sr-1",
        key_id="k-ed",
        kind="message",
        scheme="ed25519",
        message=b"pay 10 to bob",
        request_digest=hashlib.sha256(b"r").digest(),
        intent_digest=hashlib.sha256(b"i").digest(),
        policy_version=GOV.version,
        governance_digest=GOV.digest,
        rule="small-to-payees",
        approvals=(("treasury-1", hashlib.sha256(b"a1").digest()),),
        signers=(1, 2),
    )
    return dataclasses.replace(base, **changes)


def _attest(body: bytes, node: str, seq: int = 7, key: SigningKey | None = None) -> Any:
    h = hashlib.sha256(node.encode() + bytes([seq])).digest()
    sig = (key or NODES[node]).sign(receipts.node_statement(body, node, seq, h)).signature
    return receipts.Attestation(node, seq, h, sig)


def _receipt(
    body: receipts.ReceiptBody | None = None,
    nodes: tuple[str, ...] = ("node-1", "node-2"),
    **kw: Any,
) -> receipts.Receipt:
    raw = (body or _body()).encode()
    return receipts.Receipt(raw, tuple(_attest(raw, n) for n in nodes), **kw)


def _refused(receipt: Any, code: str, governance: gov.Governance = GOV, **kw: Any) -> str:
    with pytest.raises(receipts.ReceiptError) as e:
        receipts.verify_receipt(receipt, governance, **kw)
    assert e.value.code == code, e.value
    return e.value.detail


def test_a_receipt_verifies_and_round_trips_its_wire_form() -> None:
    group = SigningKey.generate()
    body = _body()
    sig = group.sign(body.message).signature
    r = _receipt(body, public_key=bytes(group.verify_key), signature=sig)
    ok = receipts.verify_receipt(r, GOV)
    assert ok.nodes == ("node-1", "node-2") and ok.signature_checked
    assert ok.body == body
    wire = json.loads(json.dumps(r.to_json()))
    assert receipts.parse_receipt(wire) == r
    assert receipts.verify_receipt(wire, GOV, public_key=bytes(group.verify_key)).body == body
    # an ECDSA signature over a 32-byte digest, cross-checked by eth-keys
    sk = coincurve.PrivateKey()
    digest = hashlib.sha256(b"tx").digest()
    rec = sk.sign_recoverable(digest, hasher=None)
    assert eth_keys.Signature(rec).verify_msg_hash(
        digest, eth_keys.PublicKey(sk.public_key.format(False)[1:])
    )
    ebody = _body(scheme="ecdsa-secp256k1", message=digest)
    er = _receipt(ebody, public_key=sk.public_key.format(), signature=rec[:64], recovery_id=rec[64])
    assert receipts.verify_receipt(er, GOV).signature_checked
    # without a recovery id too; with the other one it fails
    assert receipts.verify_receipt(dataclasses.replace(er, recovery_id=None), GOV)
    _refused(dataclasses.replace(er, recovery_id=1 - rec[64]), "receipt-bad-signature")


def test_a_tampered_field_breaks_every_node_signature() -> None:
    r = _receipt()
    for field, value in (
        ("rule", "large-to-payees"),
        ("approvals", ()),
        ("message", b"pay 1000 to mallory"),
        ("signers", (1, 3)),
        ("intent_digest", bytes(32)),
        ("request_id", "sr-2"),
    ):
        forged = dataclasses.replace(r, body=_body(**{field: value}).encode())
        detail = _refused(forged, "receipt-bad-node-signature")
        assert "node-" in detail, (field, detail)
    # a node's own fields (seq, hash) are signed too
    a = r.nodes[0]
    moved = dataclasses.replace(r, nodes=(dataclasses.replace(a, release_seq=8), r.nodes[1]))
    assert "node-1" in _refused(moved, "receipt-bad-node-signature")
    # the body's bytes must be the one canonical encoding
    _refused(dataclasses.replace(r, body=r.body + b"\x00"), "receipt-malformed")


def test_wrong_node_too_few_nodes_and_outsiders_are_refused() -> None:
    raw = _body().encode()
    # node-2's attestation signed with node-3's key: the wrong node
    wrong = receipts.Receipt(
        raw, (_attest(raw, "node-1"), _attest(raw, "node-2", key=NODES["node-3"]))
    )
    assert "node-2" in _refused(wrong, "receipt-bad-node-signature")
    # one of a signer set of two
    assert "1 releasing node" in _refused(_receipt(nodes=("node-1",)), "receipt-too-few-nodes")
    _refused(_receipt(nodes=()), "receipt-too-few-nodes")
    # an explicit threshold lowers or raises it
    assert receipts.verify_receipt(_receipt(nodes=("node-1",)), GOV, threshold=1)
    _refused(_receipt(), "receipt-too-few-nodes", threshold=3)
    # a node not in the roster, a node of the roster outside the signer set, twice the same
    rogue = SigningKey.generate()
    outsider = receipts.Receipt(raw, (_attest(raw, "node-1"), _attest(raw, "rogue", key=rogue)))
    assert "rogue" in _refused(outsider, "receipt-node-not-in-roster")
    _refused(_receipt(nodes=("node-1", "node-3")), "receipt-node-not-a-signer")
    _refused(_receipt(nodes=("node-1", "node-1")), "receipt-duplicate-node")
    # a signer set naming a party no roster node has
    _refused(_receipt(_body(signers=(1, 9))), "receipt-signer-not-in-roster")


def test_other_governance_cluster_and_key_are_refused() -> None:
    r = _receipt()
    v2 = _governance(2)
    assert "version 1" in _refused(r, "receipt-other-governance", v2)
    _refused(_receipt(_body(cluster_id="elsewhere")), "receipt-other-cluster")
    group, other = SigningKey.generate(), SigningKey.generate()
    signed = _receipt(
        public_key=bytes(group.verify_key), signature=group.sign(b"pay 10 to bob").signature
    )
    _refused(signed, "receipt-other-key", public_key=bytes(other.verify_key))
    bad = dataclasses.replace(signed, signature=other.sign(b"pay 10 to bob").signature)
    _refused(bad, "receipt-bad-signature")


def test_cli_verifies_and_names_the_refusal(tmp_path: Path) -> None:
    genesis = gov.unsigned(GOV).with_signature(OFFICER, "officer-1").encode()
    gfile = tmp_path / "v1.gov"
    gfile.write_bytes(genesis)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_receipt().to_json()))
    bad.write_text(json.dumps(_receipt(nodes=("node-1",)).to_json()))
    runner = CliRunner()
    r = runner.invoke(app, ["receipt", "verify", str(good), "--governance", str(gfile), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ok"] and out["nodes"] == ["node-1", "node-2"] and out["governance_chained"]
    assert out["body"]["rule"] == "small-to-payees"
    r = runner.invoke(app, ["receipt", "verify", str(good), "--governance", str(gfile)])
    assert r.exit_code == 0 and "receipt verifies" in r.output, r.output
    r = runner.invoke(app, ["receipt", "verify", str(bad), "--governance", str(gfile), "--json"])
    assert r.exit_code == 4 and json.loads(r.output)["code"] == "receipt-too-few-nodes"
    # a governance document not signed by its officers is refused before any receipt
    unsigned = tmp_path / "unsigned.gov"
    unsigned.write_bytes(gov.unsigned(GOV).encode())
    r = runner.invoke(
        app, ["receipt", "verify", str(good), "--governance", str(unsigned), "--json"]
    )
    assert r.exit_code == 4 and json.loads(r.output)["code"] == "governance-under-signed"
