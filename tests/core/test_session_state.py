"""RoundSession's explicit life cycle: IDLE -> RUNNING -> DONE, any peer error -> FAILED."""

from __future__ import annotations

import dataclasses

import pytest

from mpc.dkg import DkgSession
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import ED25519
from mpc.session import TRANSITIONS, SessionState
from mpc.testing import run_local
from mpc.wire import Message

SID = bytes(range(32))


def _sessions() -> dict[int, DkgSession]:
    return {i: DkgSession(ED25519, SID, i, [1, 2, 3], 2) for i in (1, 2, 3)}


def test_transition_table_is_the_documented_graph() -> None:
    S = SessionState
    assert TRANSITIONS == {
        S.IDLE: {S.RUNNING},
        S.RUNNING: {S.DONE, S.FAILED},
        S.DONE: {S.FAILED},
        S.FAILED: set(),
    }


def test_honest_run_walks_idle_running_done() -> None:
    s = _sessions()
    assert {x.state for x in s.values()} == {SessionState.IDLE}
    with pytest.raises(UsageError, match="before start"):
        s[1].receive(s[2].start()[0])
    assert s[1].state is SessionState.IDLE and s[2].state is SessionState.RUNNING
    fresh = _sessions()
    results = run_local(fresh)
    assert {x.state for x in fresh.values()} == {SessionState.DONE}
    assert {r.public.group_public_key for r in results.values()} == {
        fresh[1].result.public.group_public_key
    }
    with pytest.raises(UsageError, match="twice"):
        fresh[1].start()


def test_peer_error_fails_closed_and_names_the_party() -> None:
    s = _sessions()
    first = {i: s[i].start()[0] for i in s}
    bad = dataclasses.replace(first[2], payload={**first[2].payload, "pok_r": b"\x00" * 32})
    s[1].receive(first[3])  # buffered: round 1 is decoded once complete
    with pytest.raises(DecodeError) as ei:
        s[1].receive(bad)
    assert ei.value.party == 2 and ei.value.field == "pok_r"
    assert s[1].state is SessionState.FAILED
    with pytest.raises(DecodeError):  # dead: every later call raises the same error
        s[1].receive(first[2])
    assert s[1].waiting_for() == ()


def test_replay_after_done_fails_the_session() -> None:
    s = _sessions()
    out: list[Message] = []
    first = {i: s[i].start()[0] for i in s}
    for i in s:
        for j in s:
            if j != i:
                out += s[j].receive(first[i])
    for m in out:
        assert m.recipient is not None
        s[m.recipient].receive(m)
    assert s[1].state is SessionState.DONE
    with pytest.raises(ProtocolError, match="stale or replayed") as ei:
        s[1].receive(first[2])
    assert ei.value.culprits == (2,) and s[1].state is SessionState.FAILED
    with pytest.raises(ProtocolError):
        _ = s[1].result
