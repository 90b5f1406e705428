"""``/v1/policy``: dry runs of the policy and shadow mode (:mod:`api.shadow`).

A dry run evaluates a sign request against the active governance version, or a submitted
(draft) document, and says why; it creates nothing and calls no node, so readers may call
it and it takes no ``Idempotency-Key``. A shadow version is evaluated beside the active one
on every live request; it never authorizes anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.auth import AUTH_ERRORS
from api.coordinator.hd import signing_key
from api.deps import Admin, CoordinatorDep, Cursor, Db, Reader
from api.problems import Problem, problem_responses
from api.shadow import ShadowDisagreement, ShadowState, decode_document, dry_run, shadow_of
from custody.models import (
    PolicyDryRunCreate,
    PolicyDryRunOut,
    PolicyShadowOut,
    PolicyShadowSubmit,
    ShadowDisagreementList,
    ShadowDisagreementOut,
)
from custody.signing import HardenedPathError, SignRequestError

router = APIRouter(prefix="/v1/policy", tags=["policy"])


@router.post(
    "/dry-run",
    response_model=PolicyDryRunOut,
    summary="Evaluate a sign request against a policy without signing",
    responses=problem_responses(*AUTH_ERRORS, 404, 409, 422),
)
async def policy_dry_run(
    body: PolicyDryRunCreate, c: CoordinatorDep, db: Db, p: Reader
) -> dict[str, Any]:
    """The decision the policy of the active governance version (or of ``governance``, a
    base64 document, signed or a draft) makes for this sign request at ``at`` (default
    now), as ``initiator`` (default the caller): action, rule, reason, the approvals
    required, and for each rule tried before the one that matched the conditions the
    request failed. Nothing is created, no node is called, nothing is signed."""
    key = c.keys.get(body.key_id)  # 404 / 409 as for signing
    signed_by: list[str] = []
    if body.governance is not None:
        doc = decode_document(body.governance, "governance")
        governance, source = doc.body, "document"
        signed_by = [s.officer_id for s in doc.signatures]
    else:
        active = c.governance.current
        if active is None:
            raise Problem(
                409,
                "governance-missing",
                "No governance installed",
                "no active version to evaluate; pass governance (a document) to dry-run a draft",
            )
        governance, source = active, "active"
    request: dict[str, Any] = body.model_dump(
        include={"payload", "network", "derivation_path"}, exclude_none=True
    )
    request.update(key_id=body.key_id, kind=body.kind)
    if body.message is not None:
        request["message"] = body.message.lower()
    try:
        key = signing_key(key, request)  # derivation_path: the child key, as for signing
    except HardenedPathError as e:
        raise Problem(
            422, "hardened-derivation", "Hardened derivation refused", str(e),
            field=e.field, step=e.step,
        ) from None  # fmt: skip
    except SignRequestError as e:
        raise Problem(
            422, "invalid-sign-request", "Invalid sign request", str(e), field=e.field
        ) from None
    now = body.at if body.at is not None else int(time.time())
    initiator = body.initiator or p.principal_id
    out = await asyncio.to_thread(
        dry_run, db, governance, key, request, initiator=initiator, now=now
    )
    return {**out, "source": source, "signed_by": signed_by}


def _shadow_out(state: ShadowState | None, c: CoordinatorDep) -> dict[str, Any]:
    if state is None:
        return {"installed": False}
    active = c.governance.current
    return PolicyShadowOut(
        installed=True,
        version=state.body.version,
        digest=state.body.digest.hex(),
        base_version=state.base_version,
        base_digest=state.base_digest.hex(),
        stale=active is None or active.digest != state.base_digest,
        installed_by=state.installed_by,
        installed_at=state.installed_at,
    ).model_dump(mode="json")


@router.get(
    "/shadow",
    response_model=PolicyShadowOut,
    summary="The installed shadow policy",
    responses=problem_responses(*AUTH_ERRORS),
)
async def get_shadow(request: Request, c: CoordinatorDep, _: Reader) -> dict[str, Any]:
    """The shadow version evaluated beside the active one, if any; ``stale`` when the
    active version moved on since it was installed."""
    state = await asyncio.to_thread(shadow_of(request.app).current)
    return _shadow_out(state, c)


@router.put(
    "/shadow",
    response_model=PolicyShadowOut,
    summary="Install a shadow policy (an unsigned draft of the next version)",
    responses=problem_responses(*AUTH_ERRORS, 409, 422),
)
async def put_shadow(
    request: Request, body: PolicyShadowSubmit, c: CoordinatorDep, p: Admin
) -> dict[str, Any]:
    """Install (or replace) the shadow: an unsigned draft of the next governance version,
    chained to the active one. It is evaluated on every live sign request beside the
    active version and never authorizes anything; a signed document is refused (422
    ``shadow-signed``), one that does not follow the active version too (409
    ``shadow-unchained``)."""
    shadow = shadow_of(request.app)
    state = await asyncio.to_thread(
        shadow.install, body.document, c.governance.current, p.credential_id
    )
    return _shadow_out(state, c)


@router.delete(
    "/shadow",
    status_code=204,
    summary="Remove the shadow policy",
    responses=problem_responses(*AUTH_ERRORS, 404),
)
async def delete_shadow(request: Request, p: Admin) -> Response:
    """Stop evaluating the shadow; its disagreements stay listed."""
    if not await asyncio.to_thread(shadow_of(request.app).remove, p.credential_id):
        raise Problem(404, "not-found", "Not found", "no shadow policy is installed")
    return Response(status_code=204)


def _disagreement_out(d: ShadowDisagreement) -> dict[str, Any]:
    return ShadowDisagreementOut.model_validate(d, from_attributes=True).model_dump(mode="json")


@router.get(
    "/shadow/disagreements",
    response_model=ShadowDisagreementList,
    summary="Live requests on which the shadow policy decided otherwise",
    responses=problem_responses(*AUTH_ERRORS, 422),
)
async def list_disagreements(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Disagreements between the shadow and the active version, newest first: each names
    the request and both verdicts (version, action, rule, reason, approvals required)."""
    page = await asyncio.to_thread(shadow_of(request.app).disagreements, limit, cursor)
    return page.out(_disagreement_out)
