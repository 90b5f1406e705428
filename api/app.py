"""The coordinator ASGI app: ``create_app(settings)``; routes under ``/v1``.

Long work (DKG, signing) is a resource with a status: a POST waits up to
``settings.sync_wait`` seconds and answers 201 when the work has finished, else 202 with
the resource as it stands, which ``GET`` then shows progressing.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from nacl.signing import SigningKey
from sqlalchemy import Connection, Table, select, text
from sqlalchemy.exc import IntegrityError

from api import audit, idempotency, problems
from api.auth import Principal, require
from api.coordinator import Coordinator
from api.crypto import SignRequestError, message_to_sign
from api.db import AuditEntry, Database, Key, Node, SignRequest, utcnow
from api.idempotency import MAX_KEY_LEN, fingerprint, run_idempotent
from api.logs import RequestLog
from api.nodes import NodeCaller
from api.problems import Problem, problem_responses
from api.settings import Settings
from custody.domain import READ_ROLES, SIGN_STATUSES, new_id
from custody.models import (
    AuditList,
    AuditOut,
    AuditVerify,
    Health,
    KeyCreate,
    KeyList,
    KeyOut,
    NodeEnrol,
    NodeList,
    NodeOut,
    Ready,
    SignRequestCreate,
    SignRequestList,
    SignRequestOut,
)

VERSION = "0.1.0"
AUTH_ERRORS = (401, 403)
STATUS_PATTERN = "^(" + "|".join(SIGN_STATUSES) + ")$"
IdempotencyKey = Header(alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_LEN,
                        description="unique per logical request; see DESIGN.md")


def load_or_create_key(settings: Settings) -> SigningKey:
    """The coordinator's Ed25519 request-signing key (seed hex in ``coordinator_key``, 0600)."""
    path = settings.key_path
    if path.exists():
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex())
    return key


# -- cursors -----------------------------------------------------------------------------
def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq = json.loads(raw)["s"]
        if type(seq) is not int or seq < 0:
            raise ValueError
        return seq
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise Problem(422, "invalid-cursor", "Invalid cursor",
                      "pass back a next_cursor value unchanged") from None


# -- serialisation ----------------------------------------------------------------------
def key_out(k: Key) -> dict[str, Any]:
    return KeyOut(id=k.id, scheme=k.scheme, threshold=k.threshold, nodes=list(k.nodes),  # type: ignore[arg-type]
                  status=k.status, public_key=k.public_key,  # type: ignore[arg-type]
                  verifying_shares=k.verifying_shares, error=k.error,  # type: ignore[arg-type]
                  created_at=k.created_at).model_dump(mode="json")


def sign_out(r: SignRequest | SimpleNamespace) -> dict[str, Any]:
    return SignRequestOut(
        id=r.id, key_id=r.key_id, kind=r.kind, message=r.body.get("message", ""),  # type: ignore[arg-type]
        status=r.status, signature=r.signature if r.status == "signed" else None,  # type: ignore[arg-type]
        recovery_id=r.recovery_id if r.status == "signed" else None, signers=r.signers,
        blamed=r.blamed or [], error=r.error, created_at=r.created_at,  # type: ignore[arg-type]
        updated_at=r.updated_at, expires_at=r.expires_at).model_dump(mode="json")


def node_out(n: Node) -> dict[str, Any]:
    return NodeOut(id=n.id, party_id=n.party_id, url=n.url, status=n.status,  # type: ignore[arg-type]
                   last_seen=n.last_seen, last_error=n.last_error, sign_pk=n.sign_pk,
                   box_pk=n.box_pk).model_dump(mode="json")


def coord(request: Request) -> Coordinator:
    return request.app.state.coordinator  # type: ignore[no-any-return]


async def wait_for(task: asyncio.Task[Any], seconds: float) -> None:
    await asyncio.wait({task}, timeout=seconds)


_INSERT_REQUEST = cast(Table, SignRequest.__table__).insert()  # Core, built once (signing hot path)


# -- routes -----------------------------------------------------------------------------
ops = APIRouter()
v1 = APIRouter(prefix="/v1")


@ops.get("/health", response_model=Health, tags=["ops"])
async def health() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": VERSION}


@ops.get("/ready", response_model=Ready, tags=["ops"], responses=problem_responses(503))
async def ready(request: Request) -> Any:
    """Readiness: the database answers; reports how many nodes are healthy."""
    c = coord(request)
    try:
        with request.app.state.db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception:
        raise Problem(503, "not-ready", "Not ready", "database unavailable") from None
    return {"status": "ready", "database": "ok",
            "nodes_healthy": sum(n.eligible for n in c.nodes.values()),
            "nodes_enrolled": len(c.nodes), "pools": c.pool_sizes(),
            "batching": c.caller.batch_stats()}


@v1.get("/nodes", response_model=NodeList, tags=["nodes"],
        responses=problem_responses(*AUTH_ERRORS))
async def list_nodes(request: Request,
                     _: Principal = Depends(require("admin", "auditor"))) -> Any:  # noqa: B008
    """Enrolled nodes with their health and when they were last seen."""
    c = coord(request)
    with request.app.state.db.session() as s:
        rows = s.scalars(select(Node).order_by(Node.party_id)).all()
        items = []
        for n in rows:
            live = c.nodes.get(n.id)
            d = node_out(n)
            if live is not None:
                d["status"] = live.status
                d["last_error"] = live.last_error
                if live.last_seen:
                    d["last_seen"] = NodeOut.model_validate(
                        {**d, "last_seen": live.last_seen}).model_dump(mode="json")["last_seen"]
            items.append(d)
    return {"items": items}


@v1.put("/nodes/{node_id}", response_model=NodeOut, tags=["nodes"],
        responses=problem_responses(*AUTH_ERRORS, 409, 422, 502))
async def enrol_node(request: Request, body: NodeEnrol,
                     node_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
                     p: Principal = Depends(require("admin"))) -> Any:  # noqa: B008
    """Enrol (or re-point) a node: the coordinator reads its identity from ``GET /health``
    at ``url`` and pushes the peer list to every node."""
    await coord(request).enrol(node_id, body.url, p.credential_id)
    with request.app.state.db.session() as s:
        row = s.scalar(select(Node).where(Node.id == node_id))
        assert row is not None
        return node_out(row)


@v1.post("/keys", status_code=201, response_model=KeyOut, tags=["keys"],
         responses={202: {"model": KeyOut, "description": "DKG still running"},
                    **problem_responses(*AUTH_ERRORS, 409, 422, 503)})
async def create_key(request: Request, body: KeyCreate,
                     idempotency_key: str = IdempotencyKey,
                     p: Principal = Depends(require("admin"))) -> Any:  # noqa: B008
    """Create a threshold key by DKG among ``nodes`` (default: all enrolled)."""
    c = coord(request)

    async def handler() -> tuple[int, dict[str, Any]]:
        node_ids = body.nodes if body.nodes is not None else sorted(
            c.nodes, key=lambda n: c.nodes[n].party_id)
        if len(set(node_ids)) != len(node_ids):
            raise Problem(422, "validation", "Request validation failed", "duplicate node ids")
        unknown = [n for n in node_ids if n not in c.nodes]
        if unknown:
            raise Problem(422, "unknown-node", "Unknown node", f"not enrolled: {unknown}")
        if not 2 <= body.threshold <= len(node_ids):
            raise Problem(422, "invalid-threshold", "Invalid threshold",
                          f"need 2 <= threshold <= {len(node_ids)} nodes")
        down = [n for n in node_ids if not c.nodes[n].eligible]
        if down:
            raise Problem(503, "nodes-unavailable", "Nodes unavailable",
                          f"a DKG needs every share holder; not healthy: {down}")
        kid = new_id("key")
        with request.app.state.db.session() as s:
            s.add(Key(id=kid, scheme=body.scheme, threshold=body.threshold, nodes=node_ids,
                      status="pending"))
            audit.append(s, p.credential_id, "key.create", kid,
                         {"scheme": body.scheme, "threshold": body.threshold, "nodes": node_ids})
        await wait_for(c.spawn(c.run_dkg(kid)), request.app.state.settings.sync_wait)
        with request.app.state.db.session() as s:
            k = s.scalar(select(Key).where(Key.id == kid))
            assert k is not None
            return (202 if k.status == "pending" else 201), key_out(k)

    return await run_idempotent(request, p, idempotency_key, handler)


@v1.get("/keys", response_model=KeyList, tags=["keys"], responses=problem_responses(401, 403, 422))
async def list_keys(request: Request, limit: int = Query(50, ge=1, le=200),
                    cursor: str | None = Query(None, max_length=200),
                    _: Principal = Depends(require(*READ_ROLES))) -> Any:  # noqa: B008
    """Keys, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    after = decode_cursor(cursor)
    with request.app.state.db.session() as s:
        q = select(Key).order_by(Key.seq.desc()).limit(limit + 1)
        if after is not None:
            q = q.where(Key.seq < after)
        rows = s.scalars(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [key_out(k) for k in rows],
                "next_cursor": encode_cursor(rows[-1].seq) if more else None}


@v1.get("/keys/{key_id}", response_model=KeyOut, tags=["keys"],
        responses=problem_responses(401, 403, 404))
async def get_key(request: Request, key_id: str,
                  _: Principal = Depends(require(*READ_ROLES))) -> Any:  # noqa: B008
    with request.app.state.db.session() as s:
        k = s.scalar(select(Key).where(Key.id == key_id))
        if k is None:
            raise Problem(404, "not-found", "Not found", f"no key {key_id!r}")
        return key_out(k)


@v1.post("/sign-requests", status_code=201, response_model=SignRequestOut, tags=["signing"],
         responses={202: {"model": SignRequestOut, "description": "awaiting approval or signing"},
                    **problem_responses(*AUTH_ERRORS, 404, 409, 422)})
async def create_sign_request(request: Request, body: SignRequestCreate,
                              idempotency_key: str = IdempotencyKey,
                              p: Principal = Depends(require("requester"))) -> Any:  # noqa: B008
    """Ask for a signature. Raw: ed25519/bip340 sign the message bytes, ECDSA a 32-byte
    digest. Payment/settlement: the nodes sign the digest of ``payload``
    (``custody.signing``)."""
    c = coord(request)
    settings: Settings = request.app.state.settings
    db: Database = request.app.state.db
    cred = p.credential_id
    fp = fingerprint(request.method, request.url.path, await request.body())
    rid = new_id("sr")
    try:
        k = c.key_info(body.key_id)
        canonical: dict[str, Any] = {**(body.model_extra or {}), "id": rid,
                                     "key_id": body.key_id, "kind": body.kind}
        if body.message is not None:
            canonical["message"] = body.message.lower()
        try:
            msg = message_to_sign(k.scheme, canonical)
        except SignRequestError as e:
            raise Problem(422, "invalid-sign-request", "Invalid sign request", str(e),
                          field=e.field) from None
    except Problem:
        # A key already used answers as before (replay, 409, 422) even for a bad request.
        replayed = idempotency.existing(db, cred, idempotency_key, fp)
        if replayed is not None:
            return replayed
        raise
    if "message" not in canonical:
        canonical["message"] = msg.hex()
    status = "signing" if settings.dev_allow_all else "pending_approval"
    now = utcnow()
    row: dict[str, Any] = {
        "id": rid, "key_id": body.key_id, "kind": body.kind, "body": canonical,
        "status": status, "requested_by": cred, "blamed": [], "created_at": now,
        "updated_at": now, "expires_at": None if status == "signing" else
        now + dt.timedelta(seconds=settings.approval_ttl),
        "signature": None, "recovery_id": None, "signers": None, "error": None}
    slot = idempotency.Slot(cred, idempotency_key)
    digest = hashlib.sha256(msg).hexdigest()

    def insert_request(conn: Connection) -> None:
        """One transaction: claim the Idempotency-Key, insert the request, audit it."""
        idempotency.claim(conn, cred, idempotency_key, fp)
        conn.execute(_INSERT_REQUEST, row)
        audit.append(conn, cred, "sign.request", rid,
                     {"key_id": body.key_id, "kind": body.kind, "digest": digest,
                      "policy": "allow-all (dev)" if status == "signing" else "approval"})

    try:
        await db.write(insert_request)
    except IntegrityError:
        return idempotency.replay(db, cred, idempotency_key, fp)
    try:
        if status == "signing":
            def answer(changes: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                return 201, sign_out(SimpleNamespace(**{**row, **changes}))

            task = c.spawn(c.run_sign(rid, canonical, k, answer=answer, slot=slot))
            await wait_for(task, settings.sync_wait)
            if not task.done() and not slot.detach():
                await task  # the outcome's transaction is storing the answer right now
            if slot.response is not None:  # stored with the outcome (the usual case)
                return JSONResponse(slot.response[1], status_code=slot.response[0])
            slot.detach()
            with db.session() as s:
                r = s.scalar(select(SignRequest).where(SignRequest.id == rid))
                assert r is not None
                out = (201 if r.status in ("signed", "failed") else 202), sign_out(r)
        else:
            out = 202, sign_out(SimpleNamespace(**row))
        await db.write(lambda conn: idempotency.store_answer(conn, slot, *out))
    except BaseException:
        if slot.response is None:
            idempotency.release(db, cred, idempotency_key)
        raise
    return JSONResponse(out[1], status_code=out[0])


@v1.get("/sign-requests", response_model=SignRequestList, tags=["signing"],
        responses=problem_responses(401, 403, 422))
async def list_sign_requests(
    request: Request, limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=200),
    status: str | None = Query(None, pattern=STATUS_PATTERN),
    key_id: str | None = Query(None, max_length=40),
    _: Principal = Depends(require(*READ_ROLES)),  # noqa: B008
) -> Any:
    """Sign requests, newest first, optionally filtered; opaque cursor pagination."""
    after = decode_cursor(cursor)
    with request.app.state.db.session() as s:
        q = select(SignRequest).order_by(SignRequest.seq.desc()).limit(limit + 1)
        if after is not None:
            q = q.where(SignRequest.seq < after)
        if status is not None:
            q = q.where(SignRequest.status == status)
        if key_id is not None:
            q = q.where(SignRequest.key_id == key_id)
        rows = s.scalars(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [sign_out(r) for r in rows],
                "next_cursor": encode_cursor(rows[-1].seq) if more else None}


@v1.get("/sign-requests/{request_id}", response_model=SignRequestOut, tags=["signing"],
        responses=problem_responses(401, 403, 404))
async def get_sign_request(request: Request, request_id: str,
                           _: Principal = Depends(require(*READ_ROLES))) -> Any:  # noqa: B008
    with request.app.state.db.session() as s:
        r = s.scalar(select(SignRequest).where(SignRequest.id == request_id))
        if r is None:
            raise Problem(404, "not-found", "Not found", f"no sign request {request_id!r}")
        return sign_out(r)


@v1.get("/audit", response_model=AuditList, tags=["audit"],
        responses=problem_responses(401, 403, 422))
async def list_audit(request: Request, limit: int = Query(100, ge=1, le=500),
                     cursor: str | None = Query(None, max_length=200),
                     _: Principal = Depends(require("auditor", "admin"))) -> Any:  # noqa: B008
    """The hash-chained audit log, oldest first."""
    after = decode_cursor(cursor) or 0
    with request.app.state.db.session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.seq > after)
                         .order_by(AuditEntry.seq).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [AuditOut.model_validate(r, from_attributes=True).model_dump()
                          for r in rows],
                "next_cursor": encode_cursor(rows[-1].seq) if more else None}


@v1.get("/audit/verify", response_model=AuditVerify, tags=["audit"],
        responses=problem_responses(401, 403))
async def verify_audit(request: Request,
                       _: Principal = Depends(require("auditor", "admin"))) -> Any:  # noqa: B008
    """Recompute the hash chain."""
    with request.app.state.db.session() as s:
        ok, n, bad = audit.verify_chain(s)
    return {"ok": ok, "entries": n, "first_bad_seq": bad}


# -- app --------------------------------------------------------------------------------
def _openapi(app: FastAPI) -> Any:
    """OpenAPI with every error response as application/problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title="TP Wallet Custody coordinator", version=VERSION,
                         routes=app.routes,
                         description="Threshold-signing custody API. Errors are RFC 9457 "
                                     "problem documents.")
    ref = {"$ref": "#/components/schemas/ProblemModel"}
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ProblemModel" not in comps:
        comps["ProblemModel"] = problems.ProblemModel.model_json_schema()
    for path in schema.get("paths", {}).values():
        for op in path.values():
            resp = op.setdefault("responses", {})
            for code, r in resp.items():
                if code.isdigit() and int(code) >= 400:
                    r["content"] = {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}}
            has_params = bool(op.get("parameters") or op.get("requestBody"))
            if has_params and "422" not in resp:
                resp["422"] = {"description": "Request validation failed",
                               "content": {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}}}
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings, *, background: bool = True) -> FastAPI:
    """Build the coordinator app; ``background=False`` skips health/pool sweeps (tests)."""
    db = Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db.create_all()
        key = load_or_create_key(settings)
        c = Coordinator(settings, db, NodeCaller(key, settings.round_timeout))
        app.state.coordinator = c
        if background:
            c.start()
        else:
            c.load_nodes()
        try:
            yield
        finally:
            await c.stop()
            db.close()

    app = FastAPI(title="TP Wallet Custody coordinator", version=VERSION, lifespan=lifespan)
    app.state.db = db
    app.state.settings = settings
    problems.install(app)
    app.include_router(ops)
    app.include_router(v1)
    app.add_middleware(RequestLog)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
