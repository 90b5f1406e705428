"""Console sessions and the web-security rules every console response carries (issue 15).

A session is a server-side record behind a random 256-bit id in one cookie
(``__Host-tpwc_console``: HttpOnly, Secure, SameSite=Strict, Path=/, no Domain; RFC 6265bis
section 4.1.3.2 ``__Host-`` prefix). Every visitor gets an anonymous one (it carries the
CSRF token and the WebAuthn ceremony in progress); signing in with a passkey replaces it by
a new id (no session fixation). Sessions expire: ``idle`` seconds after the last request,
and at the latest ``lifetime`` seconds after sign-in. A session never approves anything on
its own: each approval or rejection needs a fresh assertion over that request's statement
(:mod:`api.console.routes`).

CSRF (OWASP "synchronizer token"): each session has a random token, in a ``<meta>`` of every
page; every state-changing request (POST) must send it in ``X-CSRF-Token`` (the console's
own script does), compared in constant time. SameSite=Strict is the second layer.

The store is the coordinator database (:class:`Sessions`, table ``console_sessions``,
revision 0003): several coordinators behind one load balancer serve one browser, and a
restart signs nobody out. It keeps the SHA-256 of each session token, never the token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import delete, func, select, update

from api.db import ConsoleSession, Database
from custody import approvals as ap

COOKIE: Final = "__Host-tpwc_console"
IDLE: Final = 600  # seconds without a request
LIFETIME: Final = 3600  # seconds after sign-in, whatever the activity
MAX_SESSIONS: Final = 10_000
MAX_CEREMONIES: Final = 32  # WebAuthn ceremonies one session keeps in progress
SWEEP_EVERY: Final = 60  # seconds between sweeps of expired rows (per coordinator)

#: Content-Security-Policy of every console response: no inline script or style, nothing
#: from another origin, no framing (CSP Level 3; frame-ancestors replaces X-Frame-Options).
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    seen: float
    approver_id: str | None = None  # signed in: the approver of the credential
    credential_id: bytes | None = None
    signed_in_at: float | None = None
    # a WebAuthn ceremony in progress: ("login" | "register" | request id, challenge, extra)
    ceremony: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # the row's compare-and-set counter (Sessions.take_ceremony)

    @property
    def signed_in(self) -> bool:
        return self.approver_id is not None


def token_hash(token: str) -> str:
    """What the database keeps of a session token: its SHA-256 (hex). The 256-bit random
    token itself is only in the browser's cookie, so a copy of the table signs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


def _rows(result: Any) -> int:
    """The rows an UPDATE or DELETE touched."""
    return int(getattr(result, "rowcount", 0) or 0)


def _ms(t: float) -> int:
    return int(t * 1000)


def _to_json(value: Any) -> Any:
    """A ceremony's values as JSON: bytes as ``{"$hex": ...}``, an approval statement as
    ``{"$statement": {...}}`` (its fields, digests in hex)."""
    if isinstance(value, bytes):
        return {"$hex": value.hex()}
    if isinstance(value, ap.ApprovalStatement):
        return {"$statement": _to_json(dataclasses.asdict(value))}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$hex"}:
            return bytes.fromhex(value["$hex"])
        if set(value) == {"$statement"}:
            return ap.ApprovalStatement(**_from_json(value["$statement"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class Sessions:
    """The session store, in the coordinator database (:class:`api.db.ConsoleSession`), so
    every coordinator on that database serves the same sessions and a restart keeps them;
    ``clock`` is replaceable (tests advance it).

    A session row is read on every console request (its idle clock restarted), written when
    its ceremony changes (:meth:`save`) and taken from (:meth:`take_ceremony`) with a
    compare-and-set on ``version``: a challenge is used once even when two coordinators get
    the same verify call. Expired rows are deleted when met and swept (:meth:`sweep`, at
    most every :data:`SWEEP_EVERY` seconds, from :meth:`new`); beyond :data:`MAX_SESSIONS`
    live rows the oldest anonymous ones go first."""

    def __init__(
        self,
        db: Database,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock
        self._swept = -math.inf

    def _expires(self, seen: float, signed_in_at: float | None) -> float:
        end = seen + self.idle
        return end if signed_in_at is None else min(end, signed_in_at + self.lifetime)

    def _row(self, s: Session) -> ConsoleSession:
        return ConsoleSession(
            token_sha256=token_hash(s.sid),
            csrf=s.csrf,
            approver_id=s.approver_id,
            credential_id=None if s.credential_id is None else s.credential_id.hex(),
            created_ms=_ms(s.created),
            seen_ms=_ms(s.seen),
            signed_in_ms=None if s.signed_in_at is None else _ms(s.signed_in_at),
            expires_ms=_ms(self._expires(s.seen, s.signed_in_at)),
            ceremony=_to_json(s.ceremony),
            version=s.version,
        )

    @staticmethod
    def _session(token: str, r: ConsoleSession) -> Session:
        return Session(
            token,
            r.csrf,
            r.created_ms / 1000,
            r.seen_ms / 1000,
            approver_id=r.approver_id,
            credential_id=None if r.credential_id is None else bytes.fromhex(r.credential_id),
            signed_in_at=None if r.signed_in_ms is None else r.signed_in_ms / 1000,
            ceremony=_from_json(r.ceremony),
            version=r.version,
        )

    def _expired(self, s: Session, now: float) -> bool:
        if now - s.seen > self.idle:
            return True
        return s.signed_in_at is not None and now - s.signed_in_at > self.lifetime

    def new(self) -> Session:
        now = self.clock()
        if now - self._swept > SWEEP_EVERY:
            self.sweep()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self.db.session() as db:
            db.add(self._row(s))
        return s

    def sweep(self) -> int:
        """Delete the expired rows (and, over :data:`MAX_SESSIONS`, the oldest anonymous
        ones); how many went."""
        now = self.clock()
        self._swept = now
        with self.db.session() as db:
            gone = _rows(
                db.execute(delete(ConsoleSession).where(ConsoleSession.expires_ms < _ms(now)))
            )
            live = db.scalar(select(func.count()).select_from(ConsoleSession)) or 0
            if live >= MAX_SESSIONS:
                oldest = (
                    select(ConsoleSession.token_sha256)
                    .where(ConsoleSession.approver_id.is_(None))
                    .order_by(ConsoleSession.seen_ms)
                    .limit(MAX_SESSIONS // 10)
                )
                gone += _rows(
                    db.execute(
                        delete(ConsoleSession).where(ConsoleSession.token_sha256.in_(oldest))
                    )
                )
        return gone

    def get(self, sid: str | None) -> Session | None:
        """The live session of ``sid`` (its idle clock restarted), or None."""
        if not sid or len(sid) > 100:
            return None
        now = self.clock()
        h = token_hash(sid)
        with self.db.session() as db:
            r = db.get(ConsoleSession, h)
            if r is None:
                return None
            s = self._session(sid, r)
            if self._expired(s, now):
                db.delete(r)
                return None
            s.seen = now
            r.seen_ms = _ms(now)
            r.expires_ms = _ms(self._expires(now, s.signed_in_at))
            return s

    def save(self, s: Session) -> None:
        """Store the session's ceremonies (after the route set one); expired ones, and
        beyond :data:`MAX_CEREMONIES` the oldest, are dropped."""
        now = time.time()
        live = sorted(
            ((k, v) for k, v in s.ceremony.items() if v.get("until", 0) >= now),
            key=lambda kv: kv[1].get("until", 0),
        )
        s.ceremony = dict(live[-MAX_CEREMONIES:])
        with self.db.session() as db:
            r = db.get(ConsoleSession, token_hash(s.sid))
            if r is None:
                return  # ended meanwhile (signed out elsewhere, or swept)
            r.ceremony = _to_json(s.ceremony)
            r.version = r.version + 1
            s.version = r.version

    def take_ceremony(self, s: Session, kind: str) -> dict[str, Any] | None:
        """Remove and return the ceremony ``kind`` in progress, once: the row is re-read
        and written back only if no other request changed it meanwhile."""
        h = token_hash(s.sid)
        with self.db.session() as db:
            r = db.get(ConsoleSession, h)
            if r is None:
                return None
            ceremony = _from_json(r.ceremony)
            taken = ceremony.pop(kind, None)
            if taken is None:
                return None
            done = _rows(
                db.execute(
                    update(ConsoleSession)
                    .where(ConsoleSession.token_sha256 == h, ConsoleSession.version == r.version)
                    .values(ceremony=_to_json(ceremony), version=r.version + 1)
                )
            )
            if done != 1:
                return None  # another request took or changed it first
        s.ceremony.pop(kind, None)
        return taken  # type: ignore[no-any-return]

    def sign_in(self, old: Session, approver_id: str, credential_id: bytes) -> Session:
        """A new session (new token and CSRF token) for the signed-in approver; ``old``
        ends (its row deleted in the same transaction)."""
        now = self.clock()
        s = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            now,
            now,
            approver_id=approver_id,
            credential_id=credential_id,
            signed_in_at=now,
        )
        with self.db.session() as db:
            db.execute(
                delete(ConsoleSession).where(ConsoleSession.token_sha256 == token_hash(old.sid))
            )
            db.add(self._row(s))
        return s

    def end(self, s: Session) -> None:
        with self.db.session() as db:
            db.execute(
                delete(ConsoleSession).where(ConsoleSession.token_sha256 == token_hash(s.sid))
            )


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
