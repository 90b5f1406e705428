"""Structured JSON logging (one object per line) and a request-log middleware.

Never logged: tokens, request bodies, messages to sign. Logged: method, path, status,
duration, request id, credential id, and domain events with ids.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


class RequestLog:
    """Pure ASGI middleware: logs each request as one JSON line, sets ``X-Request-Id``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger("api.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = os.urandom(16).hex()
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id" and 0 < len(v) <= 64:
                rid = v.decode("latin-1")
        start = time.perf_counter()
        status = 0

        async def _send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "request_id": rid,
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                },
            )
