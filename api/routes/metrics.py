"""``GET /metrics``: the coordinator's Prometheus metrics (docs/OPERATIONS.md).

Needs an ``auditor`` (or ``admin``) credential, like the audit log: Prometheus sends it as
``Authorization: Bearer ...`` (``authorization`` in its scrape config). The text holds no
request, key or credential id and nothing secret (docs/SECURITY.md).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import Auditor
from custody import obs

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
async def metrics(_: Auditor) -> Response:
    return Response(obs.metrics_body(), media_type=obs.METRICS_CONTENT_TYPE)
