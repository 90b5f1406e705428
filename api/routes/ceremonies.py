"""Key ceremonies: ``POST /v1/keys/{id}/refresh`` (proactive refresh by every share holder,
committed only when all are done), ``POST /v1/keys/{id}/reshare`` (resharing to a new
committee and threshold), ``POST /v1/keys/{id}/ot-resetup`` (fresh base OTs for every pair
of an ECDSA key) and ``/v1/ceremonies/{id}`` (the record and its signed transcript;
``resume`` finishes an interrupted commit). Each ceremony carries the officers'
authorization (``custody.governance.CeremonyAuthorization``, hex of its signed CBOR), which
every node verifies for itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AUTH_ERRORS
from api.deps import Admin, CoordinatorDep, IdPath, Reader
from api.problems import Problem, problem_responses
from custody.examples import response
from custody.models import NodeId

router = APIRouter(tags=["ceremonies"])

_AUTH = Field(
    min_length=2,
    max_length=32768,
    pattern="^[0-9a-f]+$",
    description="the officers' signed ceremony authorization: hex of its canonical CBOR "
    "(custody.governance.SignedCeremonyAuthorization; `custody keys refresh|reshare` signs "
    "one with the officers' key files)",
)


class RefreshBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"authorization": "a262..."}]}
    )
    authorization: str | None = Field(
        default=None,
        min_length=2,
        max_length=32768,
        pattern="^[0-9a-f]+$",
        description=_AUTH.description,
    )


_NO_BODY = RefreshBody()  # a refresh without a body: refused as ceremony-unauthorized


class ReshareBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "threshold": 3,
                    "nodes": ["node-1", "node-2", "node-3", "node-4", "node-5"],
                    "authorization": "a262...",
                }
            ]
        },
    )
    threshold: int = Field(ge=2, le=255, description="the new threshold (as authorized)")
    nodes: list[NodeId] = Field(
        min_length=2,
        max_length=255,
        description="node ids of the new committee (as authorized; enrolled in the roster)",
    )
    authorization: str = _AUTH


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
async def refresh_key(
    key_id: IdPath,
    c: CoordinatorDep,
    p: Admin,
    body: Annotated[RefreshBody, Body()] = _NO_BODY,
) -> JSONResponse:
    """Proactive refresh of ``key_id``: same public key, new shares on every committee
    member (ECDSA keys also get fresh base OTs). The old shares stay active until every
    node reported done; a failure names the party at fault and changes nothing. Needs the
    officers' authorization (403 ``ceremony-*`` problems otherwise)."""
    return _answer(await c.ceremonies.refresh(key_id, p.credential_id, body.authorization))


@router.post(
    "/v1/keys/{key_id}/ot-resetup",
    responses={
        200: response("Ceremony", "Set up again: every pair of the key has fresh base OTs"),
        202: {"description": "Committing: some node has not switched yet (resume it)"},
        **problem_responses(*AUTH_ERRORS, 404, 409, 422, 503),
    },
)
async def ot_resetup_key(
    key_id: IdPath,
    c: CoordinatorDep,
    p: Admin,
    body: Annotated[RefreshBody, Body()] = _NO_BODY,
) -> JSONResponse:
    """OT re-setup of the ECDSA key ``key_id`` (DKLs23): a fresh base-OT setup for every pair
    of its committee (after a refresh of the Shamir part: same public key, new shares), which
    re-enables a pair retired after a failed OT-extension check. Committed only when every
    node reported done; a failure names the party at fault and changes nothing. Needs the
    officers' ``ot-resetup`` authorization (403 ``ceremony-*`` problems otherwise); 422
    ``validation`` for a FROST key."""
    return _answer(await c.ceremonies.ot_resetup(key_id, p.credential_id, body.authorization))


@router.post(
    "/v1/keys/{key_id}/reshare",
    responses={
        200: response("Ceremony", "Reshared: the new committee holds the key"),
        202: {"description": "Committing: some node has not switched yet (resume it)"},
        **problem_responses(*AUTH_ERRORS, 404, 409, 422, 503),
    },
)
async def reshare_key(
    key_id: IdPath, body: ReshareBody, c: CoordinatorDep, p: Admin
) -> JSONResponse:
    """Reshare ``key_id`` to the committee ``nodes`` with ``threshold``: same public key,
    a fresh sharing; members may overlap, new members must be enrolled in the roster,
    departing members deal and then delete their shares. The threshold never drops unless
    the officers' authorization says so explicitly. ECDSA keys get base OTs for every pair
    of the new committee. A failure names the party at fault and changes nothing."""
    return _answer(
        await c.ceremonies.reshare(
            key_id, p.credential_id, body.threshold, body.nodes, body.authorization
        )
    )


@router.get(
    "/v1/keys/{key_id}/ceremonies",
    responses={
        200: {
            "description": "The key's ceremonies and its share version",
            "content": {
                "application/json": {
                    "example": {"key_id": "key_01J9Z8", "share_version": 2, "items": []}
                }
            },
        },
        **problem_responses(*AUTH_ERRORS, 404, 409),
    },
)
async def key_ceremonies(key_id: IdPath, c: CoordinatorDep, _: Reader) -> dict[str, Any]:
    """The key's ceremonies, newest first, and its current share version (1 after the DKG,
    one more per committed ceremony): what the officers' next authorization names."""
    return c.ceremonies.of_key(key_id)


@router.get(
    "/v1/ceremonies/{ceremony_id}",
    responses={
        200: response("Ceremony", "The ceremony record"),
        **problem_responses(*AUTH_ERRORS, 404),
    },
)
async def get_ceremony(ceremony_id: IdPath, c: CoordinatorDep, _: Reader) -> dict[str, Any]:
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
async def resume_ceremony(ceremony_id: IdPath, c: CoordinatorDep, _: Admin) -> JSONResponse:
    """Send the commits of an interrupted ceremony again (idempotent on the nodes); for a
    ``done`` resharing, tell the old holders that have not deleted their share yet (a
    departing dealer down at the commit, a holder that did not deal) again."""
    return _answer(await c.ceremonies.resume(ceremony_id))
