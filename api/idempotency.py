"""``Idempotency-Key`` handling for POST (DESIGN.md, API conventions).

Scope is (credential, key). The fingerprint is sha256 of method, path and the canonical
JSON of the body. Same key and same body: the stored answer again (``Idempotent-Replayed:
true``). Same key, other body: 422. Same key while the first request still runs: 409.
Only successful (2xx) answers are stored; an error releases the key so the client can
fix the cause and retry with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from api.auth import Principal
from api.db import Database, IdempotencyRecord
from api.problems import Problem

MAX_KEY_LEN = 255


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canon = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canon = body
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + canon).hexdigest()


async def run_idempotent(
    request: Request, principal: Principal, idem_key: str,
    handler: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> JSONResponse:
    db: Database = request.app.state.db
    fp = fingerprint(request.method, request.url.path, await request.body())
    try:
        with db.session() as s:
            s.add(IdempotencyRecord(credential_id=principal.credential_id, key=idem_key,
                                    fingerprint=fp, state="in_flight"))
    except IntegrityError:
        with db.session() as s:
            rec = s.scalar(select(IdempotencyRecord).where(
                IdempotencyRecord.credential_id == principal.credential_id,
                IdempotencyRecord.key == idem_key))
            if rec is None:  # released between our insert and read: ask to retry
                raise Problem(409, "idempotency-in-flight", "Request in flight",
                              "a request with this Idempotency-Key is being processed") from None
            if rec.fingerprint != fp:
                raise Problem(422, "idempotency-mismatch", "Idempotency-Key reused",
                              "this Idempotency-Key was used with a different request") from None
            if rec.state != "done":
                raise Problem(409, "idempotency-in-flight", "Request in flight",
                              "a request with this Idempotency-Key is still being processed"
                              ) from None
            return JSONResponse(rec.response, status_code=rec.status_code or 200,
                                headers={"Idempotent-Replayed": "true"})
    try:
        status, body = await handler()
    except BaseException:
        with db.session() as s:
            s.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.credential_id == principal.credential_id,
                IdempotencyRecord.key == idem_key))
        raise
    with db.session() as s:
        rec = s.scalar(select(IdempotencyRecord).where(
            IdempotencyRecord.credential_id == principal.credential_id,
            IdempotencyRecord.key == idem_key))
        if rec is not None:
            rec.state, rec.status_code, rec.response = "done", status, body
    return JSONResponse(body, status_code=status)
