"""Issue 9, items 2 and 4: every released partial signature is in the node's hash-chained
release log (signed head), and the node co-signs an audit checkpoint only if the audit
log chains from its last checkpoint and contains every signature it released since: a
signature released behind the coordinator's back is caught at the next checkpoint."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from nacl.signing import VerifyKey

from custody import auditchain as audit
from custody.signing import message_to_sign
from tests.nodes.conftest import Coordinator, NodeRefused, public_package


class AuditLog:
    """The coordinator's audit chain in the minimal canonical form nodes check."""

    def __init__(self) -> None:
        self.entries: list[audit.AuditEntry] = []

    @property
    def head(self) -> tuple[int, bytes]:
        return (
            (0, audit.ZERO) if not self.entries else (self.entries[-1].seq, self.entries[-1].hash)
        )

    def add(self, kind: str, data: bytes, sign: tuple[bytes, str, list[int]] | None = None) -> None:
        seq, prev = self.head
        digest, key_id, signers = sign if sign else (None, None, None)
        self.entries.append(
            audit.AuditEntry(
                seq + 1,
                prev,
                kind,
                hashlib.sha256(data).digest(),
                digest,
                key_id,
                tuple(signers) if signers else None,
            )
        )

    def signing(self, scheme: str, req: dict[str, Any], signers: list[int]) -> None:
        digest = audit.request_digest(
            req["id"], req["key_id"], req["kind"], message_to_sign(scheme, req)
        )
        self.add("sign", repr(req).encode(), (digest, req["key_id"], signers))

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [audit.entry_wire(e) for e in self.entries if e.seq > seq]


def _checkpoint(cluster: Coordinator, party: int, log: AuditLog, after: int, **over: Any) -> Any:
    seq, head = log.head
    body = {"seq": seq, "head": head.hex(), "entries": log.since(after), **over}
    return cluster.call(cluster.nodes[party], "POST", "/v1/audit/checkpoint", body)


def test_release_log_is_chained_signed_and_checkpoints_catch_hidden_signatures(
    cluster: Coordinator,
) -> None:
    res = cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    log = AuditLog()
    log.add("key-created", b"k1")
    for i in range(2):
        req = {"id": f"r{i}", "key_id": "k1", "kind": "raw", "message": f"{i:02x}"}
        log.signing("ed25519", req, [1, 2])  # written before the nodes are asked
        cluster.frost_sign("ed25519", "k1", [1, 2], req, pub)
    n1 = cluster.nodes[1]
    sign_pk = VerifyKey(bytes.fromhex(n1.info["sign_pk"]))
    # the release log: two entries, hash-chained, head signed by node 1's identity key
    rel = cluster.call(n1, "GET", "/v1/releases?after=0")
    assert [e["seq"] for e in rel["entries"]] == [1, 2]
    prev = audit.ZERO.hex()
    for e in rel["entries"]:
        assert e["prev"] == prev and e["kind"] == "raw" and e["signers"] == [1, 2]
        prev = e["hash"]
    assert rel["head"] == {"seq": 2, "hash": prev}
    sign_pk.verify(
        audit.releases_statement("node-1", 2, bytes.fromhex(prev)), bytes.fromhex(rel["signature"])
    )
    assert cluster.call(n1, "GET", "/v1/releases?after=1")["entries"][0]["seq"] == 2
    # checkpoint 1: chains from nothing, holds both releases -> signed
    cp = _checkpoint(cluster, 1, log, 0)
    seq, head = log.head
    assert (cp["seq"], cp["head"], cp["node_id"]) == (seq, head.hex(), "node-1")
    sign_pk.verify(
        audit.checkpoint_statement("test-cluster", "node-1", seq, head),
        bytes.fromhex(cp["signature"]),
    )
    last = seq
    # a stolen coordinator key drives nodes 1 and 2 directly: a signature with no audit entry
    hidden = {"id": "behind-the-back", "key_id": "k1", "kind": "raw", "message": "ee"}
    cluster.frost_sign("ed25519", "k1", [1, 2], hidden, pub)
    log.add("credential-created", b"cred")
    with pytest.raises(NodeRefused) as e:
        _checkpoint(cluster, 1, log, last)
    assert e.value.status == 409
    assert e.value.problem["type"] == "urn:tpwc:node:checkpoint-missing-releases"
    assert (
        "behind-the-back" in e.value.problem["detail"] and "release 3" in e.value.problem["detail"]
    )
    # rewriting history does not help either
    tampered = log.since(last)
    tampered[0] = {**tampered[0], "data": "00" * 32}  # edited, hash left as it was
    seq, head = log.head
    for entries, words in (
        (tampered, "hash does not match"),
        (log.since(0), "does not follow seq"),  # re-sent from the start: not chained to cp 1
        ([], "entries end at seq"),
    ):
        with pytest.raises(NodeRefused) as e:
            _checkpoint(cluster, 1, log, last, entries=entries)
        assert e.value.problem["type"] == "urn:tpwc:node:checkpoint-unchained", e.value.problem
        assert words in e.value.problem["detail"]
    with pytest.raises(NodeRefused) as e:  # going back
        _checkpoint(cluster, 1, log, 0, seq=1, head=log.entries[0].hash.hex(), entries=[])
    assert e.value.problem["type"] == "urn:tpwc:node:checkpoint-unchained"
    # once the log has the signature (the honest path), the next checkpoint is signed
    log.signing("ed25519", hidden, [1, 2])
    cp2 = _checkpoint(cluster, 1, log, last)
    assert cp2["seq"] == log.head[0]
    assert cluster.call(n1, "GET", "/v1/status")["checkpoint_seq"] == log.head[0]
    # node 3 released nothing: it signs the whole chain at once
    assert _checkpoint(cluster, 3, log, 0)["seq"] == log.head[0]
