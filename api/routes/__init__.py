"""One FastAPI router per resource: ``ops`` (health, readiness), ``nodes``, ``keys``,
``sign_requests``, ``approvals`` (a sign request's approvals and rejections), ``audit``,
``governance``, ``ceremonies`` (key refresh and ceremony records), ``policy`` (dry run,
shadow mode), ``metrics`` (Prometheus, auditor credential). Routes validate, authorise
(:mod:`api.deps`), call the coordinator or the repository, and serialise
(:mod:`api.serializers`); no SQL here."""

from api.routes import (
    approvals,
    audit,
    ceremonies,
    credentials,
    governance,
    hd,
    keys,
    metrics,
    nodes,
    ops,
    policy,
    sign_requests,
    webhooks,
)

ROUTERS = (
    ops.router,
    governance.router,
    nodes.router,
    keys.router,
    ceremonies.router,
    hd.router,
    sign_requests.router,
    approvals.router,
    audit.router,
    policy.router,
    metrics.router,
    credentials.router,
    webhooks.router,
)

__all__ = ["ROUTERS"]
