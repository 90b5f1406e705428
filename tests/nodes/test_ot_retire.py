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

import coincurve
import pytest

from mpc.dkls23 import EcdsaKeyShare, PresignSession, combine_signature, sign_with_presignature
from mpc.dkls23.resetup import OtResetupChain
from mpc.errors import MpcError
from mpc.refresh import RefreshSession
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from mpc.wire import Message
from signer_nodes import ecdsa
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


def test_retirement_aborts_the_pairs_running_presign_at_its_next_message(
    inproc: InProc,
) -> None:
    """Issue 13 item 7: a retirement stops the pair's sessions already running, not only new
    ones. Session B (parties 1, 2) is started on both nodes and left waiting; session A with
    the same pair fails node 1's check (node 2 malicious) and retires the pair on node 1.
    Node 1's B then fails at the very next message it is given, naming the pair, and sends
    nothing more; a session of node 1 with node 3 runs on untouched."""
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ke")

    spec_b = _presign_spec("ke", [1, 2])
    sid_b = spec_b["session_id"]
    first = {p: n[p].start_session(spec_b) for p in (1, 2)}
    spec_c = _presign_spec("ke", [1, 3])
    first_c = {p: n[p].start_session(spec_c) for p in (1, 3)}

    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    inproc.run_session(_presign_spec("ke", [1, 2]))
    n[2].sessions.factory = honest
    assert n[1].shares.retired_ot_peers("ke") == {2}
    assert n[1].session_state(sid_b)["status"] == "running"  # nothing reached it yet

    to_1 = [e for e in first[2]["envelopes"] if e["to"] == 1]
    st = n[1].deliver(sid_b, to_1)
    assert st["status"] == "failed"
    assert st["envelopes"] == []  # no round-2 message leaves node 1 for the retired pair
    err = st["error"]
    assert err["culprits"] == [2]
    assert "OT pair (1, 2)" in err["detail"] and "retired" in err["detail"], err

    # node 2's late round-2 message for B is refused as stale by node 1
    st2 = n[2].deliver(sid_b, [e for e in first[1]["envelopes"] if e["to"] == 2])
    late = [e for e in st2["envelopes"] if e["to"] == 1]
    assert late and all(r["reason"] == "stale" for r in n[1].deliver(sid_b, late)["refused"])

    # the session with node 3, started before the retirement, is not affected
    c1 = n[1].deliver(spec_c["session_id"], [e for e in first_c[3]["envelopes"] if e["to"] == 1])
    assert c1["status"] == "running" and c1["envelopes"], c1


def _retire_1_2(inproc: InProc) -> None:
    n = inproc.nodes
    honest = n[2].sessions.factory
    n[2].sessions.factory = _Malicious(honest)
    inproc.run_session(_presign_spec("ke", [1, 2]))
    n[2].sessions.factory = honest
    assert n[1].shares.retired_ot_peers("ke") == {2}


def _refresh_with_fresh_ots(inproc: InProc) -> dict[int, EcdsaKeyShare]:
    """The OT re-setup ceremony's protocol (refresh, then a new base-OT setup for every
    pair: OtResetupChain), run over the nodes' own shares; the service wiring is elsewhere."""
    old = {i: ecdsa.load_share(nd.shares, "ke") for i, nd in inproc.nodes.items()}
    sid = secrets.token_bytes(32)
    chains = {i: OtResetupChain(RefreshSession(s.key, sid)) for i, s in old.items()}
    out: dict[int, EcdsaKeyShare] = run_local(chains)  # type: ignore[arg-type]
    return out


def test_ot_resetup_reenables_a_retired_pair_and_the_new_shares_sign(inproc: InProc) -> None:
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ke")
    _retire_1_2(inproc)
    new = _refresh_with_fresh_ots(inproc)
    done = {i: ecdsa.resetup_pairs(n[i].shares, "ke", new[i]) for i in n}
    assert done[1]["reenabled_peers"] == [2] and done[3]["reenabled_peers"] == []
    assert all(d["share_version"] == 2 for d in done.values())
    assert n[1].shares.retired_ot_peers("ke") == set()

    # the pair presigns again through the nodes, and it survives reopening node 1
    root = n[1].paths.root
    n[1].close()
    n[1] = Node.open(root)
    assert n[1].shares.retired_ot_peers("ke") == set()
    ok = inproc.run_session(_presign_spec("ke", [1, 2]))
    assert all(st["status"] == "done" for st in ok.values()), ok

    # the stored shares are the new ones and sign (verified independently with coincurve)
    shares = {i: ecdsa.load_share(n[i].shares, "ke") for i in (1, 2)}
    assert shares[1].key_id == new[1].key_id and shares[1].bob[2].k0 == new[1].bob[2].k0
    sid = secrets.token_bytes(32)
    pre = run_local({i: PresignSession(shares[i], sid, [1, 2]) for i in (1, 2)})
    digest = secrets.token_bytes(32)
    parts = [
        sign_with_presignature(pre[i], shares[i], digest, ledger=MemoryLedger()) for i in (1, 2)
    ]
    pk = shares[1].group_public_key
    sig = combine_signature(pre[1].public, parts, digest, pk)
    assert coincurve.PublicKey(pk.encode()).verify(sig.to_der(), digest, hasher=None)


def test_ot_resetup_refuses_shares_that_are_not_a_fresh_setup(inproc: InProc) -> None:
    """Attacks on the re-setup input: the old share again (same base OTs), another party's
    share, a share of another key, and a share with one pair's seeds kept. Each is refused
    naming the party, and the stored share and the retirement stay as they were."""
    n = inproc.nodes
    inproc.dkg("ecdsa-secp256k1", "ke")
    _retire_1_2(inproc)
    old = ecdsa.load_share(n[1].shares, "ke")
    new = _refresh_with_fresh_ots(inproc)

    with pytest.raises(NodeError, match=r"no fresh base OTs with parties \[2, 3\]") as e:
        ecdsa.resetup_pairs(n[1].shares, "ke", old)
    assert e.value.culprits == (2, 3)
    with pytest.raises(NodeError, match="party 2's, not this node's \\(party 1\\)"):
        ecdsa.resetup_pairs(n[1].shares, "ke", new[2])
    other = run_keygen_local(2, 3)[1]
    with pytest.raises(NodeError, match="party 1's re-setup share .* another group public key"):
        ecdsa.resetup_pairs(n[1].shares, "ke", other)
    kept = EcdsaKeyShare(new[1].key, {**new[1].bob, 2: old.bob[2]}, new[1].alice)
    with pytest.raises(NodeError, match=r"parties \[2\]") as e:
        ecdsa.resetup_pairs(n[1].shares, "ke", kept)
    assert e.value.kind == "bad-request" and e.value.culprits == (2,)

    assert n[1].shares.retired_ot_peers("ke") == {2}
    assert n[1].shares.row("ke").share_version == 1
    assert ecdsa.load_share(n[1].shares, "ke").bob[2].k0 == old.bob[2].k0
