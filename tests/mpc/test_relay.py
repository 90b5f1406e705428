"""mpc.relay: the one envelope router (sans-IO) the coordinator's session relay drives."""

from __future__ import annotations

import pytest

from mpc.relay import Envelope, Relay, RelayError


def env(sender: int, to: int | None, payload: str, session: str = "s1") -> Envelope[str]:
    return Envelope(session, sender, to, payload)


def test_broadcast_and_direct_batches_per_recipient() -> None:
    r: Relay[str] = Relay("s1", [1, 2, 3])
    assert r.submit(env(1, None, "b1")) is True
    assert r.submit(env(2, 3, "d23")) is True
    assert r.submit_all([env(3, None, "b3"), env(3, 1, "d31")]) == 2
    out = r.take()
    assert {q: [e.payload for e in b] for q, b in out.items()} == {
        2: ["b1", "b3"],
        3: ["b1", "d23"],
        1: ["b3", "d31"],
    }
    assert r.take() == {} and not r.pending and r.routed == 4


def test_repeats_are_routed_once() -> None:
    r: Relay[str] = Relay("s1", [1, 2])
    assert r.submit(env(1, 2, "x")) is True
    assert r.submit(env(1, 2, "x")) is False
    assert [e.payload for e in r.take()[2]] == ["x"]
    assert r.submit(env(1, 2, "x")) is False  # re-read outbox after delivery
    assert r.take() == {}
    # same payload in another round is another envelope
    assert r.submit(Envelope("s1", 1, 2, "x", round=2)) is True


@pytest.mark.parametrize(
    ("bad", "culprit"),
    [
        (env(9, None, "x"), 9),  # not a participant
        (env(1, 9, "x"), 1),  # recipient not a participant
        (env(1, 1, "x"), 1),  # to itself
        (env(2, None, "x", session="other"), 2),  # another session
    ],
)
def test_violations_blame_the_sender(bad: Envelope[str], culprit: int) -> None:
    r: Relay[str] = Relay("s1", [1, 2, 3])
    with pytest.raises(RelayError) as e:
        r.submit(bad)
    assert e.value.culprits == (culprit,)
    assert r.take() == {}


def test_done_tracking() -> None:
    r: Relay[str] = Relay("s1", [1, 2, 3])
    r.submit(env(1, None, "last"))
    r.mark_done(1)
    assert r.not_done == (2, 3) and r.done == {1}
    assert r.submit(env(1, None, "last")) is False  # its final outbox, read again
    with pytest.raises(RelayError) as e:
        r.submit(env(1, None, "after"))
    assert e.value.culprits == (1,)
    r.mark_done(2)
    r.mark_done(3)
    assert not r.finished  # "last" still to deliver
    r.take()
    assert r.finished
    with pytest.raises(RelayError):
        r.mark_done(7)
    with pytest.raises(ValueError):
        Relay("s1", [1])
