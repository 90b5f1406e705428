"""The outcome writer: a sign request's result, stored with its audit entry, fail closed.

The outcome (signed with the signature, or failed with its problem) and its audit entry
are one transaction through the group writer; while the POST still waits, its idempotent
answer goes in the same transaction. A failed outcome stores no answer: it releases every
Idempotency-Key of the request in that transaction (:func:`api.idempotency.release_request`),
so the client may retry with the same key; the waiting POST still gets its answer
(``slot.response``). If that transaction fails, the signature is not
released: the request is marked failed without it (``audit-failed``).

Several coordinators (issue 14): the outcome is stored only while the request is still
``signing``, read under a row lock in the outcome's transaction
(:func:`api.coordinator.queue.recorded_attempts`): **the first stored wins**. A later
outcome (a coordinator that resumed a request whose first holder then finished anyway, or
one that lost its lease) stores nothing but ``sign.attempt`` entries for the signer sets
it asked, so the nodes' checkpoints still find every release; its signature is never
returned. The signer sets every holder fenced before asking (``attempted``) are recorded
with the winning outcome too: the releases of a coordinator that died mid-request. A
request resumed by another coordinator has no waiting POST: its answer is stored for the
Idempotency-Keys still in flight that name it (:func:`_answer_request`), so the client's
retry with the same key gets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, update

from api import audit, idempotency, webhooks
from api.coordinator.queue import recorded_attempts
from api.coordinator.types import SignResult, problem_doc
from api.db import Database, IdempotencyRecord, SignRequest, utcnow

log = logging.getLogger("api.coordinator")

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
Job = Callable[[Connection], bool]

# Core statement built once for the signing hot path (parameters per call; the SET clause
# is the columns named in the parameters).
_REQUESTS = cast(Table, SignRequest.__table__)
_UPDATE_REQUEST = _REQUESTS.update().where(_REQUESTS.c.id == bindparam("_rid"))


class OutcomeWriter:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        request_id: str,
        key_id: str,
        result: SignResult | None,
        error: dict[str, Any] | None,
        blamed: list[dict[str, Any]],
        slot: idempotency.Slot | None = None,
        answer: Answer | None = None,
        *,
        request_digest: bytes,
        attempted: Sequence[tuple[int, ...]] = (),
        receipt: dict[str, Any] | None = None,
    ) -> bool:
        """Store the outcome (``result`` or ``error``); with ``slot`` and ``answer`` the
        POST's idempotent answer, built by ``answer(changed columns)``, goes with it. Every
        other signer set in ``attempted`` gets a ``sign.attempt`` entry: its nodes may have
        released shares, which their next audit checkpoint looks for. ``request_digest`` is
        the digest the nodes logged for the request (:func:`api.audit.request_digest`),
        computed by the caller, off the writer thread. ``receipt``
        (:mod:`api.coordinator.receipts`) is stored with a signature, with the ``sign.signed``
        entry's sequence number added as ``audit.seq``. False when the outcome could not be
        stored (the fallback marks the request failed: a signature is withheld) or another
        outcome was stored first (module docstring)."""
        outcome, fallback = _jobs(
            request_id,
            key_id,
            result,
            error,
            blamed,
            slot,
            answer,
            attempted,
            request_digest,
            receipt,
        )
        try:
            return await self.db.write(outcome)
        except Exception as e:
            if slot is not None:
                slot.response = None
            log.error(
                "audit write failed; signature withheld",
                extra={"sign_request_id": request_id, "err": type(e).__name__},
            )
            await self.db.write(fallback)
            return False


def _jobs(
    request_id: str,
    key_id: str,
    result: SignResult | None,
    error: dict[str, Any] | None,
    blamed: list[dict[str, Any]],
    slot: idempotency.Slot | None,
    answer: Answer | None,
    attempted: Sequence[tuple[int, ...]],
    request_digest: bytes,
    receipt: dict[str, Any] | None = None,
) -> tuple[Job, Job]:
    """Two database jobs: the outcome with its audit entry; and the fallback that marks
    the request failed without the signature."""
    now = utcnow()
    if result is not None:
        changes: dict[str, Any] = {
            "status": "signed",
            "signature": result.signature.hex(),
            "recovery_id": result.recovery_id,
            "signers": result.signers,
            "error": None,
        }
    else:
        changes = {"status": "failed", "error": error}
    changes.update(updated_at=now, blamed=blamed)
    withheld = {
        "status": "failed",
        "signature": None,
        "recovery_id": None,
        "updated_at": now,
        "blamed": blamed,
        "error": problem_doc(
            "audit-failed", "Audit write failed", "the signature was withheld", 500
        ),
    }

    final = tuple(sorted(result.signers)) if result is not None else None
    mine = {tuple(sorted(a)) for a in attempted} | ({final} if final is not None else set())

    def lost(conn: Connection) -> bool:
        """Another outcome was stored first: record our signer sets as attempts only."""
        for signers in sorted(mine):
            audit.append(
                conn,
                "coordinator",
                audit.ATTEMPT,
                request_id,
                audit.sign_data(request_digest, key_id, signers),
            )
        log.warning(
            "outcome not stored: the request already has one",
            extra={"sign_request_id": request_id},
        )
        return False

    def outcome(conn: Connection) -> bool:
        status, fenced = recorded_attempts(conn, request_id)
        if status != "signing":
            return lost(conn)
        others = sorted((mine | set(fenced)) - {final})
        for signers in others:
            audit.append(
                conn,
                "coordinator",
                audit.ATTEMPT,
                request_id,
                audit.sign_data(request_digest, key_id, signers),
            )
        if result is not None:
            # ``sign`` of the entry (api.audit): the request digest the nodes put in their
            # release logs, recomputed from the stored body, with key and signer set.
            seq = audit.append(
                conn,
                "coordinator",
                audit.SIGNED,
                request_id,
                {
                    "signature": changes["signature"],
                    "blamed": blamed,
                    **audit.sign_data(request_digest, key_id, result.signers),
                },
            )
            if receipt is not None:
                changes["receipt"] = {**receipt, "audit": {"seq": seq}}
        else:
            audit.append(
                conn, "coordinator", "sign.failed", request_id, {"error": error, "blamed": blamed}
            )
        conn.execute(_UPDATE_REQUEST, {"_rid": request_id, **changes})
        _event(conn, request_id, key_id, changes)
        _answer(conn, changes)
        return True

    def _answer(conn: Connection, changes: dict[str, Any]) -> None:
        owned = slot is not None and answer is not None and slot.own()
        if changes["status"] == "failed":
            idempotency.release_request(conn, request_id, slot)
            if owned:
                assert slot is not None and answer is not None
                slot.response = answer(changes)  # answered, not stored: the key is free
        elif owned:
            assert slot is not None and answer is not None
            idempotency.store_answer(conn, slot, *answer(changes))
        elif answer is not None:  # nobody waits here (resumed): the keys that name it
            _answer_request(conn, request_id, *answer(changes))

    def fallback(conn: Connection) -> bool:
        status, _ = recorded_attempts(conn, request_id)
        if status != "signing":
            return lost(conn)
        conn.execute(_UPDATE_REQUEST, {"_rid": request_id, **withheld})
        _event(conn, request_id, key_id, withheld)
        _answer(conn, withheld)
        return False

    return outcome, fallback


def _answer_request(conn: Connection, request_id: str, status: int, body: dict[str, Any]) -> None:
    """Store ``(status, body)`` as the answer of every Idempotency-Key still in flight whose
    provisional answer names ``request_id`` (the POST that made it stopped waiting without
    storing one: its coordinator died; :func:`provisional_answer`)."""
    conn.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.response["id"].as_string() == request_id,
            IdempotencyRecord.state == "in_flight",
        )
        .values(state="done", status_code=status, response=body)
    )


def provisional_answer(conn: Connection, slot: idempotency.Slot, request_id: str) -> None:
    """In the insert's transaction: the claimed key names its request while it is still in
    flight (``{"id": ...}``), so the coordinator that finishes the request can store the
    answer for it (:func:`_answer_request`) and a failure releases it
    (:func:`api.idempotency.release_request`). A retry meanwhile gets 409 in flight."""
    conn.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.credential_id == slot.credential_id,
            IdempotencyRecord.key == slot.key,
            IdempotencyRecord.state == "in_flight",
        )
        .values(response={"id": request_id})
    )


def failed_answer(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The answer of a failed request ``doc`` (:func:`api.serializers.sign_out`): its stored
    problem with its own status (502 when it has none) and the request as ``sign_request``."""
    err = dict(doc.get("error") or {})
    status = err.get("status")
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 502
    err.setdefault("type", "urn:tpwc:problem:signing-failed")
    err.setdefault("title", "Signing failed")
    err["status"] = status
    if isinstance(doc.get("id"), str):
        err["instance"] = f"/v1/sign-requests/{doc['id']}"
    return status, {**err, "sign_request": doc}


def final_answer(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The POST's answer for request ``doc``: 201 signed, 202 still going, else the failure."""
    if doc.get("status") == "failed":
        return failed_answer(doc)
    return (201 if doc.get("status") == "signed" else 202), doc


def _event(conn: Connection, request_id: str, key_id: str, changes: dict[str, Any]) -> None:
    """The outcome's webhook event, in the outcome's transaction (api.webhooks outbox)."""
    row = {"id": request_id, "key_id": key_id, **changes}
    webhooks.enqueue(conn, f"sign_request.{changes['status']}", webhooks.sign_request_event(row))
