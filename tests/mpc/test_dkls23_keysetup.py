"""mpc.dkls23.keysetup.KeygenChain: DKG then OT setup as one composite session."""

from __future__ import annotations

import secrets

import pytest

from mpc.dkls23.keygen import PROTOCOL_SETUP
from mpc.dkls23.keysetup import KeygenChain, setup_session_id
from mpc.errors import ProtocolError, UsageError
from mpc.testing import run_local
from mpc.wire import Message


@pytest.mark.parametrize("order", ["fifo", "random"])
def test_chain_gives_every_party_a_share_of_one_key(order: str) -> None:
    sid = secrets.token_bytes(32)
    chains = {p: KeygenChain(sid, p, [1, 2, 3], 2, b"ctx") for p in (1, 2, 3)}
    assert chains[1].accepts == {"frost-dkg": sid, PROTOCOL_SETUP: setup_session_id(sid)}
    with pytest.raises(UsageError):
        _ = chains[1].result
    results = run_local(chains, order=order, seed=7)  # type: ignore[arg-type]
    assert all(c.done and c.protocol == PROTOCOL_SETUP for c in chains.values())
    keys = {r.group_public_key.encode() for r in results.values()}
    assert len(keys) == 1
    assert {r.identifier for r in results.values()} == {1, 2, 3}
    assert all(set(r.bob) == {1, 2, 3} - {p} for p, r in results.items())


def test_early_setup_messages_are_bounded_and_blamed() -> None:
    sid = secrets.token_bytes(32)
    chain = KeygenChain(sid, 1, [1, 2, 3], 2)
    chain.start()
    early = Message(PROTOCOL_SETUP, setup_session_id(sid), 1, 2, 1, {})
    for _ in range(5):  # one per setup round is what an honest early peer can send
        assert chain.receive(early) == []
    with pytest.raises(ProtocolError) as e:
        chain.receive(early)
    assert e.value.culprits == (2,)
    assert chain.waiting_for() == (2, 3)
