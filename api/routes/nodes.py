"""``/v1/nodes``: enrolled signer nodes and their health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import AUTH_ERRORS
from api.deps import Admin, Auditor, CoordinatorDep, Repo
from api.problems import problem_responses
from api.serializers import node_out
from custody.models import NODE_ID_PATTERN, NodeEnrol, NodeList, NodeOut

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])

NodeId = Annotated[str, Path(min_length=1, max_length=64, pattern=NODE_ID_PATTERN)]


@router.get("", response_model=NodeList, responses=problem_responses(*AUTH_ERRORS))
async def list_nodes(c: CoordinatorDep, repo: Repo, _: Auditor) -> dict[str, Any]:
    """Enrolled nodes with their health and when they were last seen."""
    rows = await asyncio.to_thread(repo.nodes)
    return {"items": [node_out(n, c.registry.nodes.get(n.id)) for n in rows]}


@router.put(
    "/{node_id}",
    response_model=NodeOut,
    responses=problem_responses(*AUTH_ERRORS, 409, 422, 502),
)
async def enrol_node(
    node_id: NodeId, body: NodeEnrol, c: CoordinatorDep, repo: Repo, p: Admin
) -> dict[str, Any]:
    """Enrol (or re-point) a node: the coordinator reads its identity from ``GET /health``
    at ``url`` and pushes the peer list to every node."""
    await c.registry.enrol(node_id, body.url, p.credential_id)
    row = await asyncio.to_thread(repo.node, node_id)
    assert row is not None
    return node_out(row)
