"""DKLs23 ECDSA through real node processes: keygen, presign, one-round sign; coincurve verifies."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from coincurve import PublicKey

from mpc import dkls23
from mpc.groups import SECP256K1
from tests.nodes.conftest import Coordinator, NodeRefused


def presign(cluster: Coordinator, key_id: str, signers: list[int]) -> dict:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": signers,
    }
    res = cluster.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    results = [r["result"] for r in res.values()]
    assert all(r == results[0] for r in results)
    return results[0]


def test_ecdsa_keygen_presign_sign(cluster: Coordinator) -> None:
    key = cluster.dkg("ecdsa-secp256k1", "eth-1", 2, [1, 2, 3])
    pk = SECP256K1.decode_point(bytes.fromhex(key["public_key"]))
    for signers in ([1, 2], [2, 3]):
        pre = presign(cluster, "eth-1", signers)
        public = dkls23.PresignaturePublic(
            bytes.fromhex(pre["presignature_id"]),
            bytes.fromhex(pre["dkls23_key_id"]),
            bytes.fromhex(pre["session_id"]),
            tuple(pre["participants"]),
            SECP256K1.decode_point(bytes.fromhex(pre["R"])),
        )
        digest = hashlib.sha256(b"tx" + bytes(signers)).digest()
        req = {"id": f"e{signers[0]}", "key_id": "eth-1", "kind": "raw", "message": digest.hex()}
        partials = []
        for p in signers:
            r = cluster.call(
                cluster.nodes[p],
                "POST",
                "/v1/ecdsa/sign",
                {"key_id": "eth-1", "presignature_id": pre["presignature_id"], "request": req},
            )
            partials.append(
                dkls23.PartialSignature.from_bytes(bytes.fromhex(r["partial"]), sender=p)
            )
        sig = dkls23.combine_signature(public, partials, digest, pk)
        assert PublicKey(bytes.fromhex(key["public_key"])).verify(sig.to_der(), digest, hasher=None)
        # a presignature is single use, even for the same request
        with pytest.raises(NodeRefused) as e:
            cluster.call(
                cluster.nodes[signers[0]],
                "POST",
                "/v1/ecdsa/sign",
                {"key_id": "eth-1", "presignature_id": pre["presignature_id"], "request": req},
            )
        assert e.value.status == 409
    st = cluster.call(cluster.nodes[2], "GET", "/v1/status")
    assert st["presignatures_used"] == 2 and st["presignatures_unused"] == 0
