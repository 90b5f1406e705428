"""HD derivation of a key's public side: ``GET /v1/keys/{id}/derive?path=m/0/1`` and
``GET /v1/keys/{id}/xpub`` (:mod:`api.coordinator.hd`; public values only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import AUTH_ERRORS
from api.coordinator import hd
from api.deps import CoordinatorDep, IdPath, Reader
from api.problems import problem_responses
from custody.examples import response
from custody.models import NO_CONTROLS_PATTERN

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get(
    "/{key_id}/derive",
    responses={
        200: response("DerivedKey", "The child key's public side"),
        **problem_responses(*AUTH_ERRORS, 404, 409, 422),
    },
)
async def derive_key(
    key_id: IdPath,
    c: CoordinatorDep,
    _: Reader,
    path: Annotated[
        str,
        Query(min_length=1, max_length=200, pattern=NO_CONTROLS_PATTERN, description="e.g. m/0/1"),
    ],
) -> dict[str, Any]:
    """The child key at ``path`` (non-hardened steps only; a hardened one is refused with
    422 ``hardened-derivation``): public key, addresses, and an xpub for secp256k1 keys."""
    return hd.derive(c.keys.get(key_id), path)


@router.get(
    "/{key_id}/xpub",
    responses={
        200: response("KeyXpub", "The key's extended public key"),
        **problem_responses(*AUTH_ERRORS, 404, 409, 422),
    },
)
async def key_xpub(key_id: IdPath, c: CoordinatorDep, _: Reader) -> dict[str, Any]:
    """The key's BIP-32 extended public key (secp256k1 keys)."""
    return hd.xpub(c.keys.get(key_id))
