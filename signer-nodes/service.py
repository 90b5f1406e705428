"""The node's HTTP service (FastAPI on uvicorn): docs/NODE_API.md.

Every route except ``GET /health`` and ``GET /metrics`` (:data:`UNSIGNED`; ``/metrics``
may require the scrape token ``$CUSTODY_METRICS_TOKEN``) requires a request signed by the
enrolled coordinator for this node (:func:`custody.nodeauth.verify_headers` with
``recipient`` = this node's id); a missing, bad, stale, misaddressed or replayed signature
is a 401 problem document and is logged. The node is served through
:func:`custody.serving.serve` (:func:`serve`): body limit before authentication (413),
header/body timeouts, a connection cap.
Every error, expected or not, is an RFC 9457 problem document: this module is the ONE
place that maps a domain error (:class:`signer_nodes.errors.NodeError`, its
:class:`~signer_nodes.errors.Kind`) or an HSM error to an HTTP status and a problem
document (:data:`STATUS`, :func:`problem_doc`), for whole requests, for each item of a
batch and for the ``error`` of a failed session.
Blocking node work runs in the thread pool, so requests are served
concurrently; the node orders what must be ordered itself (:mod:`signer_nodes.store`:
group commit of ledger marks, the sealing readers-writer lock against rotation).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custody import obs
from custody.nodeauth import MAX_SKEW_SECONDS, TIMESTAMP_HEADER, NodeAuthError, verify_headers
from custody.serving import ServiceLimits, server_config
from hsm.errors import HsmError
from signer_nodes import logs, metrics
from signer_nodes.envelope import Peer
from signer_nodes.errors import Kind, NodeError
from signer_nodes.node import INIT_KEY_SOURCE, Node
from signer_nodes.pipeline import MAX_BATCH, Outcome, Strategy
from signer_nodes.specs import hex_field

__all__ = [
    "create_app",
    "serve",
    "LIMITS",
    "STATUS",
    "ReplayCache",
    "problem_doc",
    "error_doc",
    "session_view",
]

PROBLEM = "application/problem+json"

#: The HTTP status of each kind of domain error.
STATUS: dict[Kind, int] = {
    Kind.BAD_REQUEST: 422,
    Kind.BAD_PEER: 422,
    Kind.BAD_SIGNING_PACKAGE: 422,
    Kind.WRONG_SCHEME: 422,
    Kind.UNKNOWN_KEY: 404,
    Kind.UNKNOWN_SESSION: 404,
    Kind.UNKNOWN_NONCE: 404,
    Kind.UNKNOWN_PRESIGNATURE: 404,
    Kind.UNKNOWN_PEER: 409,
    Kind.NONCE_USED: 409,
    Kind.PRESIGNATURE_USED: 409,
    Kind.SESSION_EXISTS: 409,
    Kind.KEY_EXISTS: 409,
    Kind.PROTOCOL_ERROR: 409,
    Kind.OT_PAIR_RETIRED: 409,
    Kind.RESTARTED: 409,
    Kind.NOT_AUTHORIZED: 403,
    Kind.GOVERNANCE_MISSING: 409,
    Kind.GOVERNANCE_MALFORMED: 422,
    Kind.GOVERNANCE_UNCHAINED: 409,
    Kind.GOVERNANCE_UNDER_SIGNED: 403,
    Kind.GOVERNANCE_ROLLBACK: 409,
    Kind.GOVERNANCE_WRONG_CLUSTER: 409,
    Kind.IDENTITY_MISMATCH: 409,
    Kind.NOT_IN_ROSTER: 403,
    Kind.POOL_FULL: 429,
    Kind.CHECKPOINT_UNCHAINED: 409,
    Kind.CHECKPOINT_MISSING_RELEASES: 409,
    Kind.INTERNAL: 500,
}

#: Transport limits of a node (custody.serving): bodies up to 2 MiB (a 256-item batch, a
#: governance document, a few thousand audit entries), checked before authentication.
# The nodes serve only the coordinator, over few long-lived connections: they keep an idle
# one longer (75 s) than the coordinator does (api.nodes.IDLE_KEEPALIVE_S), so the client is
# always the side that closes it.
LIMITS = ServiceLimits(max_body_bytes=2 * 1024 * 1024, keep_alive_s=75.0)
MAX_JSON_DEPTH = 64


class ReplayCache:
    """Coordinator signatures seen within their validity window: each is accepted once."""

    def __init__(self, window_s: float = MAX_SKEW_SECONDS, cap: int = 500_000) -> None:
        self.window_s = window_s
        self.cap = cap
        self._seen: dict[bytes, float] = {}
        self._purged = 0.0

    def fresh(self, sig: bytes, timestamp: float, now: float) -> bool:
        """Record ``sig``; False if it was seen before (or the cache is full)."""
        if now - self._purged > 5 or len(self._seen) >= self.cap:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            self._purged = now
            if len(self._seen) >= self.cap:
                return False
        if sig in self._seen:
            return False
        # kept until the timestamp can no longer pass the skew check
        self._seen[sig] = timestamp + self.window_s + 1
        return True


def problem_doc(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document of type ``urn:tpwc:node:<code>``."""
    return {
        "type": f"urn:tpwc:node:{code}",
        "title": code.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        problem_doc(status, code, detail, **extra), status_code=status, media_type=PROBLEM
    )


def node_error_doc(exc: NodeError) -> dict[str, Any]:
    extra = {"culprits": list(exc.culprits)} if exc.culprits else {}
    return problem_doc(STATUS[exc.kind], exc.code, exc.detail, **extra)


def hsm_error_doc(exc: HsmError) -> dict[str, Any]:
    status = 500 if exc.code.startswith("hsm.unseal") else 503
    return problem_doc(status, exc.code.replace(".", "-").replace("_", "-"), exc.message)


INTERNAL_DETAIL = "the node hit an unexpected error; nothing was released"


def error_doc(exc: BaseException, node_id: str) -> dict[str, Any]:
    """The problem document of any error (logged; an unexpected one reveals nothing)."""
    if isinstance(exc, NodeError):
        return node_error_doc(exc)
    if isinstance(exc, HsmError):
        logs.warn("hsm.error", node_id=node_id, code=exc.code)
        return hsm_error_doc(exc)
    logs.event("item.crashed", level=logging.ERROR, node_id=node_id, error=type(exc).__name__)
    return problem_doc(500, "internal", INTERNAL_DETAIL)


def session_view(state: dict[str, Any]) -> dict[str, Any]:
    """A session state for the wire: its ``error`` record as a problem document."""
    err = state.get("error")
    if isinstance(err, dict) and "type" not in err:  # records; older rows hold documents
        state = {**state, "error": node_error_doc(NodeError.from_record(err))}
    return state


def batch_results(strategy: Strategy, outcomes: list[Outcome], node_id: str) -> list[Any]:
    """One ``{result_field: hex}`` or ``{"problem": document}`` per batch item."""
    return [
        _released(strategy, o) if isinstance(o, bytes) else {"problem": error_doc(o, node_id)}
        for o in outcomes
    ]


def _released(strategy: Strategy, out: bytes) -> dict[str, Any]:
    """A released share and, since issue 10, the node's receipt attestation for it."""
    doc: dict[str, Any] = {strategy.result_field: out.hex()}
    receipt = getattr(out, "receipt", None)
    if receipt is not None:
        doc["receipt"] = receipt
    return doc


#: The coordinator names the identity key it signed with (issue 14: several coordinators,
#: each its own key pinned in governance). Optional: without it the node tries each key
#: it accepts; with it, a key not pinned is refused by name (``coordinator-not-pinned``).
COORDINATOR_KEY_HEADER = "X-Coordinator-Key"


class CoordinatorNotPinned(NodeAuthError):
    """A request signed by (or naming) a coordinator key the node does not accept now."""


def verify_coordinator(
    node: Node, method: str, target: str, body: bytes, headers: Headers
) -> tuple[bytes, str]:
    """Verify the coordinator signature against the keys ``node`` accepts now
    (:meth:`Node.coordinator_keys`); returns the signature and the coordinator's name.

    With :data:`COORDINATOR_KEY_HEADER` only that key is tried, and a key outside the set
    raises :class:`CoordinatorNotPinned` naming it and the set's source; without it every
    accepted key is tried (there are a handful); a signature none verifies is
    :class:`CoordinatorNotPinned` once governance pins a list, else refused as before
    (``bad coordinator signature``, the node's init key only).
    """
    accepted, source = node.coordinator_keys()
    named = headers.get(COORDINATOR_KEY_HEADER)
    if named is not None:
        try:
            key = bytes.fromhex(named)
        except ValueError:
            raise NodeAuthError(f"{COORDINATOR_KEY_HEADER} is not hex") from None
        if len(key) != 32:
            raise NodeAuthError(f"{COORDINATOR_KEY_HEADER} must be 32 bytes (64 hex digits)")
        if key not in accepted:
            raise CoordinatorNotPinned(
                f"coordinator key {named.lower()} is not pinned in {source}"
                f" (accepted: {', '.join(sorted(accepted.values()))})"
            )
        candidates = [key]
    else:
        candidates = list(accepted)
    error: NodeAuthError | None = None
    for key in candidates:
        try:
            sig = verify_headers(key, method, target, body, headers, recipient=node.node_id)
        except NodeAuthError as exc:
            error = exc
            continue
        return sig, accepted[key]
    assert error is not None  # ``accepted`` is never empty (check_body, Node.init)
    if named is None and source != INIT_KEY_SOURCE and "bad coordinator" in str(error):
        raise CoordinatorNotPinned(
            f"signature verifies under no coordinator key pinned in {source}"
            f" ({', '.join(sorted(accepted.values()))})"
        )
    raise error


#: Routes a node serves without a coordinator signature (``/metrics`` may need the scrape
#: token ``$CUSTODY_METRICS_TOKEN`` instead; docs/SECURITY.md).
UNSIGNED = frozenset({("GET", "/health"), ("GET", "/metrics")})


class CoordinatorAuth:
    """Check the coordinator signature on every request but :data:`UNSIGNED`.

    A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` runs every request through
    an extra task and memory streams): it reads the body once, verifies the signature over
    it and hands the same bytes on to the app.
    """

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.replays = ReplayCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in UNSIGNED:
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
        headers = Headers(scope=scope)
        try:
            sig, coordinator = verify_coordinator(self.node, scope["method"], target, body, headers)
            if not self.replays.fresh(sig, float(headers[TIMESTAMP_HEADER]), time.time()):
                logs.warn(
                    "auth.replay",
                    node_id=self.node.node_id,
                    method=scope["method"],
                    path=scope["path"],
                )
                await problem(
                    401, "replayed", "this coordinator signature was used before (replay)"
                )(scope, receive, send)
                return
        except NodeAuthError as exc:
            code = "coordinator-not-pinned" if isinstance(exc, CoordinatorNotPinned) else None
            logs.warn(
                "auth.refused",
                node_id=self.node.node_id,
                method=scope["method"],
                path=scope["path"],
                reason=str(exc),
                **({"code": code} if code else {}),
            )
            await problem(401, code or "unauthenticated", str(exc))(scope, receive, send)
            return
        scope = {
            **scope,
            "state": {
                **scope.get("state", {}),
                "coordinator_verified": True,
                "coordinator": coordinator,
            },
        }
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
    app = FastAPI(
        title=f"TP Wallet Custody signer node {node.node_id}",
        version="1",
        **obs.fastapi_options(),
    )
    app.add_middleware(CoordinatorAuth, node=node)
    # outermost: ids, trace context and HTTP metrics also for requests auth refuses
    app.add_middleware(obs.HttpObserve, routes=app.router.routes)
    app.state.node_id = node.node_id
    metrics.watch_pool(node.shares.pool.count)
    schemes: dict[str, str] = {}
    scrape_token = os.environ.get("CUSTODY_METRICS_TOKEN") or None

    def scheme_of(key_id: str) -> str | None:
        """The scheme of a key this node signed with (a metrics label; cached)."""
        if key_id not in schemes:
            try:
                schemes[key_id] = node.shares.row(key_id).scheme
            except NodeError:
                return None
        return schemes[key_id]

    @app.exception_handler(NodeError)
    async def _node_error(_: Request, exc: NodeError) -> JSONResponse:
        doc = node_error_doc(exc)
        return JSONResponse(doc, status_code=doc["status"], media_type=PROBLEM)

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
        return problem(500, "internal", INTERNAL_DETAIL)

    @app.exception_handler(HsmError)
    async def _hsm_error(_: Request, exc: HsmError) -> JSONResponse:
        logs.warn("hsm.error", node_id=node.node_id, code=exc.code)
        doc = hsm_error_doc(exc)
        return JSONResponse(doc, status_code=doc["status"], media_type=PROBLEM)

    @app.exception_handler(_NotJson)
    async def _not_json(_: Request, exc: _NotJson) -> JSONResponse:
        return problem(400, "bad-request", str(exc))

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except RecursionError:
            raise _NotJson(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError:
            raise _NotJson("body is not JSON") from None
        if not isinstance(body, dict):
            raise _NotJson("body must be a JSON object")
        bad = _bad_json(body)
        if bad:
            raise _NotJson(bad)
        return body

    @app.get("/health")
    def health() -> dict[str, Any]:
        return node.health()

    @app.get("/metrics", include_in_schema=False)
    def metrics_route(request: Request) -> Response:
        """Prometheus metrics (no ids, no secrets; docs/OPERATIONS.md)."""
        if not obs.scrape_token_ok(request.scope.get("headers", ()), scrape_token):
            return problem(401, "unauthenticated", "send Authorization: Bearer <scrape token>")
        return Response(obs.metrics_body(), media_type=obs.METRICS_CONTENT_TYPE)

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return node.status()

    @app.put("/v1/peers")
    async def put_peers(request: Request) -> dict[str, Any]:
        body = await _json(request)
        raw = body.get("peers")
        if not isinstance(raw, list):
            raise NodeError(Kind.BAD_REQUEST, "peers must be a list")
        peers = []
        for p in raw:
            if not isinstance(p, dict) or type(p.get("party_id")) is not int:
                raise NodeError(
                    Kind.BAD_REQUEST, "each peer needs node_id, party_id, sign_pk, box_pk"
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

    @app.get("/v1/governance")
    def get_governance() -> dict[str, Any]:
        return node.governance()

    @app.put("/v1/governance")
    async def put_governance(request: Request) -> dict[str, Any]:
        body = await _json(request)
        doc = hex_field(body, "document")
        out: dict[str, Any] = await _run(node.install_governance, doc)
        return out

    @app.get("/v1/releases")
    def releases(after: int = 0, limit: int = 1000) -> dict[str, Any]:
        if not 0 <= after <= 2**62 or not 1 <= limit <= 1000:
            raise NodeError(Kind.BAD_REQUEST, "after in [0, 2**62], limit in [1, 1000]")
        return node.releases(after, limit)

    @app.post("/v1/audit/checkpoint")
    async def checkpoint(request: Request) -> dict[str, Any]:
        body = await _json(request)
        out: dict[str, Any] = await _run(
            node.checkpoint, body.get("seq"), body.get("head"), body.get("entries")
        )
        return out

    @app.post("/v1/sessions")
    async def start_session(request: Request) -> dict[str, Any]:
        body = await _json(request)
        state: dict[str, Any] = await _run(node.start_session, body)
        return session_view(state)

    @app.post("/v1/sessions/{session_id}/envelopes")
    async def envelopes(session_id: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        envs = body.get("envelopes")
        if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
            raise NodeError(Kind.BAD_REQUEST, "envelopes must be a list of objects")
        state: dict[str, Any] = await _run(node.deliver, session_id, envs)
        return session_view(state)

    @app.get("/v1/sessions/{session_id}")
    def get_session(session_id: str) -> dict[str, Any]:
        return session_view(node.session_state(session_id))

    @app.post("/v1/keys/{key_id}/commit")
    async def commit_share(key_id: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        out: dict[str, Any] = await _run(node.commit_share, key_id, body)
        return out

    @app.post("/v1/frost/commitments")
    async def commitments(request: Request) -> dict[str, Any]:
        body = await _json(request)
        out = await _run(node.frost_commitments, body.get("key_id"), body.get("count"))
        return {"commitments": out}

    pipeline = node.pipeline

    def _verified(request: Request) -> bool:
        return bool(getattr(request.state, "coordinator_verified", False))

    def _sign_one(strategy: Strategy, body: dict[str, Any], verified: bool) -> bytes:
        start = time.perf_counter()
        try:
            out = pipeline.sign_one(strategy, strategy.parse(body), coordinator_verified=verified)
        except Exception as exc:
            metrics.observe_sign([body], [exc], time.perf_counter() - start, scheme_of)
            raise
        metrics.observe_sign([body], [out], time.perf_counter() - start, scheme_of)
        return out

    def _sign_batch(strategy: Strategy, items: list[Any], verified: bool) -> list[Outcome]:
        start = time.perf_counter()
        outcomes = pipeline.sign_batch(strategy, items, coordinator_verified=verified)
        metrics.observe_sign(items, outcomes, time.perf_counter() - start, scheme_of)
        return outcomes

    async def _sign(request: Request, strategy: Strategy) -> dict[str, Any]:
        body = await _json(request)
        out = await _run(_sign_one, strategy, body, _verified(request))
        return _released(strategy, out)

    async def _batch(request: Request, strategy: Strategy) -> JSONResponse:
        body = await _json(request)
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise NodeError(Kind.BAD_REQUEST, f"items must be a list of 1 to {MAX_BATCH} objects")
        outcomes = await _run(_sign_batch, strategy, items, _verified(request))
        return JSONResponse({"results": batch_results(strategy, outcomes, node.node_id)})

    @app.post("/v1/frost/sign")
    async def frost_sign(request: Request) -> dict[str, Any]:
        return await _sign(request, pipeline.frost)

    @app.post("/v1/ecdsa/sign")
    async def ecdsa_sign(request: Request) -> dict[str, Any]:
        return await _sign(request, pipeline.ecdsa)

    @app.post("/v1/frost/sign-batch")
    async def frost_sign_batch(request: Request) -> JSONResponse:
        """Many ``/v1/frost/sign`` items in one call; each fails alone (NODE_API.md v1.3)."""
        return await _batch(request, pipeline.frost)

    @app.post("/v1/ecdsa/sign-batch")
    async def ecdsa_sign_batch(request: Request) -> JSONResponse:
        """Many ``/v1/ecdsa/sign`` items in one call; each fails alone (NODE_API.md v1.3)."""
        return await _batch(request, pipeline.ecdsa)

    return app


def _bad_json(value: Any) -> str | None:
    """What is wrong with a parsed body, if anything: nesting deeper than
    :data:`MAX_JSON_DEPTH` (later canonical encodings recurse), or a string with no UTF-8
    form (a lone surrogate such as ``"\\ud800"``). Iterative, so no hostile depth recurses."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"body nests deeper than {MAX_JSON_DEPTH} levels"
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "body holds a string that is not valid Unicode (a lone surrogate)"
    return None


def serve(node: Node, *, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve ``node`` under the transport guards of :mod:`custody.serving` (:data:`LIMITS`),
    over ``ssl_context`` (mutual TLS 1.3: :func:`signer_nodes.config.server_tls`) when
    given; plain HTTP (``run --dev``) otherwise."""
    config = server_config(create_app(node), host=host, port=port, limits=LIMITS)
    config.load()
    # uvicorn builds its own context from file names (no TLS 1.3 floor, no encrypted key
    # whose passphrase comes from the HSM): the node's context replaces it
    config.ssl = ssl_context
    uvicorn.Server(config).run()


class _NotJson(Exception):
    """The body is not a JSON object (a 400, before any domain code runs)."""


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking node code (HSM, SQLCipher, curve arithmetic) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)
