"""A committee member adopts a restored member's share only under the officers' ``restore``
ceremony authorization of each key (signer_nodes.backup.adopt, issue 13 items 4 and 6).

The restore authorization file (custody.backups.RestoreAuthorization, as ``custody backup
authorize-restore`` writes it) re-pins node-3 in the key committees; per key it carries a
``restore`` ceremony authorization naming the key, the share version of the backup and
node-3. Node 1 verifies each itself: missing, under-signed, expired, for another share
version (a stale backup), another node or another kind are refused with the ceremony
codes and change nothing; a valid one is accepted once (replay refused). Adopting drops
every outstanding nonce and presignature of the keys. Nodes are in-process; node-3's
identity is kept (the identity change itself is tests/e2e/test_backup.py's)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from nacl.signing import VerifyKey

from custody import backups as bk
from custody.signing import message_to_sign
from mpc import frost
from signer_nodes import backup
from signer_nodes.errors import NodeError
from tests.nodes.ceremony_auth import authorize
from tests.nodes.conftest import InProc, public_package
from tests.nodes.test_ot_retire import _presign_spec


def _restore_auth(
    inproc: InProc, keys: dict[str, dict[str, Any]], ceremonies: dict[str, str]
) -> bytes:
    o = inproc.officers
    n3 = inproc.nodes[3]
    auth = bk.RestoreAuthorization(
        o.cluster_id, 1, "node-3", 3, n3.sign_pk.hex(), n3.sign_pk.hex(), tuple(sorted(keys)),
        ceremonies=tuple(sorted(ceremonies.items())),
    )  # fmt: skip
    for oid in sorted(o.keys)[:2]:
        auth = auth.with_signature(o.keys[oid], oid)
    return auth.encode()


def _cer(inproc: InProc, kid: str, dkg: dict[str, Any], version: int = 1, **kw: Any) -> str:
    o = inproc.officers
    spec = {"kind": kw.pop("kind", "restore"), "key_id": kid, "scheme": dkg["scheme"],
            "threshold": 2, "participants": kw.pop("participants", [3])}  # fmt: skip
    return authorize(o.keys, o.cluster_id, spec, dkg["public_key"], version, **kw)


def _refused(inproc: InProc, data: bytes, code: str, match: str | None = None) -> None:
    with pytest.raises(NodeError, match=match) as e:
        backup.adopt(inproc.nodes[1], data)
    assert e.value.code == code, e.value


def test_adopt_needs_each_keys_restore_authorization(inproc: InProc) -> None:
    dkg = inproc.dkg("ed25519", "ke")
    keys = {"ke": dkg}
    o = inproc.officers
    _refused(inproc, _restore_auth(inproc, keys, {}), "ceremony-unauthorized", "key 'ke'")
    one = _cer(inproc, "ke", dkg, by=sorted(o.keys)[:1])
    _refused(
        inproc, _restore_auth(inproc, keys, {"ke": one}), "ceremony-authorization-under-signed"
    )
    old = _cer(inproc, "ke", dkg, issued_at=1_700_000_000)
    _refused(inproc, _restore_auth(inproc, keys, {"ke": old}), "ceremony-authorization-expired")
    mismatch = "ceremony-authorization-mismatch"
    stale = _cer(inproc, "ke", dkg, version=2)
    _refused(inproc, _restore_auth(inproc, keys, {"ke": stale}), mismatch, "share_version 2")
    other_node = _cer(inproc, "ke", dkg, participants=[2])
    _refused(inproc, _restore_auth(inproc, keys, {"ke": other_node}), mismatch, "committee")
    refresh = _cer(inproc, "ke", dkg, kind="refresh", participants=[1, 2, 3])
    _refused(inproc, _restore_auth(inproc, keys, {"ke": refresh}), mismatch, "kind 'refresh'")

    good = _restore_auth(inproc, keys, {"ke": _cer(inproc, "ke", dkg)})
    out = backup.adopt(inproc.nodes[1], good)
    assert out == {"node_id": "node-1", "restored": "node-3", "keys": ["ke"]}
    _refused(inproc, good, "ceremony-authorization-replayed")
    # the committee still signs with node 3 after the adoption (verified with PyNaCl)
    req = {"id": "after-adopt", "key_id": "ke", "kind": "raw", "message": b"adopted".hex()}
    sig = inproc.frost_sign("ed25519", "ke", [1, 3], req, public_package(dkg, "ed25519"))
    VerifyKey(bytes.fromhex(dkg["public_key"])).verify(message_to_sign("ed25519", req), sig)


def test_adopt_invalidates_outstanding_nonces_and_presignatures(inproc: InProc) -> None:
    n = inproc.nodes
    ed = inproc.dkg("ed25519", "ke")
    ec = inproc.dkg("ecdsa-secp256k1", "ek")
    nonces = {p: n[p].frost_commitments("ke", 1)[0] for p in (1, 2)}
    res = inproc.run_session({**_presign_spec("ek", [1, 2])})
    sid = next(iter(res.values()))["session_id"]
    presig = n[1].session_state(sid)["result"]["presignature_id"]
    assert n[1].shares.pool.count("nonce") >= 1 and n[1].shares.pool.count("presig") >= 1

    ceremonies = {"ke": _cer(inproc, "ke", ed), "ek": _cer(inproc, "ek", ec)}
    backup.adopt(n[1], _restore_auth(inproc, {"ke": ed, "ek": ec}, ceremonies))
    assert n[1].shares.pool.count("nonce") == 0 and n[1].shares.pool.count("presig") == 0

    suite = frost.ciphersuite("ed25519")
    req = {"id": "old-nonce", "key_id": "ke", "kind": "raw", "message": b"m".hex()}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p]["commitments"]), suite=suite)
        for p in (1, 2)
    ]
    pkg = frost.signing_package(comms, message_to_sign("ed25519", req))
    with pytest.raises(NodeError) as e:
        n[1].frost_sign("ke", nonces[1]["nonce_id"], req, pkg.to_bytes(), coordinator_verified=True)
    assert e.value.kind == "unknown-nonce", e.value
    ereq = {"id": "old-presig", "key_id": "ek", "kind": "raw", "message": secrets.token_hex(32)}
    with pytest.raises(NodeError) as e:
        n[1].ecdsa_sign("ek", presig, ereq, coordinator_verified=True)
    assert e.value.kind == "unknown-presignature", e.value
