"""The sans-IO round engine every protocol object is built on (h11 style).

A protocol object is driven with three calls and never does I/O itself:

* ``start()`` returns the first outgoing messages;
* ``receive(msg)`` takes one incoming :class:`~mpc.wire.Message` and returns whatever
  must be sent next (possibly nothing);
* ``result`` holds the outcome once ``done`` is true.

The engine checks the routing header of every message before the protocol sees it (right
protocol, right session, addressed to us, from a participant other than us), rejects a
second message from the same sender in the same round (replay or equivocation) and stale
messages from finished rounds, and buffers early messages so that any delivery order
completes. ``waiting_for()`` names the parties a stalled session still waits on, so the
driver can report a dropout. Once any error is raised the object is dead: every later call
raises the same error (fail closed).

The life cycle is an explicit :class:`SessionState`; every change of state goes through
``_to`` and the table ``TRANSITIONS`` (h11 style: the states and their moves in one place)::

    IDLE --start()--> RUNNING --last round processed--> DONE
                         |                               |
                         +--peer error--> FAILED <--------+  (a replay after the end)

Randomness: a session draws every secret through ``self._rng`` (``Callable[[int], bytes]``,
default :func:`secrets.token_bytes`). Only :func:`mpc.hazmat.set_rng` replaces it, before
``start()``, to make a run reproducible (recorded vectors).
"""

from __future__ import annotations

import enum
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from mpc.errors import DecodeError, MpcError, ProtocolError, UsageError
from mpc.wire import SESSION_ID_LEN, Message

R = TypeVar("R")

#: A source of randomness: ``rng(n)`` returns ``n`` uniformly random bytes.
Rng = Callable[[int], bytes]


class SessionState(enum.Enum):
    """Where a :class:`RoundSession` is in its life cycle."""

    IDLE = "idle"  # constructed; start() not called yet
    RUNNING = "running"  # started; collecting the messages of current_round
    DONE = "done"  # every round processed; result is set
    FAILED = "failed"  # a peer's message was refused; the session is dead (fail closed)


#: The only moves between states. DONE -> FAILED: a replayed message after the last round
#: is a peer's fault and is reported; the session then refuses to hand out its result.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.IDLE: frozenset({SessionState.RUNNING}),
    SessionState.RUNNING: frozenset({SessionState.DONE, SessionState.FAILED}),
    SessionState.DONE: frozenset({SessionState.FAILED}),
    SessionState.FAILED: frozenset(),
}


class RoundSession(ABC, Generic[R]):
    """Base class: a protocol among ``participants`` run by party ``me`` in ``session_id``."""

    protocol: str = ""
    #: rounds in which this party expects messages, in order
    rounds: tuple[int, ...] = ()

    def __init__(self, *, session_id: bytes, me: int, participants: Sequence[int]) -> None:
        if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_LEN:
            raise UsageError(f"session id must be {SESSION_ID_LEN} bytes")
        if me not in participants:
            raise UsageError(f"party {me} is not among the participants", party=me)
        if len(set(participants)) != len(participants):
            raise UsageError("duplicate participant identifiers")
        self.session_id = session_id
        self.me = me
        self.participants = tuple(sorted(participants))
        self.others = tuple(p for p in self.participants if p != me)
        self._state = SessionState.IDLE
        self._round_index = 0
        self._inbox: dict[int, dict[int, Message]] = {r: {} for r in self.rounds}
        self._result: R | None = None
        self._error: MpcError | None = None
        self._rng: Rng = secrets.token_bytes

    # -- public API ------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state is SessionState.DONE

    @property
    def result(self) -> R:
        self._raise_if_failed()
        if self._state is not SessionState.DONE or self._result is None:
            raise UsageError(
                f"{self.protocol}: no result yet (waiting for {list(self.waiting_for())})"
            )
        return self._result

    @property
    def current_round(self) -> int | None:
        return (
            None
            if self._state is SessionState.DONE or self._round_index >= len(self.rounds)
            else self.rounds[self._round_index]
        )

    def waiting_for(self) -> tuple[int, ...]:
        """Parties whose message for the current round has not arrived yet."""
        r = self.current_round
        if r is None or self._state is not SessionState.RUNNING:
            return ()
        return tuple(p for p in self.expected_senders(r) if p not in self._inbox[r])

    def start(self) -> list[Message]:
        self._raise_if_failed()
        if self._state is not SessionState.IDLE:
            raise UsageError(f"{self.protocol}: start() called twice")
        self._to(SessionState.RUNNING)
        return self._guard(self._start)

    def receive(self, msg: Message) -> list[Message]:
        self._raise_if_failed()
        if self._state is SessionState.IDLE:
            raise UsageError(f"{self.protocol}: receive() before start()")
        return self._guard(lambda: self._receive(msg))

    # -- for subclasses ----------------------------------------------------------------
    @abstractmethod
    def _start(self) -> list[Message]: ...

    @abstractmethod
    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        """Handle the complete set of messages of ``round`` (sender -> message)."""

    def expected_senders(self, round: int) -> tuple[int, ...]:
        return self.others

    def expected_kind(self, round: int) -> str:
        """``"broadcast"``, ``"direct"`` or ``"any"`` for the messages of ``round``."""
        return "any"

    def _finish(self, result: R) -> None:
        self._result = result
        self._to(SessionState.DONE)

    def _msg(self, round: int, payload: dict[str, Any], recipient: int | None = None) -> Message:
        return Message(self.protocol, self.session_id, round, self.me, recipient, payload)

    # -- engine ------------------------------------------------------------------------
    def _to(self, new: SessionState) -> None:
        """Move to ``new``; the only place the state changes (see ``TRANSITIONS``)."""
        if new not in TRANSITIONS[self._state]:
            raise UsageError(f"{self.protocol}: no transition {self._state.name} -> {new.name}")
        self._state = new

    def _guard(self, fn: Any) -> list[Message]:
        try:
            out: list[Message] = fn()
            return out
        except (ProtocolError, DecodeError) as exc:
            self._error = exc
            self._to(SessionState.FAILED)
            raise

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _receive(self, msg: Message) -> list[Message]:
        if not isinstance(msg, Message):
            raise UsageError("receive() takes a mpc.wire.Message")
        s = msg.sender
        if msg.protocol != self.protocol:
            raise DecodeError(f"expected protocol {self.protocol!r}", field="protocol", party=s)
        if msg.session_id != self.session_id:
            raise DecodeError("message belongs to another session", field="session_id", party=s)
        if s == self.me or s not in self.participants:
            raise DecodeError(
                f"sender {s} is not another participant of this session", field="sender", party=s
            )
        if msg.recipient is not None and msg.recipient != self.me:
            raise DecodeError(
                f"message addressed to {msg.recipient}, not to {self.me}",
                field="recipient",
                party=s,
            )
        if msg.round not in self._inbox:
            raise DecodeError(f"unexpected round {msg.round}", field="round", party=s)
        kind = self.expected_kind(msg.round)
        if (kind == "broadcast" and msg.recipient is not None) or (
            kind == "direct" and msg.recipient is None
        ):
            raise DecodeError(
                f"round {msg.round} messages must be {kind}", field="recipient", party=s
            )
        if self.done or self.rounds.index(msg.round) < self._round_index:
            raise ProtocolError(
                f"stale or replayed message for finished round {msg.round}", culprits=(s,)
            )
        if s not in self.expected_senders(msg.round):
            raise DecodeError(
                f"party {s} does not send in round {msg.round}", field="sender", party=s
            )
        box = self._inbox[msg.round]
        if s in box:
            raise ProtocolError(
                f"second message in round {msg.round} (replay or equivocation)", culprits=(s,)
            )
        box[s] = msg
        out: list[Message] = []
        while not self.done and self._round_index < len(self.rounds):
            r = self.rounds[self._round_index]
            if set(self._inbox[r]) != set(self.expected_senders(r)):
                break
            msgs = self._inbox[r]
            self._inbox[r] = {}
            self._round_index += 1
            out.extend(self._process_round(r, msgs))
        return out
