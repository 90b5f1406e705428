"""The node's HTTP service (FastAPI on uvicorn): docs/NODE_API.md.

Every route except ``GET /health`` requires a request signed by the enrolled coordinator
(:func:`custody.nodeauth.verify_headers`); a missing, bad or stale signature is a 401
problem document and is logged. Handlers are plain ``def`` so FastAPI runs them in its
thread pool; the node serialises database access itself (:mod:`signer_nodes.store`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from signer_nodes import logs
from signer_nodes.envelope import Peer
from signer_nodes.node import Node, NodeError
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

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


def _hex(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise NodeError(422, "bad-request", f"field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise NodeError(422, "bad-request", f"field {name!r} is not hex") from None


class CoordinatorAuth(BaseHTTPMiddleware):
    """Check the coordinator signature on every request but ``GET /health``."""

    def __init__(self, app: Any, node: Node) -> None:
        super().__init__(app)
        self.node = node

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path == "/health" and request.method == "GET":
            return await call_next(request)
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            verify_headers(self.node.coordinator_pk, request.method, target, body, request.headers)
        except NodeAuthError as exc:
            logs.warn(
                "auth.refused",
                node_id=self.node.node_id,
                method=request.method,
                path=request.url.path,
                reason=str(exc),
            )
            return problem(401, "unauthenticated", str(exc))
        request.state.coordinator_verified = True
        return await call_next(request)


def create_app(node: Node) -> FastAPI:
    """The ASGI app serving ``node``."""
    app = FastAPI(title=f"TP Wallet Custody signer node {node.node_id}", version="1")
    app.add_middleware(CoordinatorAuth, node=node)

    @app.exception_handler(NodeError)
    async def _node_error(_: Request, exc: NodeError) -> JSONResponse:
        return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM)

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
                Peer(p["party_id"], str(p.get("node_id")), _hex(p, "sign_pk"), _hex(p, "box_pk"))
            )
        n = await _run(node.set_peers, peers)
        return {"peers": n}

    @app.post("/v1/sessions")
    async def start_session(request: Request) -> dict[str, Any]:
        body = await _json(request)
        return await _run(node.start_session, body)

    @app.post("/v1/sessions/{session_id}/envelopes")
    async def envelopes(session_id: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        envs = body.get("envelopes")
        if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
            raise NodeError(422, "bad-request", "envelopes must be a list of objects")
        return await _run(node.deliver, session_id, envs)

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
        req = body.get("request")
        if not isinstance(req, dict):
            raise NodeError(422, "bad-request", "request must be an object")
        share = await _run(
            node.frost_sign,
            body.get("key_id"),
            body.get("nonce_id"),
            req,
            _hex(body, "signing_package"),
            coordinator_verified=bool(getattr(request.state, "coordinator_verified", False)),
        )
        return {"signature_share": share.hex()}

    @app.post("/v1/ecdsa/sign")
    async def ecdsa_sign(request: Request) -> dict[str, Any]:
        body = await _json(request)
        req = body.get("request")
        if not isinstance(req, dict):
            raise NodeError(422, "bad-request", "request must be an object")
        partial = await _run(
            node.ecdsa_sign,
            body.get("key_id"),
            body.get("presignature_id"),
            req,
            coordinator_verified=bool(getattr(request.state, "coordinator_verified", False)),
        )
        return {"partial": partial.hex()}

    return app


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking node code (HSM, SQLCipher, curve arithmetic) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args, **kwargs)
