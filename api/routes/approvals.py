"""``/v1/sign-requests/{id}/approvals`` and ``/rejections``: approvers sign, the request moves.

Body ``{"approval": "<base64>"}``: an approver's signed statement
(:class:`custody.approvals.ApprovalStatement`, made by ``custody approve`` /
``custody reject`` after decoding the request locally). The coordinator checks it against
the request's own body and the active governance before storing it (a 422 problem whose
``type`` is the refusal reason when it would not count: ``approval-expired``,
``approval-other-request``, ``approval-bad-signature``, ``approval-by-initiator``,
``approval-wrong-decision``, ...), audits it, and when the requirement holds starts signing
(once, whatever the concurrency); one valid rejection from a required group rejects the
request. A request that no longer waits for approvals answers 409.
Needs the ``approver`` role (or ``admin``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import AUTH_ERRORS, Principal
from api.coordinator import Coordinator
from api.coordinator.approvals import Want
from api.deps import Approver, CoordinatorDep, IdempotencyKey, IdPath, Repo
from api.idempotency import run_idempotent
from api.problems import Problem, problem_responses
from api.routes.sign_requests import approval_view
from api.serializers import sign_out
from custody.models import ApprovalSubmit, SignRequestOut

router = APIRouter(prefix="/v1/sign-requests", tags=["approvals"])
_RESPONSES = problem_responses(*AUTH_ERRORS, 404, 409, 422)


async def _submit(
    request: Request,
    request_id: IdPath,
    body: ApprovalSubmit,
    want: Want,
    idempotency_key: str,
    c: Coordinator,
    repo: Repo,
    p: Principal,
) -> JSONResponse:
    async def handler() -> tuple[int, dict[str, Any]]:
        r = await asyncio.to_thread(repo.sign_request, request_id)
        if r is None:
            raise Problem(404, "not-found", "Not found", f"no sign request {request_id!r}")
        if r.status != "pending_approval":
            raise Problem(
                409,
                "request-not-pending",
                "Request not pending approval",
                f"sign request {request_id} is {r.status}: approvals are taken only while it "
                "is pending_approval",
                request_id=request_id,
            )
        key = c.keys.get(r.key_id)
        done = await c.approvals.submit(
            request_id, body.approval, want, key, r.body, p.credential_id
        )
        if done.status == "signing":  # claimed from the job queue here, or by a worker
            await c.sign_claimed(request_id, done.body, key)
        fresh = await asyncio.to_thread(repo.sign_request, request_id)
        assert fresh is not None
        return 200, sign_out(fresh, await asyncio.to_thread(approval_view, c, repo, fresh))

    return await run_idempotent(request, p, idempotency_key, handler)


@router.post(
    "/{request_id}/approvals",
    response_model=SignRequestOut,
    responses=_RESPONSES,
    summary="Approve a sign request",
)
async def approve_sign_request(
    request: Request,
    request_id: IdPath,
    body: ApprovalSubmit,
    idempotency_key: IdempotencyKey,
    c: CoordinatorDep,
    repo: Repo,
    p: Approver,
) -> JSONResponse:
    """Add one approver's signed ``approve`` statement. Answers the request as it stands:
    still ``pending_approval`` (``approval.missing`` says what is left) or ``signing`` when
    this approval satisfied the requirement (signing runs in the background; poll the
    request). 422 with the refusal reason as the problem type when the approval would not
    count; 409 when the request no longer waits for approvals."""
    return await _submit(request, request_id, body, "approve", idempotency_key, c, repo, p)


@router.post(
    "/{request_id}/rejections",
    response_model=SignRequestOut,
    responses=_RESPONSES,
    summary="Reject a sign request",
)
async def reject_sign_request(
    request: Request,
    request_id: IdPath,
    body: ApprovalSubmit,
    idempotency_key: IdempotencyKey,
    c: CoordinatorDep,
    repo: Repo,
    p: Approver,
) -> JSONResponse:
    """Add one approver's signed ``reject`` statement: a valid rejection from an approver
    of a group the requirement names makes the request ``rejected`` (terminal). 422 with
    the refusal reason as the problem type when it would not count; 409 when the request
    no longer waits for approvals."""
    return await _submit(request, request_id, body, "reject", idempotency_key, c, repo, p)
