"""Bearer credentials, each bound to one role.

Tokens are ``tpwc_`` + 32 random bytes (base64url) from the OS CSPRNG; only
``sha256(token)`` is stored. A plain hash is enough here, unlike for passwords: a token
carries 256 bits of entropy, so nobody can brute-force it from a leaked hash, and a slow
KDF (argon2, scrypt) would only add tens of milliseconds to every request without adding
security. Lookup is by the hash, so response timing reveals nothing about the token.

Roles: ``admin`` (key ceremonies, node enrolment), ``requester`` (asks for signatures),
``approver`` (posts approvals and rejections), ``auditor`` (read-only). A credential has
exactly one role, so nobody can both request and approve.

Every credential belongs to a named **principal** (the id rule of :mod:`custody.domain`;
by default the credential's own id): the principal of a requester's credential is the
``initiator`` of each request it creates, which never counts as an approver
(:mod:`custody.approvals`). The principal is part of the audited creation, like the role.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select, update

from api import audit
from api.db import AuditEntry, Credential, Database
from api.integrity import CREDENTIAL_ACTIONS, credential_entry, credential_matches
from api.problems import Problem
from custody.domain import ID_ALPHABET, MAX_ID_LEN, ROLES, is_valid_id

AUTH_ERRORS = (401, 403)  # what every authenticated route may answer

_bearer = HTTPBearer(auto_error=False, description="a token bound to one role")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tpwc_" + secrets.token_urlsafe(32)


def create_credential(
    db: Database,
    role: str,
    label: str = "",
    actor: str = "bootstrap",
    *,
    principal: str | None = None,
) -> tuple[str, str]:
    """Create a credential of ``principal`` (default: the credential id) and its audit
    entry (``credential.create``, carrying role, principal and token hash: a row that
    differs from it is refused); returns ``(credential_id, token)`` (the token is shown
    once)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if principal is not None and not is_valid_id(principal):
        raise ValueError(f"principal {principal!r}: 1-{MAX_ID_LEN} characters of {ID_ALPHABET}")
    token = new_token()
    cid = "cred_" + uuid.uuid4().hex[:20]
    name = principal or cid
    h = hash_token(token)
    with db.session() as s:
        s.add(Credential(id=cid, role=role, principal=name, token_sha256=h, label=label))
        audit.append(s, actor, "credential.create", cid, credential_entry(role, h, label, name))
    return cid, token


def revoke_credential(db: Database, credential_id: str, actor: str) -> bool:
    """Revoke a credential (audited as ``credential.revoke``); False if it is unknown."""
    with db.session() as s:
        done = s.execute(
            update(Credential).where(Credential.id == credential_id).values(revoked=True)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return False
        audit.append(s, actor, "credential.revoke", credential_id, {})
    return True


@dataclass(frozen=True)
class Principal:
    """Who is calling: the credential, its role, and the named principal it belongs to."""

    credential_id: str
    role: str
    principal_id: str


def _authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        p = Problem(
            401,
            "unauthorized",
            "Missing or invalid credentials",
            "send Authorization: Bearer <token>",
        )
        p.headers["WWW-Authenticate"] = "Bearer"
        raise p
    h = hash_token(creds.credentials)
    now = time.monotonic()
    seen: dict[str, tuple[Principal, float]] | None = getattr(
        request.app.state, "credentials_seen", None
    )  # per app: one coordinator, one database
    if seen is None:
        seen = request.app.state.credentials_seen = {}
    hit = seen.get(h)
    if hit is not None and hit[1] > now:
        return hit[0]
    db: Database = request.app.state.db
    with db.engine.connect() as conn:  # indexed Core reads, no ORM session
        row = conn.execute(_BY_HASH, {"h": h}).first()
        events = [] if row is None else [(a, d) for a, d in conn.execute(_EVENTS, {"cid": row.id})]
    # A row that is not what its audited creation made (inserted or edited in the
    # database behind the API) is refused like an unknown token.
    if row is None or row.revoked or not credential_matches(row, events):
        seen.pop(h, None)
        p = Problem(
            401, "unauthorized", "Missing or invalid credentials", "unknown or revoked token"
        )
        p.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        raise p
    principal = Principal(row.id, row.role, row.principal or row.id)
    if len(seen) >= SEEN_MAX:
        seen.clear()
    seen[h] = (principal, now + SEEN_TTL)
    return principal


# Valid credentials seen in the last SEEN_TTL seconds (by token hash): a busy client
# authenticates with one database read per second instead of one per request (the read
# and its connection checkout cost ~12% of the coordinator's CPU at 32 concurrent
# signatures). So a revoked credential is refused at most SEEN_TTL seconds later, on
# every coordinator; unknown or revoked tokens are never cached.
SEEN_TTL = 1.0
SEEN_MAX = 4096


_BY_HASH = select(
    Credential.id,
    Credential.role,
    Credential.principal,
    Credential.token_sha256,
    Credential.revoked,
).where(Credential.token_sha256 == bindparam("h"))
_EVENTS = (
    select(AuditEntry.action, AuditEntry.data)
    .where(AuditEntry.subject == bindparam("cid"), AuditEntry.action.in_(CREDENTIAL_ACTIONS))
    .order_by(AuditEntry.seq)
)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only credentials whose role is in ``roles``."""

    # async: one indexed read of a pooled connection (tens of microseconds on SQLite) costs
    # less on the event loop than the worker-thread hop FastAPI makes for a sync dependency,
    # and 32 concurrent worker threads overflowed the connection pool (a new connection,
    # with its PRAGMAs, per request).
    async def dep(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = _authenticate(request, creds)
        # on every log line of this request from here on (custody.obs)
        structlog.contextvars.bind_contextvars(credential_id=principal.credential_id)
        if principal.role not in roles:
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"role {principal.role!r} may not do this; needs one of {list(roles)}",
            )
        return principal

    return dep
