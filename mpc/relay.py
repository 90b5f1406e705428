"""A sans-IO envelope router for one multi-party session.

Whoever moves protocol messages between parties (the coordinator over HTTP, an in-process
test harness, :mod:`mpc.local`) hands every party's outgoing envelopes to one
:class:`Relay` and delivers the per-recipient batches it gives back; the relay does no I/O,
keeps no clock and never looks inside a payload. It enforces the routing rules:

* only a participant sends, and only envelopes of this session, under its own name;
* a direct envelope goes to another participant (never to its sender); a broadcast
  (``recipient is None``) goes to every participant except the sender;
* an envelope is routed once: a party that reports the same envelope again (its outbox
  is re-read on every poll) does not make it delivered twice;
* a party that said it is done sends nothing more.

A violation raises :class:`RelayError` naming the party at fault (its ``culprits``), so
the driver can blame it, as :mod:`mpc.session` errors do.

    relay = Relay(session_id, participants=[1, 2, 3])
    relay.submit(Envelope(session_id, sender=1, recipient=None, payload=b"..."))
    for recipient, batch in relay.take().items():
        deliver(recipient, [e.payload for e in batch])
    relay.mark_done(1)
    relay.finished  # every participant done and nothing left to deliver
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mpc.errors import ProtocolError

__all__ = ["Envelope", "Relay", "RelayError"]

P = TypeVar("P", bound=Hashable)


class RelayError(ProtocolError):
    """An envelope broke a routing rule; ``culprits`` names the party that sent it."""


@dataclass(frozen=True)
class Envelope(Generic[P]):
    """The routing header of one protocol message and its opaque, hashable payload.

    ``recipient`` is ``None`` for a broadcast; ``round`` is informative (routing does not
    depend on it) and part of the envelope's identity for de-duplication."""

    session: str
    sender: int
    recipient: int | None
    payload: P
    round: int | None = None


class Relay(Generic[P]):
    """Routes the envelopes of one session among ``participants`` (party ids)."""

    def __init__(self, session: str, participants: Iterable[int]) -> None:
        self.session = session
        self.participants: frozenset[int] = frozenset(participants)
        if len(self.participants) < 2:
            raise ValueError("a session needs at least two participants")
        self._seen: set[Envelope[P]] = set()
        self._outbox: dict[int, list[Envelope[P]]] = {}
        self._done: set[int] = set()
        self.routed = 0  # envelopes accepted (statistics)

    # -- input ------------------------------------------------------------------------------
    def submit(self, envelope: Envelope[P]) -> bool:
        """Accept one outgoing envelope; False when it was already routed (a repeat).

        Raises :class:`RelayError` blaming the sender for a foreign session, a sender that
        is not a participant or already done, or a recipient that is not another
        participant."""
        s = envelope.sender
        if s not in self.participants:
            raise RelayError(f"party {s} is not a participant", culprits=(s,))
        if envelope.session != self.session:
            raise RelayError(f"party {s} sent an envelope of another session", culprits=(s,))
        if envelope in self._seen:
            return False
        if s in self._done:
            raise RelayError(f"party {s} sent an envelope after it was done", culprits=(s,))
        to = envelope.recipient
        if to is not None and (to not in self.participants or to == s):
            raise RelayError(f"party {s} addressed party {to}", culprits=(s,))
        self._seen.add(envelope)
        for q in [to] if to is not None else sorted(self.participants - {s}):
            self._outbox.setdefault(q, []).append(envelope)
        self.routed += 1
        return True

    def submit_all(self, envelopes: Iterable[Envelope[P]]) -> int:
        """:meth:`submit` each; returns how many were new."""
        return sum(self.submit(e) for e in envelopes)

    def mark_done(self, party: int) -> None:
        """``party`` finished the protocol (it sends nothing more)."""
        if party not in self.participants:
            raise RelayError(f"party {party} is not a participant", culprits=(party,))
        self._done.add(party)

    # -- output -----------------------------------------------------------------------------
    def take(self) -> dict[int, list[Envelope[P]]]:
        """The envelopes to deliver now, per recipient in the order submitted; each is
        handed out once."""
        out, self._outbox = self._outbox, {}
        return out

    @property
    def pending(self) -> bool:
        """Envelopes are waiting to be taken."""
        return bool(self._outbox)

    @property
    def done(self) -> frozenset[int]:
        return frozenset(self._done)

    @property
    def not_done(self) -> tuple[int, ...]:
        """Participants that have not said they are done, in order."""
        return tuple(sorted(self.participants - self._done))

    @property
    def finished(self) -> bool:
        """Every participant is done and nothing is left to deliver."""
        return not self._outbox and self._done == self.participants
