"""``/v1/audit``: the hash-chained audit log and its verification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import AUTH_ERRORS
from api.deps import Auditor, Cursor, Repo
from api.problems import problem_responses
from api.serializers import audit_out
from custody.models import AuditList, AuditVerify

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditList, responses=problem_responses(*AUTH_ERRORS, 422))
async def list_audit(
    repo: Repo,
    _: Auditor,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The hash-chained audit log, oldest first."""
    return repo.audit_entries(limit, cursor).out(audit_out)


@router.get("/verify", response_model=AuditVerify, responses=problem_responses(*AUTH_ERRORS))
async def verify_audit(repo: Repo, _: Auditor) -> dict[str, Any]:
    """Recompute the hash chain."""
    ok, n, bad = repo.verify_audit()
    return {"ok": ok, "entries": n, "first_bad_seq": bad}
