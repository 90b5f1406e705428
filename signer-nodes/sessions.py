"""The session host: runs protocol sessions (DKG, key setup, presign) from typed specs.

A session is started from a :class:`~signer_nodes.specs.SessionSpec`; the protocol object
comes from a :class:`~signer_nodes.protocols.SessionFactory` and lives in memory only (its
secret state never leaves the process; a restart fails every running session). Every
outgoing message is sealed into an envelope (:mod:`signer_nodes.identity`) and appended to
the session's outbox in the database; every incoming envelope is checked (replay by hash,
then :func:`signer_nodes.envelope.open_envelope`) before the protocol sees it. A refused
envelope is reported (``refused``) and does not harm the session; a protocol error fails
it, with the culprits the protocol named. The secret result of a finished session goes to
sealed storage through the factory; the session keeps only its public result.

A failed session's ``error`` is a :meth:`NodeError.to_record` record; the service renders
it as a problem document.

Imports: :mod:`signer_nodes.anchor`, ``.envelope``, ``.errors``, ``.identity``, ``.logs``,
``.protocols``, ``.specs``, ``.store``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mpc.errors import MpcError
from mpc.wire import Message
from signer_nodes import logs
from signer_nodes.anchor import Anchor
from signer_nodes.envelope import EnvelopeError, envelope_hash
from signer_nodes.errors import Kind, NodeError
from signer_nodes.identity import Identity
from signer_nodes.protocols import ProtocolSession, SessionFactory
from signer_nodes.specs import SessionSpec
from signer_nodes.store import NodeStore

__all__ = ["SessionHost", "RESTARTED"]

RESTARTED = NodeError(Kind.RESTARTED, "the node restarted; protocol state in memory was lost")


@dataclass
class _Live:
    """A running protocol session in memory."""

    spec: SessionSpec
    rs: ProtocolSession
    accepts: Mapping[str, bytes]
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionHost:
    """Runs this node's protocol sessions (see the module docstring).

    ``factory`` is public on purpose: it is the one seam that decides which protocol object
    a spec runs (tests wrap it to make a node misbehave).
    """

    def __init__(
        self, identity: Identity, store: NodeStore, factory: SessionFactory, anchor: Anchor
    ) -> None:
        self.identity = identity
        self.anchor = anchor
        self.store = store
        self.factory = factory
        self._live: dict[str, _Live] = {}
        self._live_lock = threading.Lock()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def start(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Start the session a request body describes; returns its state (first envelopes)."""
        spec = SessionSpec.parse(raw, self.identity.party_id)
        # Governance first: every participant in the roster, and for a presign the key's
        # committee still as the officers pinned it (fail closed without governance).
        self.anchor.check_parties(spec.participants)
        if spec.kind == "ecdsa-presign":
            self.anchor.check_committee(spec.key_id)
        peers = self.identity.peers()
        missing = [p for p in spec.participants if p not in peers]
        if missing:
            raise NodeError(
                Kind.UNKNOWN_PEER, f"parties {missing} are not in the governance roster"
            )
        if self.store.get_session(spec.session_id) is not None:
            raise NodeError(
                Kind.SESSION_EXISTS, f"session {spec.session_id} already exists on this node"
            )
        try:
            rs = self.factory.new_session(spec)
        except MpcError as exc:
            raise NodeError(Kind.BAD_REQUEST, str(exc)) from None
        self.store.create_session(spec.as_record())
        live = _Live(spec, rs, self.factory.accepts(spec, rs))
        with self._live_lock:
            self._live[spec.session_id] = live
        with live.lock:
            try:
                out = rs.start()
            except MpcError as exc:
                self._fail(live, exc)
                return self.state(spec.session_id)
            self._emit(live, out)
        logs.event(
            "session.start",
            node_id=self.node_id,
            session_id=spec.session_id,
            kind=spec.kind,
            key_id=spec.key_id,
            participants=list(spec.participants),
        )
        return self.state(spec.session_id, new_only=out)

    def deliver(self, session_id: str, envelopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Verify, open and feed relayed envelopes; return the new state and any refusals."""
        self.anchor.require()
        info = self.store.get_session(session_id)
        if info is None:
            raise NodeError(Kind.UNKNOWN_SESSION, f"no session {session_id} on this node")
        with self._live_lock:
            live = self._live.get(session_id)
        refused: list[dict[str, Any]] = []
        produced: list[Message] = []
        if live is None or info["status"] != "running":
            for e in envelopes:
                refused.append(
                    {
                        "from": e.get("from"),
                        "reason": "stale",
                        "detail": f"session is {info['status']}",
                    }
                )
            logs.warn(
                "envelope.refused",
                node_id=self.node_id,
                session_id=session_id,
                reason="stale",
                count=len(envelopes),
            )
            return {**self.state(session_id), "refused": refused}
        peers = {
            p: peer for p, peer in self.identity.peers().items() if p in live.spec.participants
        }
        with live.lock:
            for e in envelopes:
                try:
                    raw = bytes.fromhex(str(e.get("envelope", "")))
                except ValueError:
                    refused.append(
                        {"from": e.get("from"), "reason": "malformed", "detail": "not hex"}
                    )
                    continue
                h = envelope_hash(raw)
                try:
                    if self.store.envelope_seen(session_id, h):
                        raise EnvelopeError("replay", "envelope already delivered")
                    msg = self.identity.open(raw, peers, live.accepts)
                except EnvelopeError as exc:
                    refused.append(
                        {
                            "from": e.get("from"),
                            "reason": exc.reason,
                            "detail": exc.detail,
                            **({"culprit": exc.party} if exc.party is not None else {}),
                        }
                    )
                    logs.warn(
                        "envelope.refused",
                        node_id=self.node_id,
                        session_id=session_id,
                        reason=exc.reason,
                        claimed_from=e.get("from"),
                        culprit=exc.party,
                    )
                    continue
                with self.store.tx() as c:
                    self.store.add_envelope(
                        c, session_id, "in", h, msg.sender, msg.recipient, msg.round, None
                    )
                try:
                    out = live.rs.receive(msg)
                except MpcError as exc:
                    self._fail(live, exc)
                    break
                self._emit(live, out)
                produced.extend(out)
                if live.rs.done:
                    self._complete(live)
                    break
        return {**self.state(session_id, new_only=produced), "refused": refused}

    def state(self, session_id: str, new_only: Sequence[Message] | None = None) -> dict[str, Any]:
        """Status, outbox (all of it, or only the envelopes of ``new_only``), result, error."""
        info = self.store.get_session(session_id)
        if info is None:
            raise NodeError(Kind.UNKNOWN_SESSION, f"no session {session_id} on this node")
        with self._live_lock:
            live = self._live.get(session_id)
        out = self.store.outbox(session_id)
        if new_only is not None:
            out = out[len(out) - len(new_only) :] if new_only else []
        return {
            "session_id": session_id,
            "status": info["status"],
            "envelopes": [{"from": s, "to": r, "envelope": e.hex()} for s, r, e in out],
            "waiting_for": list(live.rs.waiting_for())
            if live and info["status"] == "running"
            else [],
            "result": info["result"],
            "error": info["error"],
        }

    # -- internals -----------------------------------------------------------------------
    def _emit(self, live: _Live, out: Sequence[Message]) -> None:
        """Seal outgoing messages into envelopes and append them to the session's outbox."""
        peers = self.identity.peers()
        with self.store.tx() as c:
            for m in out:
                env = self.identity.seal(m, peers)
                self.store.add_envelope(
                    c,
                    live.spec.session_id,
                    "out",
                    envelope_hash(env),
                    m.sender,
                    m.recipient,
                    m.round,
                    env,
                )

    def _drop(self, session_id: str) -> None:
        with self._live_lock:  # drop the protocol object (and its secret state) at once
            self._live.pop(session_id, None)

    def _fail(self, live: _Live, exc: MpcError) -> None:
        culprits: tuple[int, ...] = getattr(exc, "culprits", ()) or (
            (exc.party,) if exc.party is not None else ()
        )
        err = NodeError(Kind.PROTOCOL_ERROR, str(exc), culprits=culprits)
        self.factory.on_failure(live.spec, exc)
        self.store.finish_session(live.spec.session_id, "failed", error=err.to_record())
        self._drop(live.spec.session_id)
        logs.warn(
            "session.failed",
            node_id=self.node_id,
            session_id=live.spec.session_id,
            error=type(exc).__name__,
            culprits=list(culprits),
        )

    def _complete(self, live: _Live) -> None:
        sid = live.spec.session_id
        try:
            if live.spec.kind == "dkg":
                self.anchor.record_committee(live.spec.key_id, live.spec.participants)
            result = self.factory.finish(live.spec, live.rs)
        except MpcError as exc:
            self._fail(live, exc)
            return
        except NodeError as exc:
            self.store.finish_session(sid, "failed", error=exc.to_record())
            self._drop(sid)
            return
        self.store.finish_session(sid, "done", result=result)
        self._drop(sid)
        logs.event(
            "session.done",
            node_id=self.node_id,
            session_id=sid,
            kind=live.spec.kind,
            key_id=live.spec.key_id,
        )
