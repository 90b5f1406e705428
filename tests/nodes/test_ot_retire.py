"""A failed OT-extension/multiplication check retires the pair's base OTs on the node.

Node 2 is malicious here: it signs and encrypts (so every envelope check passes) a round-2
multiplication message whose ``tau`` was tampered with. Node 1's check fails, names node 2,
and node 1 then refuses every later presign session with node 2 for this key (the DKLs18
errata: a failing check may be a selective-failure probe, so those base OTs are never
extended again), while other signer sets keep working.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from signer_nodes.node import NodeError

from tests.nodes.conftest import InProc


def _presign_spec(key_id: str, parties: list[int]) -> dict[str, Any]:
    return {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": parties,
    }


def _make_malicious(node: Any, session_id: str) -> None:
    """Wrap node 2's protocol object so the round-2 message it seals carries a bad ``tau``."""
    live = node._live[session_id]
    honest = live.rs.receive

    def receive(msg: Any) -> list[Any]:
        out = honest(msg)
        bad = []
        for m in out:
            if "tau" in m.payload:
                tau = bytearray(m.payload["tau"])
                tau[40] ^= 1
                m = dataclasses.replace(m, payload={**m.payload, "tau": bytes(tau)})
            bad.append(m)
        return bad

    live.rs.receive = receive


def test_failed_check_retires_the_pair_and_later_presigns_with_it_are_refused(
    inproc: InProc,
) -> None:
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ke")

    spec = _presign_spec("ke", [1, 2])
    states = {p: n[p].start_session(spec) for p in (1, 2)}
    _make_malicious(n[2], spec["session_id"])
    queue = [e for st in states.values() for e in st["envelopes"]]
    while queue:
        env = queue.pop(0)
        target = env["to"] if env["to"] is not None else 3 - env["from"]
        st = n[target].deliver(spec["session_id"], [env])
        queue.extend(st["envelopes"])
    failed = n[1].session_state(spec["session_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["culprits"] == [2]

    with pytest.raises(NodeError) as refused:
        n[1].start_session(_presign_spec("ke", [1, 2]))
    assert refused.value.kind == "ot-pair-retired" and refused.value.culprits == (2,)

    # the retirement is durable (it survives reopening node 1) and scoped to the pair
    from signer_nodes import ecdsa
    from signer_nodes.node import Node

    root = n[1].paths.root
    n[1].close()
    n[1] = Node.open(root)
    assert ecdsa.retired_ot_peers(n[1], "ke") == {2}
    assert ecdsa.retired_ot_peers(n[3], "ke") == set()
    with pytest.raises(NodeError, match="ot-pair-retired"):
        n[1].start_session(_presign_spec("ke", [1, 2]))
    ok = inproc.run_session(_presign_spec("ke", [1, 3]))
    assert all(st["status"] == "done" for st in ok.values()), ok
