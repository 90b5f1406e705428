"""``/v1/audit``: the hash-chained audit log, its verification and its node-signed
checkpoints."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.auth import AUTH_ERRORS
from api.deps import Admin, Auditor, CoordinatorDep, Cursor, IdempotencyKey, Repo, SettingsDep
from api.idempotency import run_idempotent
from api.problems import problem_responses
from api.serializers import audit_out, checkpoint_out
from custody.models import AuditList, AuditVerify, CheckpointList, CheckpointOut

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditList, responses=problem_responses(*AUTH_ERRORS, 422))
async def list_audit(
    repo: Repo,
    _: Auditor,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The hash-chained audit log, oldest first."""
    page = await asyncio.to_thread(repo.audit_entries, limit, cursor)
    return page.out(audit_out)


@router.get("/verify", response_model=AuditVerify, responses=problem_responses(*AUTH_ERRORS))
async def verify_audit(repo: Repo, settings: SettingsDep, _: Auditor) -> dict[str, Any]:
    """Recompute the chain, check it against the node-signed checkpoints, every credential
    against its audited creation and every stored signature; names the first bad entry of
    each tampering found."""
    return await asyncio.to_thread(repo.verify_audit, settings.cluster_id)


@router.get(
    "/checkpoints", response_model=CheckpointList, responses=problem_responses(*AUTH_ERRORS)
)
async def list_checkpoints(repo: Repo, _: Auditor) -> dict[str, Any]:
    """Stored checkpoints, oldest first (trusted only through their node signatures)."""
    rows = await asyncio.to_thread(repo.checkpoints)
    return {"items": [checkpoint_out(c) for c in rows]}


@router.post(
    "/checkpoints",
    status_code=201,
    response_model=CheckpointOut,
    responses=problem_responses(*AUTH_ERRORS, 409, 422, 502),
)
async def create_checkpoint(
    request: Request, idempotency_key: IdempotencyKey, c: CoordinatorDep, p: Admin
) -> JSONResponse:
    """Ask every node to co-sign the current chain head; stored when one node signed
    (502 problem ``checkpoint-unsigned``, with each node's answer, when none did; 409
    when there is nothing new or no node is enrolled)."""

    async def handler() -> tuple[int, dict[str, Any]]:
        return 201, await c.checkpoints.create(p.credential_id)

    return await run_idempotent(request, p, idempotency_key, handler)
