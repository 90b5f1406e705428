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
from collections.abc import Mapping
from typing import Any

import pytest

from mpc.errors import MpcError
from mpc.wire import Message
from signer_nodes.errors import NodeError
from signer_nodes.node import Node
from signer_nodes.protocols import ProtocolSession, SessionFactory
from signer_nodes.specs import SessionSpec
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


class _BadTau:
    """Node 2's protocol object, honest except that the round-2 message it sends carries a
    tampered ``tau`` (sealed and signed by node 2 itself, so every envelope check passes)."""

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
        bad = []
        for m in self.rs.receive(msg):
            if "tau" in m.payload:
                tau = bytearray(m.payload["tau"])
                tau[40] ^= 1
                m = dataclasses.replace(m, payload={**m.payload, "tau": bytes(tau)})
            bad.append(m)
        return bad


class _Malicious:
    """Node 2's session factory (the host's public seam), making presign sessions bad."""

    def __init__(self, honest: SessionFactory) -> None:
        self.honest = honest

    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        return _BadTau(self.honest.new_session(spec))

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        return self.honest.accepts(spec, rs)

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        return self.honest.finish(spec, rs)

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        self.honest.on_failure(spec, exc)


def test_failed_check_retires_the_pair_and_later_presigns_with_it_are_refused(
    inproc: InProc,
) -> None:
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ke")

    spec = _presign_spec("ke", [1, 2])
    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    inproc.run_session(spec)
    n[2].sessions.factory = honest
    failed = n[1].session_state(spec["session_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["culprits"] == [2]

    with pytest.raises(NodeError) as refused:
        n[1].start_session(_presign_spec("ke", [1, 2]))
    assert refused.value.kind == "ot-pair-retired" and refused.value.culprits == (2,)

    # the retirement is durable (it survives reopening node 1) and scoped to the pair
    root = n[1].paths.root
    n[1].close()
    n[1] = Node.open(root)
    assert n[1].shares.retired_ot_peers("ke") == {2}
    assert n[3].shares.retired_ot_peers("ke") == set()
    with pytest.raises(NodeError, match="ot-pair-retired"):
        n[1].start_session(_presign_spec("ke", [1, 2]))
    ok = inproc.run_session(_presign_spec("ke", [1, 3]))
    assert all(st["status"] == "done" for st in ok.values()), ok
