"""``Idempotency-Key`` handling for POST (DESIGN.md, API conventions).

Scope is (credential, key). The fingerprint is sha256 of method, path and the canonical
JSON of the body. Same key and same body: the stored answer again (``Idempotent-Replayed:
true``). Same key, other body: 422. Same key while the first request still runs: 409.
Only successful (2xx) answers are stored; an error releases the key so the client can
fix the cause and retry with it. That includes a sign request that *failed* or *expired*
after its key was claimed: the outcome's transaction (or the expiry sweep) deletes the
record (:func:`release_request`), so a retry with the same key starts a new request.

Records expire ``settings.idempotency_ttl`` seconds (default 24 h) after their claim: the
coordinator's slow background sweep deletes them (:func:`sweep`); after that the same key
starts a new request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Table, bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import Principal
from api.db import Database, IdempotencyRecord, utcnow
from api.problems import Problem

MAX_KEY_LEN = 255


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canon = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canon = body
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + canon).hexdigest()


@dataclass
class Slot:
    """One claimed ``Idempotency-Key`` whose answer is still to be stored.

    The signing path stores the answer in the same transaction as the outcome
    (:class:`api.coordinator.outcomes.OutcomeWriter`) while ``attached`` (the POST is still
    waiting); once the POST stops waiting it detaches and stores its 202 answer itself.
    ``response`` is set when the answer has been stored.
    """

    credential_id: str
    key: str
    attached: bool = True
    owned: bool = False
    response: tuple[int, dict[str, Any]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def own(self) -> bool:
        """Called by the outcome's transaction: True if it is to store the answer."""
        with self._lock:
            self.owned = self.attached
            return self.owned

    def detach(self) -> bool:
        """Called by the POST when it stops waiting: False if the outcome's transaction
        already took the answer over (then wait for it instead)."""
        with self._lock:
            if self.owned:
                return False
            self.attached = False
            return True


def _where(credential_id: str, key: str) -> Any:
    return (IdempotencyRecord.credential_id == credential_id) & (IdempotencyRecord.key == key)


_TABLE = cast(Table, IdempotencyRecord.__table__)
_CLAIM = _TABLE.insert()  # Core statements built once; parameters per call
_ANSWER = _TABLE.update().where(
    _TABLE.c.credential_id == bindparam("_cred"), _TABLE.c.key == bindparam("_key")
)


def claim(conn: Connection, credential_id: str, key: str, fp: str) -> None:
    """INSERT the claim of ``key`` in the caller's transaction (IntegrityError if taken)."""
    conn.execute(
        _CLAIM,
        {
            "credential_id": credential_id,
            "key": key,
            "fingerprint": fp,
            "state": "in_flight",
            "created_at": utcnow(),
        },
    )


def store_answer(conn: Connection | Session, slot: Slot, status: int, body: dict[str, Any]) -> None:
    """Record the answer of a claimed key inside the caller's transaction."""
    conn.execute(
        _ANSWER,
        {
            "_cred": slot.credential_id,
            "_key": slot.key,
            "state": "done",
            "status_code": status,
            "response": body,
        },
    )
    slot.response = (status, body)


def release(db: Database, credential_id: str, key: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(delete(IdempotencyRecord).where(_where(credential_id, key)))


def release_request(conn: Connection | Session, request_id: str, slot: Slot | None = None) -> None:
    """In the caller's transaction: release every key whose answer is request
    ``request_id`` (failed or expired), and ``slot``'s key (its answer not stored yet)."""
    conn.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.response["id"].as_string() == request_id)
    )
    if slot is not None:
        conn.execute(
            delete(IdempotencyRecord).where(
                _where(slot.credential_id, slot.key), IdempotencyRecord.state == "in_flight"
            )
        )


def sweep(db: Database, ttl: float) -> int:
    """Delete the records claimed more than ``ttl`` seconds ago; how many went."""
    cutoff = utcnow() - dt.timedelta(seconds=ttl)
    with db.engine.begin() as conn:
        done = conn.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(done.rowcount or 0)


def location(
    base: str, status: int, body: dict[str, Any], retry_after: float = 1
) -> dict[str, str]:
    """``Location`` (and for a 202 ``Retry-After``) of an answer that made resource
    ``body["id"]`` under collection path ``base``."""
    rid = body.get("id") if isinstance(body, dict) else None
    if status not in (201, 202) or not isinstance(rid, str):
        return {}
    headers = {"Location": f"{base.rstrip('/')}/{rid}"}
    if status == 202:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return headers


def existing(
    db: Database, credential_id: str, key: str, fp: str, base: str = "", retry_after: float = 1
) -> JSONResponse | None:
    """The answer for a key already claimed: the stored answer (same request), else a
    422 (other request) or 409 (still running) problem. ``None`` when it is unclaimed."""
    with db.engine.connect() as conn:
        rec = conn.execute(
            select(
                IdempotencyRecord.fingerprint,
                IdempotencyRecord.state,
                IdempotencyRecord.status_code,
                IdempotencyRecord.response,
            ).where(_where(credential_id, key))
        ).first()
    if rec is None:
        return None
    if rec.fingerprint != fp:
        raise Problem(
            422,
            "idempotency-mismatch",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request",
        )
    if rec.state != "done":
        raise Problem(
            409,
            "idempotency-in-flight",
            "Request in flight",
            "a request with this Idempotency-Key is still being processed",
        )
    status = rec.status_code or 200
    headers = {"Idempotent-Replayed": "true"}
    if base:
        headers.update(location(base, status, rec.response or {}, retry_after))
    return JSONResponse(rec.response, status_code=status, headers=headers)


def replay(
    db: Database, credential_id: str, key: str, fp: str, base: str = "", retry_after: float = 1
) -> JSONResponse:
    """After losing the race to claim ``key``: the answer as :func:`existing` gives it."""
    out = existing(db, credential_id, key, fp, base, retry_after)
    if out is None:  # released between our insert and read: ask to retry
        raise Problem(
            409,
            "idempotency-in-flight",
            "Request in flight",
            "a request with this Idempotency-Key is being processed",
        )
    return out


async def run_idempotent(
    request: Request,
    principal: Principal,
    idem_key: str,
    handler: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> JSONResponse:
    db: Database = request.app.state.db
    fp = fingerprint(request.method, request.url.path, await request.body())
    cred = principal.credential_id
    slot = Slot(cred, idem_key)

    def claim_job(conn: Connection) -> None:
        claim(conn, cred, idem_key, fp)

    try:  # every database call off the event loop (the group writer's thread, or a worker)
        await db.write(claim_job)
    except IntegrityError:
        retry_after = request.app.state.settings.retry_after
        return await asyncio.to_thread(
            replay, db, cred, idem_key, fp, request.url.path, retry_after
        )
    try:
        status, body = await handler()
    except BaseException:
        await asyncio.shield(asyncio.to_thread(release, db, cred, idem_key))
        raise
    await db.write(lambda conn: store_answer(conn, slot, status, body))
    return JSONResponse(
        body,
        status_code=status,
        headers=location(request.url.path, status, body, request.app.state.settings.retry_after),
    )
