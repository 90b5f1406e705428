"""Proactive refresh through real node processes (signer_nodes.ceremonies): for each scheme
the public key is unchanged, the new shares sign (verified with PyNaCl / coincurve), old
and new shares never combine (the stale party is named), a commit needs every party's
done statement, and a node SIGKILLed during a refresh loses nothing."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from coincurve import PublicKey, PublicKeyXOnly
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from mpc import dkls23
from mpc.errors import MpcError, ProtocolError
from mpc.groups import SECP256K1
from mpc.refresh import RefreshSession
from mpc.wire import Message
from signer_nodes.errors import NodeError
from signer_nodes.protocols import ProtocolSession, SessionFactory
from signer_nodes.specs import SessionSpec
from tests.nodes.ceremony_auth import authorize
from tests.nodes.conftest import (
    Coordinator,
    InProc,
    NodeProc,
    NodeRefused,
    public_package,
)


def authorized(officers: Any, spec: dict[str, Any], pk: str, version: int) -> dict[str, Any]:
    """``spec`` with an authorization signed by a quorum of the test officers."""
    auth = authorize(officers.keys, officers.cluster_id, spec, pk, version)
    return {**spec, "authorization": auth}


def refresh(
    cluster: Coordinator, key_id: str, scheme: str, pk: str, version: int, t: int = 2
) -> dict[int, Any]:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "refresh",
        "key_id": key_id,
        "scheme": scheme,
        "threshold": t,
        "participants": sorted(cluster.nodes),
    }
    spec = authorized(cluster.officers, spec, pk, version)
    res = cluster.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    return {p: r["result"] for p, r in res.items()}


def commit(cluster: Coordinator, key_id: str, results: dict[int, Any], parties: Any = None) -> None:
    sid = next(iter(results.values()))["outcome"]["session_id"]
    sigs = {str(p): r["signature"] for p, r in results.items()}
    for p in parties or sorted(cluster.nodes):
        out = cluster.call(
            cluster.nodes[p],
            "POST",
            f"/v1/keys/{key_id}/commit",
            {"session_id": sid, "signatures": sigs},
        )
        assert out["status"] == "committed"


def frost_verify(scheme: str, pk_hex: str, req: dict[str, Any], sig: bytes) -> None:
    msg = message_to_sign(scheme, req)
    if scheme == "ed25519":
        VerifyKey(bytes.fromhex(pk_hex)).verify(msg, sig)
    else:
        assert PublicKeyXOnly(bytes.fromhex(pk_hex)).verify(sig, msg)


def raw(key_id: str, tag: str) -> dict[str, Any]:
    return {"id": tag, "key_id": key_id, "kind": "raw", "message": tag.encode().hex()}


# The tests up to the kill test share the module's one running cluster (tests/nodes/
# conftest.py ``module_cluster``): each makes and refreshes a key id of its own, reads no
# node counter and neither crashes a node nor installs governance. The kill test keeps a
# cluster of its own (``cluster``).


@pytest.mark.parametrize("scheme", ["ed25519", "bip340"])
def test_frost_refresh_then_sign_and_stale_share_named(
    module_cluster: Coordinator, scheme: str
) -> None:
    key_id = f"k-{scheme}"
    dkg = module_cluster.dkg(scheme, key_id, 2, [1, 2, 3])
    old_pub = public_package(dkg, scheme)
    results = refresh(module_cluster, key_id, scheme, dkg["public_key"], 1)
    new = results[1]
    assert all(r["verifying_shares"] == new["verifying_shares"] for r in results.values())
    assert new["public_key"] == dkg["public_key"] and new["share_version"] == 2
    assert new["verifying_shares"] != dkg["verifying_shares"]
    new_pub = public_package(new, scheme)
    # not committed yet: the old shares still sign
    req = raw(key_id, f"{scheme}-before")
    frost_verify(
        scheme,
        dkg["public_key"],
        req,
        module_cluster.frost_sign(scheme, key_id, [1, 3], req, old_pub),
    )

    # a commit without every party's done statement is refused, naming who is missing
    sid = new["outcome"]["session_id"]
    partial = {str(p): results[p]["signature"] for p in (1, 2)}
    with pytest.raises(NodeRefused) as e:
        module_cluster.call(
            module_cluster.nodes[1],
            "POST",
            f"/v1/keys/{key_id}/commit",
            {"session_id": sid, "signatures": partial},
        )
    assert e.value.status == 403 and e.value.problem["culprits"] == [3]
    forged = {**partial, "3": results[1]["signature"]}
    with pytest.raises(NodeRefused) as e:
        module_cluster.call(
            module_cluster.nodes[1],
            "POST",
            f"/v1/keys/{key_id}/commit",
            {"session_id": sid, "signatures": forged},
        )
    assert e.value.status == 403 and e.value.problem["culprits"] == [3]

    # nonces made before the commit are dropped by it
    early = {p: module_cluster.commitments(p, key_id)[0] for p in (1, 2)}
    # node 3 does not get the commit yet: it still holds the old share
    commit(module_cluster, key_id, results, parties=[1, 2])
    with pytest.raises(NodeRefused) as e:
        module_cluster.frost_sign(
            scheme, key_id, [1, 2], raw(key_id, f"{scheme}-early"), new_pub, early
        )
    assert e.value.status == 404  # unknown nonce: invalidated at commit
    req = raw(key_id, f"{scheme}-mixed")
    with pytest.raises(ProtocolError) as pe:
        module_cluster.frost_sign(scheme, key_id, [1, 3], req, new_pub)
    assert pe.value.culprits == (3,)  # the stale party is named
    req = raw(key_id, f"{scheme}-new")
    frost_verify(
        scheme,
        dkg["public_key"],
        req,
        module_cluster.frost_sign(scheme, key_id, [1, 2], req, new_pub),
    )
    # the commit is idempotent and completes on the late node
    commit(module_cluster, key_id, results)
    for signers in ([1, 3], [2, 3]):
        req = raw(key_id, f"{scheme}-after-{signers[0]}{signers[1]}")
        sig = module_cluster.frost_sign(scheme, key_id, signers, req, new_pub)
        frost_verify(scheme, dkg["public_key"], req, sig)
    # a second refresh moves on to version 3 and the key still signs
    again = refresh(module_cluster, key_id, scheme, dkg["public_key"], 2)
    assert again[2]["share_version"] == 3
    commit(module_cluster, key_id, again)
    req = raw(key_id, f"{scheme}-v3")
    sig = module_cluster.frost_sign(scheme, key_id, [2, 3], req, public_package(again[2], scheme))
    frost_verify(scheme, dkg["public_key"], req, sig)


def presign(cluster: Coordinator, key_id: str, signers: list[int]) -> dict[str, Any]:
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
    return dict(next(iter(res.values()))["result"])


def ecdsa_sign(
    cluster: Coordinator, key_id: str, signers: list[int], pk_hex: str, tag: str
) -> None:
    pre = presign(cluster, key_id, signers)
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    digest = hashlib.sha256(tag.encode()).digest()
    req = {"id": tag, "key_id": key_id, "kind": "raw", "message": digest.hex()}
    partials = []
    for p in signers:
        r = cluster.call(
            cluster.nodes[p],
            "POST",
            "/v1/ecdsa/sign",
            {"key_id": key_id, "presignature_id": pre["presignature_id"], "request": req},
        )
        partials.append(dkls23.PartialSignature.from_bytes(bytes.fromhex(r["partial"]), sender=p))
    pk = SECP256K1.decode_point(bytes.fromhex(pk_hex))
    sig = dkls23.combine_signature(public, partials, digest, pk)
    assert PublicKey(bytes.fromhex(pk_hex)).verify(sig.to_der(), digest, hasher=None)


def test_ecdsa_refresh_fresh_base_ots_then_sign(module_cluster: Coordinator) -> None:
    dkg = module_cluster.dkg("ecdsa-secp256k1", "eth-1", 2, [1, 2, 3])
    pk = dkg["public_key"]
    # a presignature made before the refresh is dropped at commit
    before = presign(module_cluster, "eth-1", [1, 2])
    results = refresh(module_cluster, "eth-1", "ecdsa-secp256k1", pk, 1)
    assert all(r["public_key"] == pk and r["share_version"] == 2 for r in results.values())
    assert results[1]["verifying_shares"] != dkg["verifying_shares"]
    ecdsa_sign(module_cluster, "eth-1", [2, 3], pk, "old-share-still-signs")
    commit(module_cluster, "eth-1", results)
    with pytest.raises(NodeRefused) as e:
        module_cluster.call(
            module_cluster.nodes[1],
            "POST",
            "/v1/ecdsa/sign",
            {
                "key_id": "eth-1",
                "presignature_id": before["presignature_id"],
                "request": {"id": "x", "key_id": "eth-1", "kind": "raw", "message": "00" * 32},
            },
        )
    assert e.value.status == 404
    for signers in ([1, 2], [1, 3]):
        ecdsa_sign(module_cluster, "eth-1", signers, pk, f"after-{signers[0]}{signers[1]}")


def test_refresh_refuses_a_partial_committee_or_another_threshold(
    module_cluster: Coordinator,
) -> None:
    pk = module_cluster.dkg("ed25519", "ka", 2, [1, 2, 3])["public_key"]
    base = {"kind": "refresh", "key_id": "ka", "scheme": "ed25519"}
    # even authorized as asked, a refresh of part of the committee is refused
    spec = {**base, "session_id": secrets.token_hex(32), "threshold": 2, "participants": [1, 2]}
    with pytest.raises(NodeRefused) as e:
        module_cluster.call(
            module_cluster.nodes[1],
            "POST",
            "/v1/sessions",
            authorized(module_cluster.officers, spec, pk, 1),
        )
    assert e.value.status == 403 and "committee" in e.value.problem["detail"]
    spec = {**base, "session_id": secrets.token_hex(32), "threshold": 2, "participants": [1, 2, 3]}
    with pytest.raises(NodeRefused) as e:
        module_cluster.call(
            module_cluster.nodes[1],
            "POST",
            "/v1/sessions",
            {**authorized(module_cluster.officers, spec, pk, 1), "threshold": 1},
        )
    assert e.value.status == 403 and "threshold" in e.value.problem["detail"]
    assert e.value.problem["type"] == "urn:tpwc:node:ceremony-authorization-mismatch"


@pytest.mark.parametrize("point", ["refresh:pending-stored", "refresh:commit"])
def test_node_killed_during_refresh_loses_nothing(cluster: Coordinator, point: str) -> None:
    dkg = cluster.dkg("bip340", "rk", 2, [1, 2, 3])
    old_pub = public_package(dkg, "bip340")
    victim: NodeProc = cluster.nodes[3]
    victim.stop()
    victim.start(crash_at=point)
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "refresh",
        "key_id": "rk",
        "scheme": "bip340",
        "threshold": 2,
        "participants": [1, 2, 3],
    }
    spec = authorized(cluster.officers, spec, dkg["public_key"], 1)
    results: dict[int, Any] = {}
    try:
        res = cluster.run_session(spec)
        results = {p: r["result"] for p, r in res.items()}
    except (httpx.HTTPError, NodeRefused, RuntimeError, AssertionError) as exc:
        results = {}  # the victim died mid-session, as intended
        print("refresh interrupted:", type(exc).__name__)
    if point == "refresh:commit":
        assert len(results) == 3  # the session finished; the victim dies at its commit
        with pytest.raises(httpx.HTTPError):  # the victim dies before it answers
            commit(cluster, "rk", results, parties=[3])
    assert victim.proc is not None and victim.proc.wait(30) == 137
    # whatever happened to the victim, the old key still signs with the others
    req = raw("rk", f"after-{point}")
    sig = cluster.frost_sign("bip340", "rk", [1, 2], req, old_pub)
    frost_verify("bip340", dkg["public_key"], req, sig)
    # the victim restarts on its old share; the old key signs with it too
    victim.stop()
    victim.start()
    req = raw("rk", f"restarted-{point}")
    sig = cluster.frost_sign("bip340", "rk", [1, 3], req, old_pub)
    frost_verify("bip340", dkg["public_key"], req, sig)
    if point == "refresh:commit":
        # the interrupted commit rolls forward on every node and the new key signs
        commit(cluster, "rk", results)
        req = raw("rk", "rolled-forward")
        new_pub = public_package(results[1], "bip340")
        frost_verify(
            "bip340",
            dkg["public_key"],
            req,
            cluster.frost_sign("bip340", "rk", [1, 3], req, new_pub),
        )
    # and a fresh refresh succeeds
    version = 2 if point == "refresh:commit" else 1
    again = refresh(cluster, "rk", "bip340", dkg["public_key"], version)
    commit(cluster, "rk", again)
    req = raw("rk", f"refreshed-{point}")
    sig = cluster.frost_sign("bip340", "rk", [2, 3], req, public_package(again[1], "bip340"))
    frost_verify("bip340", dkg["public_key"], req, sig)


class _BadDealer(RefreshSession):
    """A refresh dealer whose sub-share for party 1 is off by one (not on its commitment)."""

    def _start(self) -> list[Message]:
        out = super()._start()
        assert self._shares_out is not None
        self._shares_out[1] = (self._shares_out[1] + 1) % self.group.order
        return out


class _Malicious:
    """Node 2's session factory (the host's public seam): its refresh deals a bad share."""

    def __init__(self, honest: SessionFactory) -> None:
        self.honest = honest

    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        rs = self.honest.new_session(spec)
        assert isinstance(rs, RefreshSession)
        return _BadDealer(rs.key, spec.sid, list(spec.participants), rs.context)

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        return self.honest.accepts(spec, rs)

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        return self.honest.finish(spec, rs)

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        self.honest.on_failure(spec, exc)


def test_a_bad_dealer_is_named_and_no_share_changes(inproc: InProc) -> None:
    n = inproc.nodes
    dkg = inproc.dkg("ed25519", "k-ed")
    old_pub = public_package(dkg, "ed25519")
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "refresh",
        "key_id": "k-ed",
        "scheme": "ed25519",
        "threshold": 2,
        "participants": [1, 2, 3],
    }
    spec = authorized(inproc.officers, spec, dkg["public_key"], 1)
    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    inproc.run_session(spec)
    n[2].sessions.factory = honest
    failed = n[1].session_state(spec["session_id"])
    assert failed["status"] == "failed" and failed["error"]["culprits"] == [2]
    # the others finished, but nothing commits without party 1's done statement
    done = {p: n[p].session_state(spec["session_id"])["result"] for p in (2, 3)}
    sigs = {str(p): r["signature"] for p, r in done.items()}
    for p in (2, 3):
        with pytest.raises(NodeError) as e:
            n[p].commit_share("k-ed", {"session_id": spec["session_id"], "signatures": sigs})
        assert e.value.kind == "not-authorized" and e.value.culprits == (1,)
        assert n[p].shares.row("k-ed").share_version == 1
    req = raw("k-ed", "after-bad-dealer")
    sig = inproc.frost_sign("ed25519", "k-ed", [2, 3], req, old_pub)
    frost_verify("ed25519", dkg["public_key"], req, sig)


def test_a_seal_key_rotation_rewraps_the_pending_share(inproc: InProc) -> None:
    n = inproc.nodes
    dkg = inproc.dkg("bip340", "k-bip340")
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "refresh",
        "key_id": "k-bip340",
        "scheme": "bip340",
        "threshold": 2,
        "participants": [1, 2, 3],
    }
    spec = authorized(inproc.officers, spec, dkg["public_key"], 1)
    inproc.run_session(spec)
    results = {p: n[p].session_state(spec["session_id"])["result"] for p in (1, 2, 3)}
    # node 2 rotates its seal key (the old version is destroyed) before the commit
    assert n[2].rotate_seal_key()["blobs"] >= 2
    sigs = {str(p): r["signature"] for p, r in results.items()}
    for p in (1, 2, 3):
        out = n[p].commit_share("k-bip340", {"session_id": spec["session_id"], "signatures": sigs})
        assert out["share_version"] == 2
    req = raw("k-bip340", "after-rotation")
    sig = inproc.frost_sign("bip340", "k-bip340", [1, 2], req, public_package(results[1], "bip340"))
    frost_verify("bip340", dkg["public_key"], req, sig)
