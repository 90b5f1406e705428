"""``/v1/governance``: the officer-signed roster the coordinator enrols from and relays.

The coordinator verifies a submitted version against its own chain and relays it to every
node, each of which verifies it again; no credential can make a version (officers sign
them offline: ``custody governance``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import AUTH_ERRORS
from api.deps import Admin, CoordinatorDep, Reader
from api.problems import problem_responses
from custody.models import GovernanceOut, GovernanceSubmit

router = APIRouter(prefix="/v1/governance", tags=["governance"])


def _describe(c: CoordinatorDep) -> dict[str, Any]:
    cur = c.governance.current
    if cur is None:
        return {"installed": False}
    doc = c.governance.document()
    return {
        "installed": True,
        "cluster_id": cur.cluster_id,
        "version": cur.version,
        "digest": cur.digest.hex(),
        "roster": [n.node_id for n in cur.roster],
        "document": None if doc is None else doc.hex(),
    }


@router.get("", response_model=GovernanceOut, responses=problem_responses(*AUTH_ERRORS))
async def get_governance(c: CoordinatorDep, _: Reader) -> dict[str, Any]:
    """The installed governance version (the whole signed document, hex)."""
    return _describe(c)


@router.put(
    "",
    response_model=GovernanceOut,
    responses=problem_responses(*AUTH_ERRORS, 403, 409, 422),
)
async def put_governance(body: GovernanceSubmit, c: CoordinatorDep, p: Admin) -> dict[str, Any]:
    """Relay the next officer-signed version to every node; keep it when none refused."""
    result = await c.registry.install_governance(bytes.fromhex(body.document), p.credential_id)
    return {**_describe(c), "nodes": result["nodes"]}
