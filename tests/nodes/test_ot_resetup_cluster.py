"""The OT re-setup ceremony on the nodes (issue 13 item 7): a retired DKLs23 pair set up again.

Node 2 is malicious once (it tampers with a multiplication message, tests/nodes/
test_ot_retire.py): node 1's check fails and retires the pair (1, 2), and node 1 refuses every
presign session with node 2 for the key. The officers then authorize an ``ot-resetup``
ceremony; every node verifies that authorization itself, runs
:class:`mpc.dkls23.resetup.OtResetupChain` (a refresh of the Shamir part under the
re-setup's own context, then a fresh base-OT setup for every pair), keeps the result pending
and signs a done statement; the commit, with every party's statement, installs it through
:func:`signer_nodes.ecdsa.resetup_pairs` (which re-enables the retired pair). The pair then
presigns and signs again, verified with coincurve. Nodes are in-process (no cluster start).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import coincurve
import pytest

from mpc import dkls23
from mpc.groups import SECP256K1
from signer_nodes import ecdsa
from signer_nodes.errors import NodeError
from tests.nodes.ceremony_auth import authorize
from tests.nodes.conftest import InProc
from tests.nodes.test_ot_retire import _Malicious, _presign_spec


def _retire_pair_1_2(inproc: InProc) -> None:
    """A real failed check (node 2 tampers with tau) retires the pair on node 1."""
    n = inproc.nodes
    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    try:
        inproc.run_session(_presign_spec("ke", [1, 2]))
    finally:
        n[2].sessions.factory = honest
    assert n[1].shares.retired_ot_peers("ke") == {2}


def _spec(**over: Any) -> dict[str, Any]:
    return {
        "session_id": secrets.token_hex(32),
        "kind": "ot-resetup",
        "key_id": "ke",
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": [1, 2, 3],
        **over,
    }


def _authorized(inproc: InProc, spec: dict[str, Any], pk: str, version: int, **kw: Any) -> Any:
    o = inproc.officers
    return {**spec, "authorization": authorize(o.keys, o.cluster_id, spec, pk, version, **kw)}


def _refused_by_every_node(inproc: InProc, spec: dict[str, Any], code: str) -> None:
    for p in spec["participants"]:
        with pytest.raises(NodeError) as e:
            inproc.nodes[p].start_session({**spec, "session_id": secrets.token_hex(32)})
        assert e.value.code == code, (p, e.value)


def _sign(inproc: InProc, signers: list[int], pk_hex: str, tag: str) -> None:
    """Presign and sign through the nodes; the signature verified by coincurve."""
    res = inproc.run_session(_presign_spec("ke", signers))
    assert all(st["status"] == "done" for st in res.values()), res
    pre = inproc.nodes[signers[0]].session_state(next(iter(res.values()))["session_id"])["result"]
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    digest = hashlib.sha256(tag.encode()).digest()
    req = {"id": "r-" + digest.hex()[:16], "key_id": "ke", "kind": "raw", "message": digest.hex()}
    parts = [
        dkls23.PartialSignature.from_bytes(
            inproc.nodes[p].ecdsa_sign(
                "ke", pre["presignature_id"], req, coordinator_verified=True
            ),
            sender=p,
        )
        for p in signers
    ]
    pk = SECP256K1.decode_point(bytes.fromhex(pk_hex))
    sig = dkls23.combine_signature(public, parts, digest, pk)
    assert coincurve.PublicKey(bytes.fromhex(pk_hex)).verify(sig.to_der(), digest, hasher=None)


def _commit(inproc: InProc, results: dict[int, Any], parties: Any = None) -> dict[int, Any]:
    sid = results[1]["outcome"]["session_id"]
    sigs = {str(p): r["signature"] for p, r in results.items()}
    return {
        p: inproc.nodes[p].commit_share("ke", {"session_id": sid, "signatures": sigs})
        for p in parties or sorted(results)
    }


def test_ot_resetup_ceremony_reenables_a_retired_pair_which_then_signs(inproc: InProc) -> None:
    n = inproc.nodes
    dkg = inproc.dkg("ecdsa-secp256k1", "ke")
    pk = dkg["public_key"]
    _retire_pair_1_2(inproc)
    with pytest.raises(NodeError) as refused:
        n[1].start_session(_presign_spec("ke", [1, 2]))
    assert refused.value.code == "ot-pair-retired" and refused.value.culprits == (2,)
    old_seed = ecdsa.load_share(n[1].shares, "ke").bob[2].k0
    # a presignature of another pair, made before the ceremony, is dropped at its commit
    early = inproc.run_session(_presign_spec("ke", [1, 3]))
    early_id = n[1].session_state(next(iter(early.values()))["session_id"])["result"][
        "presignature_id"
    ]

    spec = _authorized(inproc, _spec(), pk, 1)
    states = inproc.run_session(spec)
    assert all(st["status"] == "done" for st in states.values()), states
    results = {p: n[p].session_state(spec["session_id"])["result"] for p in n}
    outcome = results[1]["outcome"]
    assert outcome["ceremony"] == "ot-resetup" and outcome["share_version"] == 2
    assert all(r["outcome"] == outcome for r in results.values())
    assert all(r["public_key"] == pk for r in results.values())
    # pending only: the pair stays retired and the active share is the old one
    assert n[1].shares.retired_ot_peers("ke") == {2}
    assert n[1].shares.row("ke").share_version == 1

    # a commit without node 3's done statement is refused, naming it
    partial = {str(p): results[p]["signature"] for p in (1, 2)}
    with pytest.raises(NodeError) as e:
        n[1].commit_share("ke", {"session_id": outcome["session_id"], "signatures": partial})
    assert e.value.culprits == (3,)
    assert n[1].shares.retired_ot_peers("ke") == {2}

    done = _commit(inproc, results)
    assert done[1]["reenabled_peers"] == [2] and done[3]["reenabled_peers"] == []
    assert all(d["share_version"] == 2 and d["status"] == "committed" for d in done.values())
    assert n[1].shares.retired_ot_peers("ke") == set()
    new = ecdsa.load_share(n[1].shares, "ke")
    assert new.bob[2].k0 != old_seed  # fresh base OTs for the pair
    assert _commit(inproc, results, [1])[1]["status"] == "committed"  # idempotent retry
    with pytest.raises(NodeError) as gone:
        n[1].ecdsa_sign(
            "ke", early_id, {"id": "x", "key_id": "ke", "kind": "raw", "message": "00" * 32},
            coordinator_verified=True,
        )  # fmt: skip
    assert gone.value.kind == "unknown-presignature", gone.value

    _sign(inproc, [1, 2], pk, "after ot-resetup 1-2")
    _sign(inproc, [2, 3], pk, "after ot-resetup 2-3")
    # the authorization is spent: the same one again is refused by every node
    _refused_by_every_node(inproc, spec, "ceremony-authorization-replayed")


def test_ot_resetup_refused_by_every_node_without_a_valid_authorization(inproc: InProc) -> None:
    n = inproc.nodes
    pk = inproc.dkg("ecdsa-secp256k1", "ke")["public_key"]
    _retire_pair_1_2(inproc)
    spec = _spec()
    o = inproc.officers
    _refused_by_every_node(inproc, spec, "ceremony-unauthorized")
    one = authorize(o.keys, o.cluster_id, spec, pk, 1, by=sorted(o.keys)[:1])
    _refused_by_every_node(
        inproc, {**spec, "authorization": one}, "ceremony-authorization-under-signed"
    )
    old = int(time.time()) - 3600
    expired = authorize(o.keys, o.cluster_id, spec, pk, 1, issued_at=old, lifetime=600)
    _refused_by_every_node(
        inproc, {**spec, "authorization": expired}, "ceremony-authorization-expired"
    )
    # a refresh's authorization is not an OT re-setup's, nor one for another share version
    as_refresh = authorize(o.keys, o.cluster_id, {**spec, "kind": "refresh"}, pk, 1)
    _refused_by_every_node(
        inproc, {**spec, "authorization": as_refresh}, "ceremony-authorization-mismatch"
    )
    v2 = authorize(o.keys, o.cluster_id, spec, pk, 2)
    _refused_by_every_node(inproc, {**spec, "authorization": v2}, "ceremony-authorization-mismatch")
    # a re-setup keeps the committee: leaving a member out is refused by the members asked
    two = _spec(participants=[1, 2])
    short = authorize(o.keys, o.cluster_id, two, pk, 1, committee=[1, 2])
    for p in (1, 2):
        with pytest.raises(NodeError, match=r"must include exactly its committee \[1, 2, 3\]"):
            n[p].start_session({**two, "authorization": short})
    # the authorization is used once: a replay (a new session, the same authorization)
    ok = _authorized(inproc, spec, pk, 1)
    states = inproc.run_session(ok)
    assert all(st["status"] == "done" for st in states.values()), states
    _refused_by_every_node(inproc, ok, "ceremony-authorization-replayed")
    # nothing refused changed anything: still version 1, the pair still retired
    assert n[1].shares.row("ke").share_version == 1
    assert n[1].shares.retired_ot_peers("ke") == {2}


def test_ot_resetup_is_for_ecdsa_keys_only(inproc: InProc) -> None:
    pk = inproc.dkg("ed25519", "ke")["public_key"]
    spec = _spec(scheme="ed25519")
    auth = _authorized(inproc, spec, pk, 1)
    for p in spec["participants"]:
        with pytest.raises(NodeError) as e:
            inproc.nodes[p].start_session({**auth, "session_id": secrets.token_hex(32)})
        assert e.value.kind == "wrong-scheme" and "not ecdsa-secp256k1" in e.value.detail
