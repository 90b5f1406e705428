"""Issue 10, item 6 (node side): each release carries the node's receipt attestation, made
after its release-log entry committed; the releasing nodes' attestations form a receipt
that verifies offline against the governance (custody.receipts), single and batch calls,
with the Ed25519 signature checked by pynacl. (In-process nodes: real SoftHSM2, SQLCipher.)"""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import VerifyKey

from custody import governance as gov
from custody import receipts
from custody.signing import message_to_sign
from mpc import frost
from tests.nodes.conftest import INITIATOR, InProc, public_package


def _sign(
    inproc: InProc, key_id: str, request: dict[str, Any], batch: bool
) -> tuple[Any, list[Any], list[Any]]:
    """Parties 1 and 3 sign (one call each, or a batch of one); the signing package, the
    shares and what each node released (bytes carrying ``.receipt``)."""
    suite = frost.ciphersuite("ed25519")
    parties = (1, 3)
    nonces = {p: inproc.nodes[p].frost_commitments(key_id, 1)[0] for p in parties}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p]["commitments"]), suite=suite)
        for p in parties
    ]
    pkg = frost.signing_package(comms, message_to_sign("ed25519", request))
    released = []
    for p in parties:
        node = inproc.nodes[p]
        if batch:
            item = {
                "key_id": key_id,
                "nonce_id": nonces[p]["nonce_id"],
                "request": request,
                "signing_package": pkg.to_bytes().hex(),
            }
            (out,) = node.frost_sign_batch([item], coordinator_verified=True)
        else:
            out = node.frost_sign(
                key_id, nonces[p]["nonce_id"], request, pkg.to_bytes(), coordinator_verified=True
            )
        assert isinstance(out, bytes)
        released.append(out)
    shares = [frost.SignatureShare.from_bytes(bytes(r), suite=suite) for r in released]
    return pkg, shares, released


@pytest.mark.parametrize("batch", [False, True])
def test_a_release_returns_a_receipt_that_verifies(inproc: InProc, batch: bool) -> None:
    res = inproc.dkg("ed25519", "k")
    pub = public_package(res, "ed25519")
    pk = bytes.fromhex(res["public_key"])
    request = {
        "id": f"rc-{int(batch)}",
        "key_id": "k",
        "kind": "message",
        "payload": {"message": "0x" + b"receipt me".hex()},
        "initiator": INITIATOR,
    }
    pkg, shares, released = _sign(inproc, "k", request, batch)
    sig = frost.aggregate(pkg, shares, pub)
    VerifyKey(pk).verify(b"receipt me", sig)  # pynacl, independent of our code
    atts = [r.receipt for r in released]
    (body,) = {a["body"] for a in atts}
    receipt = {
        "format": 1,
        "body": body,
        "nodes": [a["node"] for a in atts],
        "signature": {"public_key": pk.hex(), "signature": sig.hex(), "recovery_id": None},
    }
    governance = gov.decode(inproc.genesis).body
    ok = receipts.verify_receipt(receipt, governance, public_key=pk)
    assert ok.nodes == ("node-1", "node-3") and ok.signature_checked
    assert ok.body.rule == "tests-allow-kinds" and ok.body.approvals == ()
    assert ok.body.signers == (1, 3) and ok.body.message == b"receipt me"
    # each attestation names its node's committed release-log entry
    for p, att in zip((1, 3), atts, strict=True):
        head = inproc.nodes[p].releases(0)["head"]
        assert (att["node"]["release_seq"], att["node"]["release_hash"]) == (
            head["seq"],
            head["hash"],
        )
    # a signature over other bytes does not make a receipt
    other = {**receipt, "signature": {**receipt["signature"], "signature": "00" * 64}}
    with pytest.raises(receipts.ReceiptError) as e:
        receipts.verify_receipt(other, governance)
    assert e.value.code == "receipt-bad-signature"
