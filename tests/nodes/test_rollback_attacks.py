"""Issue 9, item 3: a restored database, token directory or disk snapshot never makes a
nonce or presignature usable again (they live in the node's memory only). Real node
processes over real SoftHSM2 tokens and SQLCipher files; the snapshot is a copy of the
whole data directory (database, WAL, sealed DB key, token) taken while the node runs."""

from __future__ import annotations

import hashlib
import secrets
import shutil
from pathlib import Path

import pytest

from custody.signing import message_to_sign
from mpc import frost
from tests.nodes.conftest import Coordinator, NodeProc, NodeRefused


def _snapshot(node: NodeProc, to: Path) -> None:
    shutil.copytree(node.data_dir, to, ignore=shutil.ignore_patterns("node.lock"))


def _restore(node: NodeProc, snap: Path) -> None:
    node.kill()
    shutil.rmtree(node.data_dir)
    shutil.copytree(snap, node.data_dir)
    node.start()


def _frost_call(
    cluster: Coordinator, party: int, nonce_id: str, req: dict[str, object], pkg: bytes
) -> dict[str, str]:
    return dict(
        cluster.call(
            cluster.nodes[party],
            "POST",
            "/v1/frost/sign",
            {"key_id": "k1", "nonce_id": nonce_id, "request": req, "signing_package": pkg.hex()},
        )
    )


def test_snapshot_restore_cannot_reuse_a_frost_nonce(cluster: Coordinator, tmp_path: Path) -> None:
    cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    suite = frost.ciphersuite("ed25519")
    victim = cluster.nodes[1]
    c1 = cluster.commitments(1, "k1", 1)[0]
    comms = {p: cluster.commitments(p, "k1", 2) for p in (2, 3)}
    # the backup operator snapshots the disk while the nonce is outstanding
    snap = tmp_path / "snapshot"
    _snapshot(victim, snap)

    def package(msg_hex: str, other: dict[str, str]) -> tuple[dict[str, object], bytes]:
        req = {"id": f"r-{msg_hex}", "key_id": "k1", "kind": "raw", "message": msg_hex}
        pkg = frost.signing_package(
            [
                frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
                for c in (c1, other)
            ],
            message_to_sign("ed25519", req),
        ).to_bytes()
        return req, pkg

    req_a, pkg_a = package("aa", comms[2][0])
    first = _frost_call(cluster, 1, c1["nonce_id"], req_a, pkg_a)
    assert first["signature_share"]
    shares = [first["signature_share"]]
    # stop, restore the snapshot (database, token, DB key), restart, same nonce, new message
    _restore(victim, snap)
    req_b, pkg_b = package("bb", comms[3][0])
    with pytest.raises(NodeRefused) as e:
        shares.append(_frost_call(cluster, 1, c1["nonce_id"], req_b, pkg_b)["signature_share"])
    assert e.value.status == 404
    assert e.value.problem["type"] == "urn:tpwc:node:unknown-nonce"
    assert "memory only" in e.value.problem["detail"]
    assert len(shares) == 1  # never two signature shares on one nonce
    st = cluster.call(victim, "GET", "/v1/status")
    assert st["nonces_unused"] == 0 and st["hsm"] == "ok"  # a restart empties the pool
    # nothing of the nonce is on disk for a snapshot to carry
    for f in snap.rglob("*"):
        if f.is_file():
            assert bytes.fromhex(c1["nonce_id"]) not in f.read_bytes()


def test_snapshot_restore_cannot_reuse_a_presignature(cluster: Coordinator, tmp_path: Path) -> None:
    cluster.dkg("ecdsa-secp256k1", "ek", 2, [1, 2, 3])
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": "ek",
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": [1, 2],
    }
    states = cluster.run_session(spec, parties=[1, 2])
    assert all(s["status"] == "done" for s in states.values()), states
    pid = states[1]["result"]["presignature_id"]
    victim = cluster.nodes[1]
    snap = tmp_path / "snapshot"
    _snapshot(victim, snap)

    def sign(msg: bytes) -> dict[str, str]:
        req = {
            "id": f"e-{msg.hex()[:8]}",
            "key_id": "ek",
            "kind": "raw",
            "message": hashlib.sha256(msg).hexdigest(),
        }
        return dict(
            cluster.call(
                victim,
                "POST",
                "/v1/ecdsa/sign",
                {"key_id": "ek", "presignature_id": pid, "request": req},
            )
        )

    partials = [sign(b"first")["partial"]]
    _restore(victim, snap)
    with pytest.raises(NodeRefused) as e:
        partials.append(sign(b"second")["partial"])
    assert e.value.status == 404
    assert e.value.problem["type"] == "urn:tpwc:node:unknown-presignature"
    assert len(partials) == 1
    # the restored node runs a fresh presign and signs again (the coordinator refills)
    again = cluster.run_session({**spec, "session_id": secrets.token_hex(32)}, parties=[1, 2])
    pid = again[1]["result"]["presignature_id"]
    assert sign(b"third")["partial"]
