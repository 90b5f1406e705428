"""Fault hooks passed in (signer_nodes.faults): a hook that fails at a pipeline point, in
process, against real SoftHSM2 and SQLCipher. Before the durable mark nothing is used;
after it the nonce or presignature is burnt and nothing was released (both schemes go
through the same pipeline). The SIGKILL versions are in test_batch, test_crash and
test_rotation (tests/nodes/crashing_node.py)."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from mpc import frost
from signer_nodes.errors import Kind, NodeError
from signer_nodes.faults import NO_FAULTS, POINTS
from tests.nodes.conftest import InProc, public_package


class Crash(Exception):
    pass


class FailAt:
    def __init__(self, point: str) -> None:
        assert point in POINTS
        self.point = point
        self.hits = 0

    def reached(self, point: str) -> None:
        if point == self.point:
            self.hits += 1
            raise Crash(point)


def test_frost_fault_before_and_after_the_mark(inproc: InProc) -> None:
    res = inproc.dkg("ed25519", "fk")
    public = public_package(res, "ed25519")
    suite = frost.ciphersuite("ed25519")
    n1, n2 = inproc.nodes[1], inproc.nodes[2]
    for point, logged in (("sign-before-mark", False), ("sign-after-mark", True)):
        c1, c2 = n1.frost_commitments("fk", 1)[0], n2.frost_commitments("fk", 1)[0]
        req = {"id": point, "key_id": "fk", "kind": "raw", "message": point.encode().hex()}
        comms = [
            frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
            for c in (c1, c2)
        ]
        pkg = frost.signing_package(comms, message_to_sign("ed25519", req)).to_bytes()
        hook = FailAt(point)
        n1.pipeline.faults = hook
        with pytest.raises(Crash):
            n1.frost_sign("fk", c1["nonce_id"], req, pkg, coordinator_verified=True)
        n1.pipeline.faults = NO_FAULTS
        assert hook.hits == 1
        # taken out of memory before the commit: burnt either way, never handed out again;
        # its release entry exists exactly when the fault came after the commit
        assert n1.shares.pool.get(c1["nonce_id"]) is None
        assert n1.store.released(c1["nonce_id"]) is logged
        with pytest.raises(NodeError) as e:
            n1.frost_sign("fk", c1["nonce_id"], req, pkg, coordinator_verified=True)
        assert e.value.kind is Kind.NONCE_USED
    # and a fresh pair of nonces signs
    c1, c2 = n1.frost_commitments("fk", 1)[0], n2.frost_commitments("fk", 1)[0]
    req = {"id": "fresh", "key_id": "fk", "kind": "raw", "message": "00"}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
        for c in (c1, c2)
    ]
    pkg = frost.signing_package(comms, message_to_sign("ed25519", req)).to_bytes()
    shares = [
        frost.SignatureShare.from_bytes(
            n.frost_sign("fk", c["nonce_id"], req, pkg, coordinator_verified=True),
            suite=suite,
        )
        for n, c in ((n1, c1), (n2, c2))
    ]
    sig = frost.aggregate(frost.SigningPackage.from_bytes(pkg, suite=suite), shares, public)
    VerifyKey(bytes.fromhex(res["public_key"])).verify(message_to_sign("ed25519", req), sig)


def test_ecdsa_fault_after_the_mark_burns_the_presignature(inproc: InProc) -> None:
    inproc.dkg("ecdsa-secp256k1", "ek")
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": "ek",
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": [1, 2],
    }
    inproc.run_session(spec)
    pid = inproc.nodes[1].session_state(spec["session_id"])["result"]["presignature_id"]
    req = {"id": "e", "key_id": "ek", "kind": "raw", "message": hashlib.sha256(b"m").hexdigest()}
    n1 = inproc.nodes[1]
    n1.pipeline.faults = FailAt("sign-after-mark")
    with pytest.raises(Crash):
        n1.ecdsa_sign("ek", pid, req, coordinator_verified=True)
    n1.pipeline.faults = NO_FAULTS
    assert n1.shares.pool.get(pid) is None and n1.store.released(pid)
    with pytest.raises(NodeError) as e:
        n1.ecdsa_sign("ek", pid, req, coordinator_verified=True)
    assert e.value.kind is Kind.PRESIGNATURE_USED
