"""Liveness and readiness (no credentials)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from api.deps import CoordinatorDep, Repo
from api.problems import Problem, problem_responses
from api.version import VERSION
from custody.models import Health, Ready

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health)
async def health() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": VERSION}


@router.get("/ready", response_model=Ready, responses=problem_responses(503))
async def ready(c: CoordinatorDep, repo: Repo) -> dict[str, Any]:
    """Readiness: the database answers; reports how many nodes are healthy."""
    try:
        await asyncio.to_thread(repo.ping)
    except Exception:
        raise Problem(503, "not-ready", "Not ready", "database unavailable") from None
    return {
        "status": "ready",
        "database": "ok",
        "nodes_healthy": c.registry.healthy,
        "nodes_enrolled": len(c.registry.nodes),
        "pools": c.pools.sizes(),
        "batching": c.caller.batch_stats(),
    }
