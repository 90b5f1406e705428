"""Batched DKLs23 presigning on real nodes (issue 13): ``presign_count`` k in one session.

Real node processes: one batch session gives k presignatures every party reports alike;
each signs once (coincurve verifies) and a second use of any of them is refused by the
nodes' durable single-use check. In-process nodes (real SoftHSM2 tokens and SQLCipher
files): a malicious node that cheats in one instance fails the whole batch, is named, its
pair with the honest node is retired exactly as after a single presign, and the honest
node keeps no presignature of the failed batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import pytest
from coincurve import PublicKey

from mpc import dkls23
from mpc.dkls23.batch import instance_session_id
from mpc.errors import MpcError
from mpc.groups import SECP256K1
from mpc.wire import Message
from signer_nodes.errors import NodeError
from signer_nodes.protocols import ProtocolSession, SessionFactory
from signer_nodes.specs import SessionSpec
from tests.nodes.conftest import Coordinator, InProc, NodeRefused


def _spec(key_id: str, parties: list[int], count: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": len(parties),
        "participants": parties,
    }
    if count is not None:
        spec["presign_count"] = count
    return spec


def _sign(cluster: Coordinator, p: int, key_id: str, pid: str, req: dict[str, Any]) -> Any:
    r = cluster.call(
        cluster.nodes[p],
        "POST",
        "/v1/ecdsa/sign",
        {"key_id": key_id, "presignature_id": pid, "request": req},
    )
    return dkls23.PartialSignature.from_bytes(bytes.fromhex(r["partial"]), sender=p)


def test_batch_presign_on_real_nodes_signs_each_once(cluster: Coordinator) -> None:
    key = cluster.dkg("ecdsa-secp256k1", "eth-1", 2, [1, 2, 3])
    pk_bytes = bytes.fromhex(key["public_key"])
    pk = SECP256K1.decode_point(pk_bytes)
    signers = [1, 3]
    spec = _spec("eth-1", signers, 3)
    res = cluster.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    results = [r["result"] for r in res.values()]
    assert all(r == results[0] for r in results)
    out = results[0]
    assert out["presign_count"] == 3 and len(out["presignatures"]) == 3
    ids = [it["presignature_id"] for it in out["presignatures"]]
    assert len(set(ids)) == 3 and len({it["R"] for it in out["presignatures"]}) == 3
    before = cluster.call(cluster.nodes[3], "GET", "/v1/status")
    assert before["presignatures_unused"] == 3

    for k, it in enumerate(out["presignatures"]):
        sid_k = instance_session_id(bytes.fromhex(spec["session_id"]), 3, k)
        public = dkls23.PresignaturePublic(
            bytes.fromhex(it["presignature_id"]),
            bytes.fromhex(out["dkls23_key_id"]),
            sid_k,
            tuple(signers),
            SECP256K1.decode_point(bytes.fromhex(it["R"])),
        )
        assert public.presignature_id == dkls23.presignature_id_of(sid_k, public.key_id, signers)
        digest = hashlib.sha256(b"batch tx %d" % k).digest()
        req = {"id": f"b{k}", "key_id": "eth-1", "kind": "raw", "message": digest.hex()}
        partials = [_sign(cluster, p, "eth-1", it["presignature_id"], req) for p in signers]
        sig = dkls23.combine_signature(public, partials, digest, pk)
        assert PublicKey(pk_bytes).verify(sig.to_der(), digest, hasher=None)

    # attack: a presignature of the batch used a second time (same or another request)
    other = hashlib.sha256(b"second use").digest()
    for p in signers:
        for req in (
            {"id": "b0", "key_id": "eth-1", "kind": "raw", "message": digest.hex()},
            {"id": "b-again", "key_id": "eth-1", "kind": "raw", "message": other.hex()},
        ):
            with pytest.raises(NodeRefused) as e:
                _sign(cluster, p, "eth-1", ids[2], req)
            assert e.value.status == 409
    st = cluster.call(cluster.nodes[3], "GET", "/v1/status")
    assert st["presignatures_unused"] == 0
    assert st["presignatures_used"] - before["presignatures_used"] == 3


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"presign_count": 0}, "presign_count"),
        ({"presign_count": 33}, "presign_count"),
        ({"presign_count": "3"}, "presign_count"),
        ({"presign_count": True}, "presign_count"),
        ({"presign_count": 2, "kind": "dkg"}, "ecdsa-presign session only"),
    ],
)
def test_bad_presign_count_is_refused(inproc: InProc, change: dict[str, Any], why: str) -> None:
    with pytest.raises(NodeError) as e:
        inproc.nodes[1].start_session({**_spec("ek", [1, 2], None), **change})
    assert e.value.kind == "bad-request" and why in str(e.value)


class _BadInstance:
    """Node 2's batch session, honest except that instance 1 of its round-2 message to
    node 1 carries a tampered ``tau`` (sealed and signed by node 2, so every envelope check
    passes and only the protocol's own check can catch it)."""

    def __init__(self, rs: ProtocolSession) -> None:
        self.rs = rs

    protocol = property(lambda self: self.rs.protocol)
    done = property(lambda self: self.rs.done)
    result = property(lambda self: self.rs.result)

    def waiting_for(self) -> tuple[int, ...]:
        return self.rs.waiting_for()

    def start(self) -> list[Message]:
        return self.rs.start()

    def receive(self, msg: Message) -> list[Message]:
        out = []
        for m in self.rs.receive(msg):
            if m.round == 2 and m.recipient == 1:
                items = [dict(p) for p in m.payload["batch"]]
                tau = bytearray(items[1]["tau"])
                tau[40] ^= 1
                items[1]["tau"] = bytes(tau)
                m = dataclasses.replace(m, payload={"batch": items})
            out.append(m)
        return out


class _Malicious:
    def __init__(self, honest: SessionFactory) -> None:
        self.honest = honest

    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        return _BadInstance(self.honest.new_session(spec))

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        return self.honest.accepts(spec, rs)

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        return self.honest.finish(spec, rs)

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        self.honest.on_failure(spec, exc)


def test_cheating_in_one_instance_fails_the_batch_and_retires_the_pair(inproc: InProc) -> None:
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ek")
    spec = _spec("ek", [1, 2], 4)
    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    inproc.run_session(spec)
    n[2].sessions.factory = honest

    failed = n[1].session_state(spec["session_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["culprits"] == [2]
    assert "batch instance 1 of 4" in failed["error"]["detail"]
    # the honest node keeps nothing of the failed batch (the cheater may finish its side,
    # as in a single presign, but the coordinator never pools a failed session's result)
    assert n[1].shares.pool.count("presig") == 0
    # the pair is retired exactly as after a single presign: batches and singles refused
    assert n[1].shares.retired_ot_peers("ek") == {2}
    for count in (4, None):
        with pytest.raises(NodeError) as refused:
            n[1].start_session(_spec("ek", [1, 2], count))
        assert refused.value.kind == "ot-pair-retired" and refused.value.culprits == (2,)
    # other pairs go on batching
    ok = inproc.run_session(_spec("ek", [1, 3], 2))
    assert all(st["status"] == "done" for st in ok.values()), ok
    assert n[3].shares.pool.count("presig") == 2
