"""The coordinator ASGI app: ``create_app(settings)``; routes under ``/v1``.

Long work (DKG, signing) is a resource with a status: a POST waits up to
``settings.sync_wait`` seconds and answers 201 when the work has finished, else 202 with
the resource as it stands, which ``GET`` then shows progressing.

This module only wires: the database, the repository and the coordinator onto
``app.state`` (read through :mod:`api.deps`), the routers (:mod:`api.routes`), the
problem handlers, the request log, metrics and trace context (:class:`custody.obs.HttpObserve`)
and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from api import console, docs, keystore, metrics, problems, webhooks
from api.coordinator import Coordinator
from api.db import Database
from api.limits import RateLimits, RouteBodyLimits
from api.nodes import NodeCaller
from api.openapi import DESCRIPTION, SWAGGER_UI_PARAMETERS, TITLE, openapi_schema, operation_id
from api.repository import Repository
from api.routes import ROUTERS
from api.settings import Settings
from api.version import VERSION
from custody.obs import HttpObserve, fastapi_options

__all__ = ["create_app", "VERSION"]


def create_app(settings: Settings, *, background: bool = True) -> FastAPI:
    """Build the coordinator app; ``background=False`` skips health/pool sweeps (tests)."""
    db = Database(settings.database_url, settings.db_busy_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = keystore.load_or_create(settings)
        db.migrate(apply=settings.db_migrate)
        keystore.private_files(settings)
        caller = NodeCaller(
            key.sign,
            settings.round_timeout,
            tls=settings.node_tls_context(),
            public_key=key.public_key,
        )
        c = Coordinator(settings, db, caller)
        app.state.coordinator = c
        app.state.coordinator_public_key = key.public_key
        metrics.watch(c.pools.sizes, lambda: [n.status for n in c.registry.nodes.values()])
        c.start(background=background)
        app.state.sealer = key.hsm  # seals webhook secrets (api.webhooks)
        if settings.webhooks_enabled:  # the outbox's delivery worker, stopped with c
            app.state.webhook_worker = webhooks.DeliveryWorker(settings, db, key.hsm)
            c.spawn(app.state.webhook_worker.run())
        try:
            yield
        finally:
            await c.stop()
            db.close()
            key.close()

    # Swagger UI (/docs) and ReDoc (/redoc) from the packaged copies fastapi-offline ships
    # (nothing from a CDN); stable camelCase operationIds for every route, new ones included
    app = FastAPIOffline(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        generate_unique_id_function=operation_id,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        lifespan=lifespan,
        dependencies=[Depends(problems.refuse_lone_surrogates)],
        **fastapi_options(),
    )
    app.state.db = db
    app.state.repository = Repository(db)
    app.state.settings = settings
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(docs.router)  # /problems: the problem types' catalogue (docs/PROBLEMS.md)
    console.install(app)  # /console: the treasury console (issue 15, docs/CONSOLE.md)
    app.add_middleware(problems.NestingLimit)
    # request limits (api.limits): body size per route inside, rate limits before it
    app.add_middleware(RouteBodyLimits, settings=settings)
    app.add_middleware(RateLimits, settings=settings)
    # outermost: ids, trace context, the request log and the HTTP metrics (custody.obs)
    app.add_middleware(HttpObserve, routes=app.router.routes)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app
