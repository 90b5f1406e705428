"""The node's HTTP service (FastAPI on uvicorn): docs/NODE_API.md.

Every route except ``GET /health`` requires a request signed by the enrolled coordinator
(:func:`custody.nodeauth.verify_headers`); a missing, bad or stale signature is a 401
problem document and is logged. Every error, expected or not, is an RFC 9457 problem
document. Blocking node work runs in the thread pool, so requests are served
concurrently; the node orders what must be ordered itself (:mod:`signer_nodes.store`:
group commit of ledger marks, the sealing readers-writer lock against rotation).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from signer_nodes import logs
from signer_nodes.envelope import Peer
from signer_nodes.node import MAX_BATCH, Node, NodeError, batch_item_request, hex_field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custody.nodeauth import NodeAuthError, verify_headers
from hsm.errors import HsmError

__all__ = ["create_app"]

PROBLEM = "application/problem+json"


def problem(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:tpwc:node:{kind}",
        "title": kind.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class CoordinatorAuth:
    """Check the coordinator signature on every request but ``GET /health``.

    A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` runs every request through
    an extra task and memory streams): it reads the body once, verifies the signature over
    it and hands the same bytes on to the app.
    """

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] == "/health" and scope["method"] == "GET"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        try:
            verify_headers(
                self.node.coordinator_pk, scope["method"], target, body, Headers(scope=scope)
            )
        except NodeAuthError as exc:
            logs.warn(
                "auth.refused",
                node_id=self.node.node_id,
                method=scope["method"],
                path=scope["path"],
                reason=str(exc),
            )
            await problem(401, "unauthenticated", str(exc))(scope, receive, send)
            return
        scope = {**scope, "state": {**scope.get("state", {}), "coordinator_verified": True}}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(node: Node) -> FastAPI:
    """The ASGI app serving ``node``."""
    app = FastAPI(title=f"TP Wallet Custody signer node {node.node_id}", version="1")
    app.add_middleware(CoordinatorAuth, node=node)

    @app.exception_handler(NodeError)
    async def _node_error(_: Request, exc: NodeError) -> JSONResponse:
        return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        return problem(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "bad-request", "request does not match the schema")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a bare text/plain 500: the coordinator blames a node that answers garbage.
        logs.event(
            "request.crashed",
            level=logging.ERROR,
            node_id=node.node_id,
            path=request.url.path,
            error=type(exc).__name__,
        )
        return problem(500, "internal", "the node hit an unexpected error; nothing was released")

    @app.exception_handler(HsmError)
    async def _hsm_error(_: Request, exc: HsmError) -> JSONResponse:
        logs.warn("hsm.error", node_id=node.node_id, code=exc.code)
        status = 500 if exc.code.startswith("hsm.unseal") else 503
        return problem(status, exc.code.replace(".", "-").replace("_", "-"), exc.message)

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise NodeError(400, "bad-request", "body is not JSON") from None
        if not isinstance(body, dict):
            raise NodeError(400, "bad-request", "body must be a JSON object")
        return body

    @app.get("/health")
    def health() -> dict[str, Any]:
        return node.health()

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return node.status()

    @app.put("/v1/peers")
    async def put_peers(request: Request) -> dict[str, Any]:
        body = await _json(request)
        raw = body.get("peers")
        if not isinstance(raw, list):
            raise NodeError(422, "bad-request", "peers must be a list")
        peers = []
        for p in raw:
            if not isinstance(p, dict) or type(p.get("party_id")) is not int:
                raise NodeError(
                    422, "bad-request", "each peer needs node_id, party_id, sign_pk, box_pk"
                )
            peers.append(
                Peer(
                    p["party_id"],
                    str(p.get("node_id")),
                    hex_field(p, "sign_pk"),
                    hex_field(p, "box_pk"),
                )
            )
        n = await _run(node.set_peers, peers)
        return {"peers": n}

    @app.post("/v1/sessions")
    async def start_session(request: Request) -> dict[str, Any]:
        body = await _json(request)
        state: dict[str, Any] = await _run(node.start_session, body)
        return state

    @app.post("/v1/sessions/{session_id}/envelopes")
    async def envelopes(session_id: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        envs = body.get("envelopes")
        if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
            raise NodeError(422, "bad-request", "envelopes must be a list of objects")
        state: dict[str, Any] = await _run(node.deliver, session_id, envs)
        return state

    @app.get("/v1/sessions/{session_id}")
    def get_session(session_id: str) -> dict[str, Any]:
        return node.session_state(session_id)

    @app.post("/v1/frost/commitments")
    async def commitments(request: Request) -> dict[str, Any]:
        body = await _json(request)
        out = await _run(node.frost_commitments, body.get("key_id"), body.get("count"))
        return {"commitments": out}

    @app.post("/v1/frost/sign")
    async def frost_sign(request: Request) -> dict[str, Any]:
        body = await _json(request)
        req = batch_item_request(body)
        share = await _run(
            node.frost_sign,
            body.get("key_id"),
            body.get("nonce_id"),
            req,
            hex_field(body, "signing_package"),
            coordinator_verified=bool(getattr(request.state, "coordinator_verified", False)),
        )
        return {"signature_share": share.hex()}

    @app.post("/v1/ecdsa/sign")
    async def ecdsa_sign(request: Request) -> dict[str, Any]:
        body = await _json(request)
        req = batch_item_request(body)
        partial = await _run(
            node.ecdsa_sign,
            body.get("key_id"),
            body.get("presignature_id"),
            req,
            coordinator_verified=bool(getattr(request.state, "coordinator_verified", False)),
        )
        return {"partial": partial.hex()}

    async def _batch(request: Request, fn: Any) -> JSONResponse:
        body = await _json(request)
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise NodeError(422, "bad-request", f"items must be a list of 1 to {MAX_BATCH} objects")
        results = await _run(
            fn,
            items,
            coordinator_verified=bool(getattr(request.state, "coordinator_verified", False)),
        )
        return JSONResponse({"results": results})

    @app.post("/v1/frost/sign-batch")
    async def frost_sign_batch(request: Request) -> JSONResponse:
        """Many ``/v1/frost/sign`` items in one call; each fails alone (NODE_API.md v1.3)."""
        return await _batch(request, node.frost_sign_batch)

    @app.post("/v1/ecdsa/sign-batch")
    async def ecdsa_sign_batch(request: Request) -> JSONResponse:
        """Many ``/v1/ecdsa/sign`` items in one call; each fails alone (NODE_API.md v1.3)."""
        return await _batch(request, node.ecdsa_sign_batch)

    return app


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking node code (HSM, SQLCipher, curve arithmetic) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args, **kwargs)
