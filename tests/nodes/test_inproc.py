"""In-process nodes: DKG + FROST, envelope refusals at the node, tampered/moved shares."""

from __future__ import annotations

import secrets

import pytest
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from hsm.errors import UnsealError
from tests.nodes.conftest import InProc, public_package, unsealed_identity


def test_inproc_dkg_sign(inproc: InProc) -> None:
    res = inproc.dkg("ed25519", "k1")
    req = {"id": "r1", "key_id": "k1", "kind": "raw", "message": "00ff"}
    sig = inproc.frost_sign("ed25519", "k1", [1, 3], req, public_package(res, "ed25519"))
    VerifyKey(bytes.fromhex(res["public_key"])).verify(message_to_sign("ed25519", req), sig)


def _spec(key_id: str) -> dict:
    return {
        "session_id": secrets.token_hex(32),
        "kind": "dkg",
        "key_id": key_id,
        "scheme": "ed25519",
        "threshold": 2,
        "participants": [1, 2, 3],
    }


def _flip(hexstr: str, pos: int = -5) -> str:
    b = bytearray(bytes.fromhex(hexstr))
    b[pos] ^= 1
    return b.hex()


def test_envelopes_forged_misaddressed_replayed_and_misencrypted_are_refused(
    inproc: InProc,
) -> None:
    from mpc.wire import Message
    from signer_nodes.envelope import seal

    n = inproc.nodes
    a, b = _spec("ka"), _spec("kb")
    starts = {p: n[p].start_session(a) for p in n}
    other = {p: n[p].start_session(b) for p in n}
    r1 = {p: st["envelopes"][0] for p, st in starts.items()}  # round-1 broadcasts
    sid = a["session_id"]

    def refused(p: int, env: dict, session: str = sid) -> dict:
        st = n[p].deliver(session, [env])
        assert st["envelopes"] == [] and len(st["refused"]) == 1, st
        return st["refused"][0]

    # forged signature (last bytes are the signature)
    assert refused(2, {**r1[1], "envelope": _flip(r1[1]["envelope"])})["reason"] == "bad-signature"
    # garbage / unsigned
    assert refused(2, {"from": 1, "to": None, "envelope": "a0"})["reason"] == "malformed"
    # replay across sessions: session b's broadcast from 1 delivered into session a
    assert refused(2, other[1]["envelopes"][0])["reason"] == "wrong-session"
    # honest round 1 everywhere -> round-2 direct envelopes
    out2: list[dict] = []
    for p in n:
        for q in n:
            if q != p:
                out2 += n[q].deliver(sid, [r1[p]])["envelopes"]
    # replay across rounds: round-1 broadcast again after round 1 finished
    assert refused(2, r1[1])["reason"] == "replay"
    # wrong recipient: 1 -> 2 direct envelope delivered to 3
    to2 = next(e for e in out2 if e["from"] == 1 and e["to"] == 2)
    assert refused(3, to2)["reason"] == "misaddressed"
    # payload encrypted to another node (signed by 1, addressed to 2, boxed to 3's key)
    msg = Message("frost-dkg", bytes.fromhex(sid), 2, 1, 2, {"x": b"1"})
    sign_key, box_key = unsealed_identity(n[1])
    bad = seal(msg, sign_key=sign_key, box_key=box_key, recipient_box_pk=n[3].box_pk)
    r = refused(2, {"from": 1, "to": 2, "envelope": bad.hex()})
    assert r["reason"] == "undecryptable" and r["culprit"] == 1
    # the session survives all of it and completes with the honest envelopes
    for e in out2:
        n[e["to"]].deliver(sid, [e])
    results = [n[p].session_state(sid) for p in n]
    assert all(s["status"] == "done" for s in results)
    assert len({s["result"]["public_key"] for s in results}) == 1


def test_tampered_or_moved_share_fails_to_unseal_precisely(inproc: InProc) -> None:
    from signer_nodes import vault as v
    from signer_nodes.store import KeyRow

    inproc.dkg("ed25519", "k1")
    node1, node2 = inproc.nodes[1], inproc.nodes[2]
    row = node1.store.get_key("k1")
    assert row is not None
    # one bit flipped
    blob = bytearray(row.sealed_share)
    blob[30] ^= 0x01
    with pytest.raises(UnsealError) as e:
        node1.vault.unseal(bytes(blob), v.share_aad("k1", node1.node_id, row.share_version))
    assert e.value.reason == "authentication_failed" and e.value.exit_code == 24
    # moved to another key id (inside the node's own database)
    node1.store.put_key(
        KeyRow(
            "k2", row.scheme, 1, row.public_key, row.public_info, row.sealed_share, row.seal_version
        )
    )
    node1.anchor.record_committee("k2", [1, 2, 3])  # past governance: the HSM must refuse
    with pytest.raises(UnsealError) as e:
        node1.frost_commitments("k2", 1)
    assert e.value.reason == "authentication_failed"
    # another share version
    with pytest.raises(UnsealError):
        node1.vault.unseal(row.sealed_share, v.share_aad("k1", node1.node_id, 2))
    # moved to another node (node 2's database, node 2's HSM): unknown key or bad tag
    node2.store.put_key(
        KeyRow(
            "k3", row.scheme, 1, row.public_key, row.public_info, row.sealed_share, row.seal_version
        )
    )
    node2.anchor.record_committee("k3", [1, 2, 3])
    with pytest.raises(UnsealError) as e:
        node2.frost_commitments("k3", 1)
    assert e.value.reason in ("authentication_failed", "unknown_key_version")
    # same HSM, other node id in the AAD
    with pytest.raises(UnsealError) as e:
        node1.vault.unseal(row.sealed_share, v.share_aad("k1", "node-2", row.share_version))
    assert e.value.reason == "authentication_failed"
    # a truncated blob has a precise header error
    with pytest.raises(UnsealError) as e:
        node1.vault.unseal(row.sealed_share[:10], v.share_aad("k1", node1.node_id, 1))
    assert e.value.reason == "bad_header"
