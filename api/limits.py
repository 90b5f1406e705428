"""Request limits of the coordinator's routes: body sizes per route and rate limits.

- **Body size per route** (:class:`RouteBodyLimits`): ``POST /v1/sign-requests`` takes up
  to ``settings.max_sign_request_bytes`` (default 256 KiB: a 16-input PSBT fits), the
  routes that carry a governance document (``/v1/governance``, ``/v1/policy/...``: up to
  256 KiB of CBOR as hex or base64) ``settings.max_governance_bytes`` (default 1 MiB),
  every other route ``settings.max_body_bytes`` (default 64 KiB), all under the
  transport's global limit (:mod:`custody.serving`). Over it: 413 before the body is parsed, so an
  oversized payload is never fanned out to the nodes nor stored.
- **Rate limits** (:class:`RateLimits`, the ``limits`` library, moving windows in memory,
  per coordinator process): every request but the probes (``/health``, ``/ready``)
  counts against its client address (``rate_limit_address``) and, when it carries a
  bearer token, against that credential
  (``rate_limit_credential``, keyed by the token's hash, so it applies before the
  database is read). A response 401 counts against the address's failed-authentication
  limit (``rate_limit_auth_failures``, much stricter); while that is exhausted every
  request from the address is refused. Over a limit: 429 ``rate-limited`` with
  ``Retry-After`` (seconds until the window has room). A limit ``""`` is off.

Limits use the ``limits`` notation: ``"100/second"``, ``"20/minute"``, ``"5 per 2 second"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from api.settings import Settings
from custody.serving import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RateLimits", "RouteBodyLimits", "document"]


def document(schema: dict[str, Any], problem_ref: dict[str, Any]) -> None:
    """Add what these limits answer to every operation but the probes of an OpenAPI ``schema``:
    429 (with ``Retry-After``) everywhere, 413 where there is a body."""
    content = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
    for path, item in schema.get("paths", {}).items():
        if path in UNLIMITED:
            continue
        for op in item.values():
            resp = op.setdefault("responses", {})
            resp.setdefault(
                "429",
                {
                    "description": "Too many requests (rate-limited: per credential, per "
                    "client address, or after failed authentications)",
                    "headers": {
                        "Retry-After": {
                            "description": "seconds until the limit has room",
                            "schema": {"type": "integer"},
                        }
                    },
                },
            )["content"] = content
            r429 = resp["429"]
            r429.setdefault("headers", {}).setdefault(
                "Retry-After",
                {"description": "seconds until the limit has room", "schema": {"type": "integer"}},
            )
            if op.get("requestBody"):
                resp.setdefault("413", {"description": "Request body too large"})
                resp["413"]["content"] = content


class _TooLarge(Exception):
    pass


class RouteBodyLimits:
    """ASGI middleware: the body limit of the route a request is for (module docstring):
    a declared ``Content-Length`` over it is refused at once, a streamed body as soon as
    it passes it; 413 ``too-large`` either way."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.sign = settings.max_sign_request_bytes
        self.governance = settings.max_governance_bytes
        self.other = settings.max_body_bytes

    def limit(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        if scope.get("method") == "POST" and path == "/v1/sign-requests":
            return self.sign
        if path.startswith(("/v1/governance", "/v1/policy/")):
            return self.governance
        return self.other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, 413, "too-large", "Request body too large", _big(limit))
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await _refuse(send, 413, "too-large", "Request body too large", _big(limit))


def _big(limit: int) -> str:
    return f"this route takes bodies of at most {limit} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(
    send: Send, status: int, slug: str, title: str, detail: str, **extra: Any
) -> None:
    headers = {k.lower().encode(): str(v).encode() for k, v in extra.pop("headers", {}).items()}
    body = json.dumps(
        {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers.items(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


UNLIMITED = frozenset({"/health", "/ready"})  # probes: never rate-limited


def _item(spec: str) -> RateLimitItem | None:
    return parse(spec) if spec.strip() else None


class RateLimits:
    """ASGI middleware: rate limits per client address and per credential, and a
    stricter one on failed authentication (module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.address = _item(settings.rate_limit_address)
        self.credential = _item(settings.rate_limit_credential)
        self.auth_failures = _item(settings.rate_limit_auth_failures)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNLIMITED:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        addr = str(client[0]) if client else "unknown"
        token = _bearer(scope)
        checks: list[tuple[RateLimitItem, str, str, bool]] = []
        if self.auth_failures is not None:  # looked at, not counted: 401s count
            checks.append((self.auth_failures, "auth-failures", addr, False))
        if self.address is not None:
            checks.append((self.address, "address", addr, True))
        if self.credential is not None and token is not None:
            checks.append((self.credential, "credential", token, True))
        for item, scope_name, ident, count in checks:
            ok = (
                self.limiter.hit(item, scope_name, ident)
                if count
                else self.limiter.test(item, scope_name, ident)
            )
            if not ok:
                await self._refuse(scope, send, item, scope_name, ident)
                return
        failures = self.auth_failures

        async def watching_send(message: Message) -> None:
            if (
                failures is not None
                and message["type"] == "http.response.start"
                and message["status"] == 401
            ):
                self.limiter.hit(failures, "auth-failures", addr)
            await send(message)

        await self.app(scope, receive, watching_send)

    async def _refuse(
        self, scope: Scope, send: Send, item: RateLimitItem, name: str, ident: str
    ) -> None:
        reset, _ = self.limiter.get_window_stats(item, name, ident)
        retry = max(1, math.ceil(reset - time.time()))
        what = {
            "auth-failures": "too many failed authentications from this address",
            "address": "too many requests from this address",
            "credential": "too many requests with this credential",
        }[name]
        await _refuse(
            send,
            429,
            "rate-limited",
            "Too many requests",
            f"{what} (limit {item}); retry after {retry} s",
            limit=name,
            headers={"Retry-After": retry},
        )


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            parts = value.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == b"bearer" and parts[1]:
                return hashlib.sha256(parts[1].strip()).hexdigest()
    return None
