"""RFC 9457 problem documents for every error the coordinator returns.

Handlers turn :class:`Problem` (our errors), Starlette's ``HTTPException`` (unknown route,
wrong method), FastAPI's request-validation error (422) and any unexpected exception (500,
without internals) into ``application/problem+json``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from custody import problem_types
from custody.models import ProblemModel

__all__ = ["PROBLEM_MEDIA_TYPE", "TYPE_PREFIX", "Problem", "ProblemModel", "install"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = problem_types.TYPE_PREFIX  # urn:tpwc:problem:<slug> (docs/PROBLEMS.md)

log = logging.getLogger("api.problems")


class Problem(Exception):
    """An error with an HTTP status and a stable ``type`` slug."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def document(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail is not None:
            doc["detail"] = self.detail
        if instance is not None:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def problem_response(
    problem: Problem, instance: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem.document(instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={**problem.headers, **(headers or {})},
    )


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid credentials"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Request validation failed"),
    503: ("unavailable", "Service unavailable"),
}


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": [str(x) for x in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        p = Problem(exc.status_code, slug, title, detail)
        return problem_response(p, request.url.path, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        p = Problem(
            422,
            "validation",
            "Request validation failed",
            "the request does not match the schema",
            errors=_jsonable_errors(exc.errors()),
        )
        return problem_response(p, request.url.path)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        p = Problem(
            503,
            "database-busy",
            "Database busy",
            "the coordinator database did not answer in time; retry later",
        )
        p.headers["Retry-After"] = "1"
        return problem_response(p, request.url.path)

    @app.exception_handler(UnicodeError)
    async def _unicode(request: Request, exc: UnicodeError) -> JSONResponse:
        p = Problem(422, "invalid-text", "Invalid text", "text must be valid Unicode")
        return problem_response(p, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        p = Problem(500, "internal", "Internal error", "the coordinator hit an unexpected error")
        return problem_response(p, request.url.path)


async def refuse_lone_surrogates(request: Request) -> None:
    """App-wide dependency: a JSON body may escape a lone UTF-16 surrogate (``"\\ud800"``),
    which Python's parser accepts but no UTF-8 encoder, CBOR or database takes; refuse it
    with a 422 naming the rule before any route uses the text."""
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return
    body = await request.body()
    if b"\\u" not in body:
        return
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeError:
        raise Problem(
            422,
            "invalid-text",
            "Invalid text",
            "the body escapes a lone UTF-16 surrogate; text must be valid Unicode",
        ) from None
    except ValueError:
        return  # not JSON: the route's own validation answers


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error codes (content fixed in openapi())."""
    return {
        c: {"model": ProblemModel, "description": _HTTP_SLUGS.get(c, ("", "Error"))[1]}
        for c in codes
    }


MAX_DEPTH = 32  # JSON nesting accepted in a request body (payloads are checked to 16)
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting_depth(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (strings skipped), computed without
    parsing it."""
    depth = deepest = 0
    for m in _TOKENS.finditer(body):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


class NestingLimit:
    """Pure ASGI middleware: a request body nested deeper than :data:`MAX_DEPTH` is refused
    (422 problem) before any JSON parser sees it. Python's C parser recurses once per
    level, so a body of a few hundred kilobytes of ``[`` could exhaust a worker thread's C
    stack. Bodies with fewer brackets than the limit (all ordinary ones) cost one
    ``bytes.count`` each."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_depth(body) > MAX_DEPTH:
            p = Problem(
                422,
                "too-deep",
                "Body nested too deeply",
                f"JSON nesting deeper than {MAX_DEPTH} levels is refused",
            )
            response = problem_response(p, scope.get("path"))
            await response(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body}]), send)


def _replay(messages: list[Any]) -> Any:
    queue = list(messages)

    async def receive() -> Any:
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    return receive
