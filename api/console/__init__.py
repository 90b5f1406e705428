"""The treasury console (issue 15): server-rendered pages at ``/console`` where approvers
review decoded requests and approve or reject them with passkeys (docs/CONSOLE.md).

:func:`install` mounts it on the coordinator app: the routes (:mod:`api.console.routes`),
the vendored static files (htmx, the console's script and style: nothing from a CDN) and
the security headers of every console response (:data:`api.console.sessions.SECURITY_HEADERS`)
and the handler of :class:`api.console.routes.ConsoleError` (RFC 9457: an HTML page for a
browser, ``application/problem+json`` otherwise).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.routes import ConsoleError, problem_handler, router
from api.console.sessions import SECURITY_HEADERS

__all__ = ["install", "ConsoleHeaders"]

STATIC = Path(__file__).parent / "static"


class ConsoleHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response under ``/console``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/console" or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return

        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + self.headers
            await send(message)

        await self.app(scope, receive, send_with)


def install(app: FastAPI) -> None:
    app.include_router(router)
    # one handler for every console error: error.html for a browser, else problem+json
    app.add_exception_handler(ConsoleError, problem_handler)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeaders)
