"""``/v1/keys``: threshold keys, created by DKG among the share holders."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.auth import AUTH_ERRORS
from api.deps import (
    Admin,
    CoordinatorDep,
    Cursor,
    IdempotencyKey,
    IdPath,
    Reader,
    Repo,
    SettingsDep,
)
from api.idempotency import run_idempotent
from api.problems import Problem, problem_responses
from api.serializers import key_out
from custody.domain import KeyStatus, Scheme, new_id
from custody.models import KeyCreate, KeyLabel, KeyList, KeyOut, KeyUpdate

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post(
    "",
    status_code=201,
    response_model=KeyOut,
    responses={
        201: {"headers": {"Location": {"description": "the key's URL"}}},
        202: {
            "model": KeyOut,
            "description": "DKG still running: poll ``Location``",
            "headers": {
                "Location": {"description": "the key's URL"},
                "Retry-After": {"description": "seconds to wait before polling"},
            },
        },
        **problem_responses(*AUTH_ERRORS, 409, 413, 422, 429, 503),
    },
    summary="Create a threshold key",
)
async def create_key(
    request: Request,
    body: KeyCreate,
    idempotency_key: IdempotencyKey,
    c: CoordinatorDep,
    repo: Repo,
    settings: SettingsDep,
    p: Admin,
) -> JSONResponse:
    """Create a threshold key by DKG among ``nodes`` (default: all enrolled). A bip340 key
    takes an optional Bitcoin ``network`` (mainnet, testnet, signet, regtest; default
    mainnet) for its BIP-86 address. ``label`` and ``metadata`` (string tags) are for
    people and filters (``GET /v1/keys?label=``); ``PATCH`` changes them."""
    registry = c.registry

    async def handler() -> tuple[int, dict[str, Any]]:
        node_ids = body.nodes if body.nodes is not None else registry.by_party_order()
        if len(set(node_ids)) != len(node_ids):
            raise Problem(422, "validation", "Request validation failed", "duplicate node ids")
        unknown = [n for n in node_ids if n not in registry.nodes]
        if unknown:
            raise Problem(422, "unknown-node", "Unknown node", f"not enrolled: {unknown}")
        if not 2 <= body.threshold <= len(node_ids):
            raise Problem(
                422,
                "invalid-threshold",
                "Invalid threshold",
                f"need 2 <= threshold <= {len(node_ids)} nodes",
            )
        down = [n for n in node_ids if not registry.nodes[n].eligible]
        if down:
            raise Problem(
                503,
                "nodes-unavailable",
                "Nodes unavailable",
                f"a DKG needs every share holder; not healthy: {down}",
            )
        network = body.network
        if network is not None and body.scheme != "bip340":
            raise Problem(
                422,
                "invalid-network",
                "Invalid network",
                "network applies to bip340 keys only (their BIP-86 Bitcoin address)",
                field="network",
            )
        if body.scheme == "bip340" and network is None:
            network = "mainnet"
        kid = new_id("key")
        await asyncio.to_thread(
            repo.add_pending_key,
            kid,
            body.scheme,
            body.threshold,
            node_ids,
            p.credential_id,
            network,
            body.label,
            body.metadata,
        )
        await asyncio.wait({c.spawn(c.run_dkg(kid))}, timeout=settings.sync_wait)
        k = await asyncio.to_thread(repo.key, kid)
        assert k is not None
        return (202 if k.status == "pending" else 201), key_out(k)

    return await run_idempotent(request, p, idempotency_key, handler)


@router.get(
    "",
    response_model=KeyList,
    responses=problem_responses(*AUTH_ERRORS, 422, 429),
    summary="List keys",
)
async def list_keys(
    repo: Repo,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
    scheme: Annotated[Scheme | None, Query()] = None,
    status: Annotated[KeyStatus | None, Query()] = None,
    label: Annotated[KeyLabel | None, Query()] = None,
) -> dict[str, Any]:
    """Keys, newest first, optionally filtered by ``scheme``, ``status`` and exact
    ``label``; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = await asyncio.to_thread(
        lambda: repo.keys(limit, cursor, scheme=scheme, status=status, label=label)
    )
    return page.out(key_out)


@router.patch(
    "/{key_id}",
    response_model=KeyOut,
    responses=problem_responses(*AUTH_ERRORS, 404, 413, 422, 429),
    summary="Change a key's label or metadata",
)
async def update_key(key_id: IdPath, body: KeyUpdate, repo: Repo, p: Admin) -> dict[str, Any]:
    """Replace the members given: ``label`` (``null`` removes it) and ``metadata`` (all
    tags; ``{}`` removes them). Audited as ``key.update``; nothing else of a key changes."""
    changes = body.model_dump(include=body.model_fields_set)
    if not changes:
        raise Problem(422, "validation", "Request validation failed", "nothing to change")
    k = await asyncio.to_thread(repo.update_key, key_id, changes, p.credential_id)
    if k is None:
        raise Problem(404, "not-found", "Not found", f"no key {key_id!r}")
    return key_out(k)


@router.get(
    "/{key_id}",
    response_model=KeyOut,
    responses=problem_responses(*AUTH_ERRORS, 404, 429),
    summary="Show one key",
)
async def get_key(key_id: IdPath, repo: Repo, _: Reader) -> dict[str, Any]:
    """The key, with its ``addresses``: ``ethereum`` (EIP-55) for an ECDSA key, ``bitcoin``
    (BIP-86 P2TR on its network) for a BIP-340 key."""
    k = await asyncio.to_thread(repo.key, key_id)
    if k is None:
        raise Problem(404, "not-found", "Not found", f"no key {key_id!r}")
    return key_out(k)
