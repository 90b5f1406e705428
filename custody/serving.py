"""How both services meet hostile clients: bounded bodies, timeouts and a connection cap.

The coordinator and every signer node run under uvicorn through :func:`serve`, which adds
what uvicorn alone does not give:

- **Body size**, enforced while reading and before any route (so before authentication):
  a declared ``Content-Length`` above the limit is refused with 413 at once, without
  reading the body; a chunked body is counted as it arrives and refused at the first byte
  over the limit.
- **Body time**: the whole body must arrive within ``body_timeout_s`` of the first read
  (408 otherwise), so a client cannot hold a request open by trickling bytes.
- **Header time**: a request's headers must be complete within ``header_timeout_s`` of its
  first byte (or of the connection opening); otherwise the connection is closed. Uvicorn
  has a keep-alive timeout but no header timeout, so half-open connections could be held
  forever (the slowloris attack).
- **Connections**: at most ``max_connections`` open at once; a connection beyond it is
  closed as soon as it is accepted, so a flood costs the process one file descriptor per
  accepted socket only briefly, and the service keeps serving its existing clients.

Refusals are RFC 9457 problem documents (counted in ``custody_http_requests_total`` with
route ``body-limit``). Uvicorn runs with ``log_config=None``: its loggers write through
the JSON handler of :mod:`custody.obs`. Everything here is transport-level and knows
nothing of routes; each service keeps its own routes and errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from custody import obs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServiceLimits:
    """Transport limits of one service (defaults suit the coordinator and the nodes)."""

    max_body_bytes: int = 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    max_header_bytes: int = 16 * 1024


class _BodyRefused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def _problem(status: int, title: str, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(
        {
            "type": f"urn:tpwc:http:{title.lower().replace(' ', '-')}",
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


class BodyLimit:
    """ASGI middleware: refuse bodies that are too large (413) or too slow (408)."""

    def __init__(self, app: ASGIApp, limits: ServiceLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            obs.count_http(scope["method"], "body-limit", 413)
            await _refuse(send, 413, "Content Too Large", f"body of {declared} bytes > {limit}")
            return
        received = 0
        deadline: float | None = None
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, deadline
            if deadline is None:
                deadline = time.monotonic() + self.limits.body_timeout_s
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
            except TimeoutError:
                raise _BodyRefused(
                    408,
                    "Request Timeout",
                    f"the body did not arrive within {self.limits.body_timeout_s} s",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyRefused(413, "Content Too Large", f"body exceeds {limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _BodyRefused as refused:
            if started:
                raise
            obs.count_http(scope["method"], "body-limit", refused.status)
            await _refuse(send, refused.status, refused.title, refused.detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, status: int, title: str, detail: str) -> None:
    headers, body = _problem(status, title, detail)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(limits: ServiceLimits) -> type[HttpToolsProtocol]:
    """Uvicorn's httptools protocol with a header timeout and a connection cap."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.close()
                return
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    limits.header_timeout_s, self._headers_too_slow
                )

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

    return GuardedHttpProtocol


def server_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    limits: ServiceLimits,
    log_level: str = "warning",
) -> uvicorn.Config:
    """The uvicorn configuration both services use (see the module docstring)."""
    return uvicorn.Config(
        BodyLimit(app, limits),
        host=host,
        port=port,
        http=guarded_protocol(limits),
        log_level=log_level,
        # uvicorn configures no logging of its own: its loggers reach the one JSON handler
        # of custody.obs (coloured text and ANSI escapes never enter the logs)
        log_config=None,
        access_log=False,
        timeout_keep_alive=int(max(1, limits.keep_alive_s)),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        server_header=False,
    )


def serve(
    app: ASGIApp, *, host: str, port: int, limits: ServiceLimits, log_level: str = "warning"
) -> None:
    """Run ``app`` until interrupted, under :func:`server_config`'s guards."""
    uvicorn.Server(
        server_config(app, host=host, port=port, limits=limits, log_level=log_level)
    ).run()
