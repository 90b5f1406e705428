"""One FastAPI router per resource: ``ops`` (health, readiness), ``nodes``, ``keys``,
``sign_requests``, ``audit``, ``governance``, ``metrics`` (Prometheus, auditor credential).
Routes validate, authorise (:mod:`api.deps`), call the
coordinator or the repository, and serialise (:mod:`api.serializers`); no SQL here."""

from api.routes import audit, governance, keys, metrics, nodes, ops, sign_requests

ROUTERS = (
    ops.router,
    governance.router,
    nodes.router,
    keys.router,
    sign_requests.router,
    audit.router,
    metrics.router,
)

__all__ = ["ROUTERS"]
