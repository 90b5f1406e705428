"""``/v1/credentials``: create, list, show, scope, rotate and revoke bearer credentials
(admin only). Every change is audited in its own transaction (:mod:`api.auth`); a token is
returned once, at creation or rotation, and only its SHA-256 is kept."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from api import auth
from api.auth import AUTH_ERRORS
from api.db import Credential
from api.deps import Admin, Db, IdPath
from api.problems import Problem, problem_responses
from custody.models import (
    CredentialCreate,
    CredentialIssued,
    CredentialList,
    CredentialOut,
    CredentialScopeSet,
)

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])


def credential_out(c: Credential) -> dict[str, Any]:
    return {
        "id": c.id,
        "role": c.role,
        "principal": c.principal or c.id,
        "label": c.label,
        "scope": c.scope,
        "revoked": bool(c.revoked),
        "created_at": c.created_at,
        "rotated_at": c.rotated_at,
    }


def _get(db: Db, credential_id: str) -> Credential:
    row = auth.get_credential(db, credential_id)
    if row is None:
        raise Problem(404, "not-found", "Not found", f"no credential {credential_id!r}")
    return row


def _revoked(credential_id: str) -> Problem:
    return Problem(409, "credential-revoked", "Credential revoked", f"{credential_id} is revoked")


@router.post(
    "",
    status_code=201,
    response_model=CredentialIssued,
    responses=problem_responses(*AUTH_ERRORS, 422),
    summary="Create a credential",
    operation_id="createCredential",
)
async def create_credential(body: CredentialCreate, db: Db, p: Admin) -> dict[str, Any]:
    """A new bearer credential of one role, belonging to ``principal`` (default: its own
    id), optionally scoped to keys and wallets. The ``token`` is in this answer only."""
    scope = body.scope.model_dump() if body.scope is not None else None

    def make() -> tuple[str, str]:
        return auth.create_credential(
            db, body.role, body.label, p.credential_id, principal=body.principal, scope=scope
        )

    cid, token = await asyncio.to_thread(make)
    return {**credential_out(await asyncio.to_thread(_get, db, cid)), "token": token}


@router.get(
    "",
    response_model=CredentialList,
    responses=problem_responses(*AUTH_ERRORS),
    summary="List credentials",
    operation_id="listCredentials",
)
async def list_credentials(db: Db, _: Admin, include_revoked: bool = False) -> dict[str, Any]:
    """Every credential (never a token or its hash), oldest first; revoked ones with
    ``include_revoked``."""

    rows = await asyncio.to_thread(
        lambda: auth.list_credentials(db, include_revoked=include_revoked)
    )
    return {
        "items": [credential_out(c) for c in rows],
        "next_cursor": None,
    }


@router.get(
    "/{credential_id}",
    response_model=CredentialOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Show one credential",
    operation_id="getCredential",
)
async def get_credential(credential_id: IdPath, db: Db, _: Admin) -> dict[str, Any]:
    """One credential: role, principal, label, scope, whether revoked, when rotated."""
    return credential_out(await asyncio.to_thread(_get, db, credential_id))


@router.put(
    "/{credential_id}/scope",
    response_model=CredentialOut,
    responses=problem_responses(*AUTH_ERRORS, 404, 409, 422),
    summary="Scope a credential to keys and wallets",
    operation_id="scopeCredential",
)
async def scope_credential(
    credential_id: IdPath, body: CredentialScopeSet, request: Request, db: Db, p: Admin
) -> dict[str, Any]:
    """Set the keys and wallets a credential may sign with (``scope: null``: every key).
    Takes effect at once on this coordinator, within the credential cache TTL on others."""
    row = await asyncio.to_thread(_get, db, credential_id)
    scope = body.scope.model_dump() if body.scope is not None else None
    if not await asyncio.to_thread(auth.scope_credential, db, row.id, scope, p.credential_id):
        raise _revoked(credential_id)
    auth.forget_cached(request.app)
    return credential_out(await asyncio.to_thread(_get, db, credential_id))


@router.post(
    "/{credential_id}/rotate",
    response_model=CredentialIssued,
    responses=problem_responses(*AUTH_ERRORS, 404, 409),
    summary="Rotate a credential's token",
    operation_id="rotateCredential",
)
async def rotate_credential(
    credential_id: IdPath, request: Request, db: Db, p: Admin
) -> dict[str, Any]:
    """A new token for the same credential (id, role, principal, scope kept); the old
    token is refused from now on (within the credential cache TTL on other coordinators).
    The new ``token`` is in this answer only."""
    await asyncio.to_thread(_get, db, credential_id)
    token = await asyncio.to_thread(auth.rotate_credential, db, credential_id, p.credential_id)
    if token is None:
        raise _revoked(credential_id)
    auth.forget_cached(request.app)
    return {**credential_out(await asyncio.to_thread(_get, db, credential_id)), "token": token}


@router.delete(
    "/{credential_id}",
    response_model=CredentialOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Revoke a credential",
    operation_id="revokeCredential",
)
async def revoke_credential(
    credential_id: IdPath, request: Request, db: Db, p: Admin
) -> dict[str, Any]:
    """Revoke a credential for good (the row stays, for the audit log). Revoking a
    revoked credential answers the same and audits nothing new."""
    if not await asyncio.to_thread(auth.revoke_credential, db, credential_id, p.credential_id):
        raise Problem(404, "not-found", "Not found", f"no credential {credential_id!r}")
    auth.forget_cached(request.app)
    return credential_out(await asyncio.to_thread(_get, db, credential_id))
