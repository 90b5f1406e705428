"""Key ceremonies: ``POST /v1/keys/{id}/refresh`` (proactive refresh by every share holder,
committed only when all are done) and ``/v1/ceremonies/{id}`` (the record and its signed
transcript; ``resume`` finishes an interrupted commit)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.auth import AUTH_ERRORS
from api.deps import Admin, CoordinatorDep, Reader
from api.problems import Problem, problem_responses
from custody.examples import response

router = APIRouter(tags=["ceremonies"])


def _answer(cer: dict[str, Any]) -> JSONResponse:
    if cer["status"] == "failed":
        err = cer.get("error") or {}
        raise Problem(
            409,
            "ceremony-failed",
            "Ceremony failed",
            str(err.get("detail") or "the ceremony failed"),
            ceremony_id=cer["id"],
            culprits=err.get("culprits", []),
            blamed=err.get("blamed", []),
        )
    return JSONResponse(cer, status_code=200 if cer["status"] == "done" else 202)


@router.post(
    "/v1/keys/{key_id}/refresh",
    responses={
        200: response("Ceremony", "Refreshed: every node switched to the new shares"),
        202: {"description": "Committing: some node has not switched yet (resume it)"},
        **problem_responses(*AUTH_ERRORS, 404, 409, 503),
    },
)
async def refresh_key(key_id: str, c: CoordinatorDep, p: Admin) -> JSONResponse:
    """Proactive refresh of ``key_id``: same public key, new shares on every committee
    member (ECDSA keys also get fresh base OTs). The old shares stay active until every
    node reported done; a failure names the party at fault and changes nothing."""
    return _answer(await c.ceremonies.refresh(key_id, p.credential_id))


@router.get(
    "/v1/ceremonies/{ceremony_id}",
    responses={
        200: response("Ceremony", "The ceremony record"),
        **problem_responses(*AUTH_ERRORS, 404),
    },
)
async def get_ceremony(ceremony_id: str, c: CoordinatorDep, _: Reader) -> dict[str, Any]:
    """The ceremony, its per-party progress and its transcript (the outcome every node
    signed with its identity key, and each signature)."""
    return c.ceremonies.get(ceremony_id)


@router.post(
    "/v1/ceremonies/{ceremony_id}/resume",
    responses={
        200: response("Ceremony", "Committed on every node"),
        202: {"description": "Still committing"},
        **problem_responses(*AUTH_ERRORS, 404, 409),
    },
)
async def resume_ceremony(ceremony_id: str, c: CoordinatorDep, _: Admin) -> JSONResponse:
    """Send the commits of an interrupted ceremony again (idempotent on the nodes)."""
    return _answer(await c.ceremonies.resume(ceremony_id))
