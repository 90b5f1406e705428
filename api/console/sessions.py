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

The store is in memory, per coordinator process: a restart signs everyone out, and a
console behind a load balancer needs sticky sessions (docs/CONSOLE.md).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

COOKIE: Final = "__Host-tpwc_console"
IDLE: Final = 600  # seconds without a request
LIFETIME: Final = 3600  # seconds after sign-in, whatever the activity
MAX_SESSIONS: Final = 10_000

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

    @property
    def signed_in(self) -> bool:
        return self.approver_id is not None


class Sessions:
    """The in-memory session store; ``clock`` is replaceable (tests advance it)."""

    def __init__(
        self,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _expired(self, s: Session, now: float) -> bool:
        if now - s.seen > self.idle:
            return True
        return s.signed_in_at is not None and now - s.signed_in_at > self.lifetime

    def new(self) -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                self._sweep(now)
            self._by_id[s.sid] = s
        return s

    def _sweep(self, now: float) -> None:
        for sid in [k for k, v in self._by_id.items() if self._expired(v, now)]:
            del self._by_id[sid]
        if len(self._by_id) >= MAX_SESSIONS:  # still full: drop the oldest anonymous ones
            for sid in sorted(
                (k for k, v in self._by_id.items() if not v.signed_in),
                key=lambda k: self._by_id[k].seen,
            )[: MAX_SESSIONS // 10]:
                del self._by_id[sid]

    def get(self, sid: str | None) -> Session | None:
        """The live session of ``sid`` (its idle clock restarted), or None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if self._expired(s, now):
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def sign_in(self, old: Session, approver_id: str, credential_id: bytes) -> Session:
        """A new session (new id and CSRF token) for the signed-in approver; ``old`` ends."""
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
        with self._lock:
            self._by_id.pop(old.sid, None)
            self._by_id[s.sid] = s
        return s

    def end(self, s: Session) -> None:
        with self._lock:
            self._by_id.pop(s.sid, None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
