"""An old holder that did not deal in a resharing is told to retire its share (issue 13).

Key 2-of-3 on nodes 1, 2, 3 is reshared to 2-of-2 on nodes 1 and 2, dealt by nodes 1 and 2
alone: node 3 takes no part. The new committee refuses node 3's old share; node 3 is then
sent the transcript (``POST /v1/keys/{id}/commit`` with ``retire``: the outcome every
participant signed and the officers' authorization), verifies it itself and deletes its
share. Forged or mismatched notices are refused and delete nothing. In-process nodes."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from signer_nodes.errors import NodeError
from tests.nodes.ceremony_auth import authorize
from tests.nodes.conftest import InProc, public_package


def test_an_old_holder_that_did_not_deal_verifies_the_transcript_and_retires(
    inproc: InProc,
) -> None:
    n = inproc.nodes
    o = inproc.officers
    dkg = inproc.dkg("ed25519", "ke")
    pk = dkg["public_key"]
    spec: dict[str, Any] = {
        "session_id": secrets.token_hex(32),
        "kind": "reshare",
        "key_id": "ke",
        "scheme": "ed25519",
        "threshold": 2,
        "participants": [1, 2],
    }
    auth = authorize(o.keys, o.cluster_id, spec, pk, 1, committee=[1, 2])
    states = inproc.run_session({**spec, "authorization": auth})
    assert all(st["status"] == "done" for st in states.values()), states
    results = {p: n[p].session_state(spec["session_id"])["result"] for p in (1, 2)}
    sigs = {str(p): r["signature"] for p, r in results.items()}
    outcome = results[1]["outcome"]
    for p in (1, 2):
        body = {"session_id": spec["session_id"], "signatures": sigs}
        assert n[p].commit_share("ke", body)["status"] == "committed"
    new_pub = public_package(results[1], "ed25519")

    # the new committee refuses node 3's old share by name
    req = {"id": "with-3", "key_id": "ke", "kind": "raw", "message": b"m".hex()}
    with pytest.raises(NodeError) as e:
        inproc.frost_sign("ed25519", "ke", [1, 3], req, new_pub)
    assert e.value.kind == "bad-signing-package" and "participant 3" in e.value.detail, e.value
    assert n[3].shares.exists("ke")

    def notice(**over: Any) -> dict[str, Any]:
        retire = {"outcome": over.pop("outcome", outcome), "authorization": over.pop("auth", auth)}
        return {"session_id": spec["session_id"], "signatures": sigs, "retire": retire, **over}

    # a notice missing a participant's statement, or with another's signature in its place
    with pytest.raises(NodeError) as e:
        n[3].commit_share("ke", notice(signatures={"1": sigs["1"]}))
    assert e.value.culprits == (2,)
    with pytest.raises(NodeError) as e:
        n[3].commit_share("ke", notice(signatures={"1": sigs["1"], "2": sigs["1"]}))
    assert e.value.culprits == (2,)
    # an outcome edited (another version) no longer matches, nor do its signatures
    with pytest.raises(NodeError) as e:
        n[3].commit_share("ke", notice(outcome={**outcome, "share_version": 3}))
    assert e.value.code == "ceremony-authorization-mismatch"
    # an authorization that keeps node 3, or one signed by one officer only
    keep = authorize(o.keys, o.cluster_id, {**spec, "participants": [1, 2, 3]}, pk, 1)
    with pytest.raises(NodeError) as e:
        n[3].commit_share("ke", notice(auth=keep))
    assert e.value.code == "ceremony-authorization-mismatch" and "leaves node-3 out" in str(e.value)
    one = authorize(o.keys, o.cluster_id, spec, pk, 1, committee=[1, 2], by=sorted(o.keys)[:1])
    with pytest.raises(NodeError) as e:
        n[3].commit_share("ke", notice(auth=one))
    assert e.value.code == "ceremony-authorization-under-signed"
    # a notice for a session that never ran
    with pytest.raises(NodeError):
        n[3].commit_share("ke", notice(session_id=secrets.token_hex(32)))
    assert n[3].shares.exists("ke") and n[3].shares.row("ke").share_version == 1

    out = n[3].commit_share("ke", notice())
    assert out["status"] == "retired"
    assert not n[3].shares.exists("ke")
    with pytest.raises(NodeError) as e:
        n[3].frost_commitments("ke", 1)
    assert e.value.kind == "unknown-key"
    assert n[3].commit_share("ke", notice())["status"] == "retired"  # idempotent
    # the new committee signs on
    req = {"id": "after", "key_id": "ke", "kind": "raw", "message": b"after".hex()}
    sig = inproc.frost_sign("ed25519", "ke", [1, 2], req, new_pub)
    VerifyKey(bytes.fromhex(pk)).verify(message_to_sign("ed25519", req), sig)
