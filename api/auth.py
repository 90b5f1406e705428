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

Credentials are managed through ``/v1/credentials`` (admin, :mod:`api.routes.credentials`):
every change is an audit entry in the transaction that makes it (``credential.create``,
``.rotate`` with the new token hash, ``.scope`` with the new scope, ``.revoke``), and a row
that differs from what its entries made of it is refused (:func:`api.integrity.
credential_matches`). A **scope** (``{"keys": [...], "wallets": [...]}``, wallets of the
active governance's policy, :class:`custody.policy.Wallet`) limits the keys a credential
may sign with (:func:`check_scope`); no scope: every key, as before.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, func, select, update

from api import audit
from api.db import AuditEntry, Credential, Database, utcnow
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
    scope: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Create a credential of ``principal`` (default: the credential id) and its audit
    entry (``credential.create``, carrying role, principal, token hash and scope: a row
    that differs from it is refused); returns ``(credential_id, token)`` (the token is
    shown once)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if principal is not None and not is_valid_id(principal):
        raise ValueError(f"principal {principal!r}: 1-{MAX_ID_LEN} characters of {ID_ALPHABET}")
    sc = normal_scope(scope)
    token = new_token()
    cid = "cred_" + uuid.uuid4().hex[:20]
    name = principal or cid
    h = hash_token(token)
    with db.session() as s:
        s.add(Credential(id=cid, role=role, principal=name, token_sha256=h, label=label, scope=sc))
        audit.append(s, actor, "credential.create", cid, credential_entry(role, h, label, name, sc))
    return cid, token


def get_credential(db: Database, credential_id: str) -> Credential | None:
    with db.session() as s:
        return s.get(Credential, credential_id)


def list_credentials(db: Database, *, include_revoked: bool = False) -> list[Credential]:
    """Every credential, oldest first (revoked ones only with ``include_revoked``)."""
    q = select(Credential).order_by(Credential.created_at, Credential.id)
    if not include_revoked:
        q = q.where(Credential.revoked.is_(False))
    with db.session() as s:
        return list(s.scalars(q))


def normal_scope(scope: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
    """``{"keys": sorted ids, "wallets": sorted names}``, or None for no scope at all."""
    if scope is None:
        return None
    keys = sorted({str(k) for k in scope.get("keys") or ()})
    wallets = sorted({str(w) for w in scope.get("wallets") or ()})
    return {"keys": keys, "wallets": wallets}


def revoke_credential(db: Database, credential_id: str, actor: str) -> bool:
    """Revoke a credential (audited as ``credential.revoke``); False if it is unknown.
    Revoking a revoked credential changes nothing and is not audited again. The last live
    admin credential is not revoked (409 ``last-admin``: nobody could manage credentials
    any more)."""
    with db.session() as s:
        row = s.get(Credential, credential_id)
        if row is None:
            return False
        if row.revoked:
            return True
        if row.role == "admin":
            admins = s.scalar(
                select(func.count())
                .select_from(Credential)
                .where(Credential.role == "admin", Credential.revoked.is_(False))
            )
            if (admins or 0) <= 1:
                raise Problem(
                    409,
                    "last-admin",
                    "Last admin credential",
                    "create another admin credential before revoking this one",
                )
        row.revoked = True
        audit.append(s, actor, "credential.revoke", credential_id, {})
    return True


def rotate_credential(db: Database, credential_id: str, actor: str) -> str | None:
    """A new token for a live credential (same id, role, principal and scope; the old
    token is refused from now on, after at most the credential cache TTL), audited as
    ``credential.rotate`` with the new hash; None when unknown or revoked."""
    token = new_token()
    h = hash_token(token)
    with db.session() as s:
        done = s.execute(
            update(Credential)
            .where(Credential.id == credential_id, Credential.revoked.is_(False))
            .values(token_sha256=h, rotated_at=utcnow())
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return None
        audit.append(s, actor, "credential.rotate", credential_id, {"token_sha256": h})
    return token


def scope_credential(
    db: Database, credential_id: str, scope: Mapping[str, Any] | None, actor: str
) -> bool:
    """Set (or, with None, lift) a live credential's scope, audited as
    ``credential.scope``; False when unknown or revoked."""
    sc = normal_scope(scope)
    with db.session() as s:
        done = s.execute(
            update(Credential)
            .where(Credential.id == credential_id, Credential.revoked.is_(False))
            .values(scope=sc)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return False
        audit.append(s, actor, "credential.scope", credential_id, {"scope": sc})
    return True


def check_scope(p: Principal, key_id: str, wallets: Iterable[Any]) -> None:
    """403 problem ``credential-out-of-scope`` unless ``p`` may use ``key_id``: it has no
    scope, or the key is one of its keys or in one of its wallets (``wallets``: the active
    policy's :class:`custody.policy.Wallet` objects)."""
    if p.scope is None:
        return
    if key_id in p.scope.get("keys", ()):
        return
    mine = set(p.scope.get("wallets", ()))
    if any(w.name in mine and key_id in w.key_ids for w in wallets):
        return
    raise Problem(
        403,
        "credential-out-of-scope",
        "Key outside the credential's scope",
        f"credential {p.credential_id} may not use key {key_id!r}",
        key_id=key_id,
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling: the credential, its role, and the named principal it belongs to."""

    credential_id: str
    role: str
    principal_id: str
    scope: Mapping[str, Any] | None = None


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
    principal = Principal(row.id, row.role, row.principal or row.id, row.scope or None)
    ttl = request.app.state.settings.credential_cache_ttl
    if ttl > 0:
        if len(seen) >= SEEN_MAX:
            seen.clear()
        seen[h] = (principal, now + ttl)
    return principal


# Valid credentials seen in the last ``settings.credential_cache_ttl`` seconds
# (``CUSTODY_CREDENTIAL_CACHE_TTL``, default 1; by token hash): a busy client authenticates
# with one database read per second instead of one per request (the read and its
# connection checkout cost ~12% of the coordinator's CPU at 32 concurrent signatures). So
# a revoked, rotated or re-scoped credential takes effect at most that long later, on
# every coordinator (at once on the one that made the change: it forgets its cache);
# unknown or revoked tokens are never cached.
SEEN_MAX = 4096


def forget_cached(app: Any) -> None:
    """Drop this app's credential cache (after a credential changed through it)."""
    app.state.credentials_seen = {}


_BY_HASH = select(
    Credential.id,
    Credential.role,
    Credential.principal,
    Credential.token_sha256,
    Credential.revoked,
    Credential.scope,
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
