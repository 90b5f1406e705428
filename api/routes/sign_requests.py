"""``/v1/sign-requests``: ask for a signature, follow it to its outcome.

The coordinator sets two members of every request body itself (a client that sends either
gets a 422): ``initiator``, the principal of the requesting credential, and ``approvals``,
``[]`` until approvers sign (:mod:`api.routes.approvals`). It evaluates the active
governance's policy before any node call (:mod:`api.coordinator.approvals`): ``deny`` is a
403 problem ``policy-denied`` (audited, nothing stored, no node called), ``approve`` parks
the request in ``pending_approval`` (202, with what it needs), ``allow`` signs.

A POST waits up to ``settings.sync_wait`` for the outcome and answers 201 when it is
signed, else 202 with the request as it stands (``pending_approval`` answers 202 at once);
both carry ``Location`` (the request's URL), a 202 also ``Retry-After``. A request that
*failed* answers with its stored problem as an ``application/problem+json`` error
(:func:`failed_answer`: 502 ``signing-failed``, 403 ``refused-by-node``, 500
``audit-failed``) with the request document embedded as ``sign_request``, like a declined
Stripe charge: the error names what went wrong, the request's id and URL stay reachable.
The Idempotency-Key is claimed in the request's own insert transaction, and a signed or
pending answer is stored with the outcome while the POST still waits
(:mod:`api.idempotency`); a failed (or, later, expired) request releases its key, so a
retry with the same key makes a new attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from api import audit, idempotency, metrics, shadow
from api.auth import AUTH_ERRORS, Principal, check_scope
from api.coordinator import Coordinator, KeyInfo
from api.coordinator.hd import signing_key
from api.coordinator.outcomes import failed_answer as failed_answer  # re-exported
from api.coordinator.outcomes import final_answer, provisional_answer
from api.coordinator.psbt import request_message
from api.db import SignRequest, utcnow
from api.deps import (
    CoordinatorDep,
    Cursor,
    Db,
    IdempotencyKey,
    IdPath,
    Reader,
    Repo,
    Requester,
    SettingsDep,
)
from api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_responses
from api.serializers import sign_out
from custody.domain import SignStatus, new_id
from custody.models import Id, ReceiptOut, SignRequestCreate, SignRequestList, SignRequestOut
from custody.policy import Decision, Wallet
from custody.signing import HardenedPathError, SignRequestError

router = APIRouter(prefix="/v1/sign-requests", tags=["signing"])
Answer = tuple[int, dict[str, Any]]


@router.post(
    "",
    status_code=201,
    response_model=SignRequestOut,
    responses={
        201: {
            "description": "signed",
            "headers": {"Location": {"description": "the request's URL"}},
        },
        202: {
            "model": SignRequestOut,
            "description": "awaiting approval or signing: poll ``Location``",
            "headers": {
                "Location": {"description": "the request's URL"},
                "Retry-After": {"description": "seconds to wait before polling"},
            },
        },
        **problem_responses(*AUTH_ERRORS, 404, 409, 413, 422, 429, 500, 502),
    },
    summary="Ask for a signature",
)
async def create_sign_request(
    request: Request,
    body: SignRequestCreate,
    idempotency_key: IdempotencyKey,
    c: CoordinatorDep,
    repo: Repo,
    db: Db,
    settings: SettingsDep,
    p: Requester,
) -> JSONResponse:
    """Ask for a signature. Raw: ed25519/bip340 sign the message bytes, ECDSA a 32-byte
    digest. Payment/settlement: the nodes sign the digest of ``payload``
    (``custody.signing``). ``evm-tx`` (ECDSA keys; ``payload: {"tx": "0x02..."}``) and
    ``message`` (``payload: {"message": "0x..."}``): every node decodes the payload itself
    (``custody.kinds``); a signed ``evm-tx`` carries ``result.signed_tx``. ``btc-psbt``
    (bip340 keys; ``payload: {"psbt": "<base64>"}``): one signature per input under the
    key's BIP-86 output key (``api.coordinator.psbt``), ``result.signed_tx`` finalized.
    ``derivation_path`` (e.g. ``m/0/7``, non-hardened only): sign under the key's BIP-32
    child there (every node derives its own share; a hardened step is a 422
    ``hardened-derivation`` naming it).

    The active governance's policy decides first: 403 ``policy-denied`` naming the rule and
    reason (nothing sent to any node), 202 ``pending_approval`` with the requirement when
    approvers must sign (``POST /v1/sign-requests/{id}/approvals``), else signing.
    ``initiator`` and ``approvals`` are the coordinator's members: sending either is a 422."""
    cred = p.credential_id
    base = request.url.path
    fp = idempotency.fingerprint(request.method, base, await request.body())
    rid = new_id("sr")
    clock = int(time.time())
    try:
        k = c.keys.get(body.key_id)
        check_scope(p, k.id, _wallets(c))  # a scoped credential: its keys and wallets only
        canonical: dict[str, Any] = {
            **body.model_dump(include={"payload", "network", "derivation_path"}, exclude_none=True),
            "id": rid,
            "key_id": body.key_id,
            "kind": body.kind,
            "initiator": p.principal_id,
            "approvals": [],
        }
        if body.message is not None:
            canonical["message"] = body.message.lower()
        try:
            k = signing_key(k, canonical)  # derivation_path: the child key (issue 13)
            msg = request_message(k, canonical)  # btc-psbt: the key's network and public key
            ev = c.approvals.evaluate(k, canonical, clock)
        except HardenedPathError as e:
            raise Problem(
                422,
                "hardened-derivation",
                "Hardened derivation refused",
                str(e),
                field=e.field,
                step=e.step,
            ) from None
        except SignRequestError as e:
            raise Problem(
                422, "invalid-sign-request", "Invalid sign request", str(e), field=e.field
            ) from None
    except Problem:
        # A key already used answers as before (replay, 409, 422) even for a bad request.
        replayed = await asyncio.to_thread(
            idempotency.existing, db, cred, idempotency_key, fp, base, settings.retry_after
        )
        if replayed is not None:
            return replayed
        raise
    if "message" not in canonical:
        canonical["message"] = msg.hex()
    decision = ev.decision
    metrics.record_policy_decision(decision.action, decision.reason.value)
    policy = {
        "action": decision.action,
        "rule_id": decision.rule_id,
        "reason": decision.reason.value,
        "policy_version": decision.policy_version,
        "initiator": p.principal_id,
    }
    if decision.action == "deny":
        # policy shadow mode (api/shadow.py) sees denied requests too: a shadow that would
        # allow one is a disagreement worth reading before the shadow becomes active
        await shadow.observe(request.app, canonical, k, p.principal_id, utcnow())
        return await _deny(db, cred, idempotency_key, fp, rid, body, msg, policy, decision)
    status: SignStatus = "signing" if decision.action == "allow" else "pending_approval"
    now = utcnow()
    row: dict[str, Any] = {
        "id": rid,
        "key_id": body.key_id,
        "kind": body.kind,
        "body": canonical,
        "status": status,
        "requested_by": cred,
        "blamed": [],
        "created_at": now,
        "updated_at": now,
        "expires_at": None
        if status == "signing"
        else now + dt.timedelta(seconds=settings.approval_ttl),
        "signature": None,
        "recovery_id": None,
        "signers": None,
        "error": None,
        "attempted": None,
        # signing: claimed by this coordinator at once (the durable job queue, issue 14)
        **(c.queue.lease_columns() if status == "signing" else {"claims": 0}),
    }
    slot = idempotency.Slot(cred, idempotency_key)
    audit_data = {
        "key_id": body.key_id,
        "kind": body.kind,
        "digest": hashlib.sha256(msg).hexdigest(),
        "policy": policy,
    }
    if body.risk is not None:  # the requester's report: audited, shown; not in `canonical`
        audit_data["risk"] = body.risk.model_dump()

    # in flight at once: a coordinator resuming it answers this key (outcomes)
    then = (lambda conn: provisional_answer(conn, slot, rid)) if status == "signing" else None
    try:
        await db.write(lambda conn: repo.insert_sign_request(conn, row, slot, fp, audit_data, then))
    except IntegrityError:
        return await asyncio.to_thread(
            idempotency.replay, db, cred, idempotency_key, fp, base, settings.retry_after
        )
    await shadow.observe(request.app, canonical, k, p.principal_id, now)  # api/shadow.py
    try:
        if status == "signing":
            done = await _sign_and_wait(c, repo, settings.sync_wait, canonical, k, row, slot)
            if isinstance(done, JSONResponse):
                return _with_location(done, base, settings.retry_after)
            out = done
        else:
            out = 202, sign_out(row, c.approvals.view(ev, canonical, [], clock))
        if out[0] < 400:
            await db.write(lambda conn: idempotency.store_answer(conn, slot, *out))
        else:  # failed: the key is free again (the outcome released it too)
            await asyncio.to_thread(idempotency.release, db, cred, idempotency_key)
    except BaseException:
        if slot.response is None:
            await asyncio.to_thread(idempotency.release, db, cred, idempotency_key)
        raise
    return _with_location(_response(*out), base, settings.retry_after)


_final = final_answer  # the POST's answer of a request (api.coordinator.outcomes)


def _response(status: int, body: dict[str, Any]) -> JSONResponse:
    media = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    return JSONResponse(body, status_code=status, media_type=media)


def _with_location(resp: JSONResponse, base: str, retry_after: float) -> JSONResponse:
    if resp.status_code >= 400:
        doc = json.loads(bytes(resp.body)).get("sign_request") or {}
        if isinstance(doc.get("id"), str):
            resp.headers["Location"] = f"{base}/{doc['id']}"
        return resp
    for name, value in idempotency.location(
        base, resp.status_code, json.loads(bytes(resp.body)), retry_after
    ).items():
        resp.headers[name] = value
    return resp


async def _deny(
    db: Db,
    cred: str,
    idempotency_key: str,
    fp: str,
    rid: str,
    body: SignRequestCreate,
    msg: bytes,
    policy: dict[str, Any],
    decision: Decision,
) -> JSONResponse:
    """The policy denied: audit it (``sign.denied``), store nothing else, call no node."""
    replayed = await asyncio.to_thread(
        idempotency.existing, db, cred, idempotency_key, fp, "/v1/sign-requests"
    )
    if replayed is not None:
        return replayed
    data = {
        "key_id": body.key_id,
        "kind": body.kind,
        "digest": hashlib.sha256(msg).hexdigest(),
        "policy": {**policy, "detail": decision.detail},
    }
    await db.write(lambda conn: audit.append(conn, cred, "sign.denied", rid, data))
    detail = f"rule {decision.rule_id}: {decision.reason.value}"
    raise Problem(
        403,
        "policy-denied",
        "Denied by policy",
        detail + (f" ({decision.detail})" if decision.detail else ""),
        rule_id=decision.rule_id,
        reason=decision.reason.value,
        policy_version=decision.policy_version,
    )


async def _sign_and_wait(
    c: Coordinator,
    repo: Repo,
    sync_wait: float,
    canonical: dict[str, Any],
    key: KeyInfo,
    row: dict[str, Any],
    slot: idempotency.Slot,
) -> JSONResponse | Answer:
    """Sign in the background and wait up to ``sync_wait``: the answer the outcome stored
    (the usual case), else the answer still to store (the request as it stands)."""

    def answer(changes: dict[str, Any]) -> Answer:
        return _final(sign_out({**row, **changes}))

    task = c.spawn(c.run_sign(row["id"], canonical, key, answer=answer, slot=slot))
    await asyncio.wait({task}, timeout=sync_wait)
    if not task.done() and not slot.detach():
        await task  # the outcome's transaction is storing the answer right now
    if slot.response is not None:  # stored with the outcome (or a failure's, not stored)
        return _response(*slot.response)
    slot.detach()
    r = await asyncio.to_thread(repo.sign_request, row["id"])
    assert r is not None
    return _final(sign_out(r))


@router.get(
    "",
    response_model=SignRequestList,
    responses=problem_responses(*AUTH_ERRORS, 422),
    summary="List sign requests",
)
async def list_sign_requests(
    repo: Repo,
    p: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
    status: Annotated[SignStatus | None, Query()] = None,
    key_id: Annotated[Id | None, Query()] = None,
) -> dict[str, Any]:
    """Sign requests, newest first, optionally filtered; opaque cursor pagination. A
    requester credential sees only the requests it made."""
    mine = _own(p)
    page = await asyncio.to_thread(
        lambda: repo.sign_requests(limit, cursor, status=status, key_id=key_id, requested_by=mine)
    )
    return page.out(sign_out)


@router.get(
    "/{request_id}",
    response_model=SignRequestOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Show one sign request",
)
async def get_sign_request(
    request_id: IdPath, repo: Repo, c: CoordinatorDep, p: Reader
) -> dict[str, Any]:
    """One sign request. One that needs (or had) approvals carries ``approval``: the
    decoded intent, its digest, the policy version and governance digest an approval must
    name, the initiator, the requirement, what is still missing and the approvals so far."""
    r = await asyncio.to_thread(repo.sign_request, request_id)
    if r is None or _own(p) not in (None, r.requested_by):  # another requester's: not found
        raise Problem(404, "not-found", "Not found", f"no sign request {request_id!r}")
    return sign_out(r, await asyncio.to_thread(approval_view, c, repo, r))


@router.get(
    "/{request_id}/receipt",
    response_model=ReceiptOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Get a signed request's authorization receipt",
)
async def get_receipt(request_id: IdPath, repo: Repo, p: Reader) -> dict[str, Any]:
    """What the releasing signer nodes attested for a signed request: the decoded intent's
    digest, the policy version and rule that allowed it, the approvals that counted, the
    signer set, and each node's signature over that and its own release-log entry
    (``custody.receipts``). Verify it offline with ``custody receipt verify``. 404 for a
    request that is not signed (or was signed before receipts existed)."""
    r = await asyncio.to_thread(repo.sign_request, request_id)
    if r is None or _own(p) not in (None, r.requested_by):  # another requester's: not found
        raise Problem(404, "not-found", "Not found", f"no sign request {request_id!r}")
    if r.receipt is None:
        raise Problem(
            404, "no-receipt", "No receipt", f"sign request {request_id!r} has no receipt"
        )
    return dict(r.receipt)


def _own(p: Principal) -> str | None:
    """The credential whose requests ``p`` may read: a requester its own; others all."""
    return p.credential_id if p.role == "requester" else None


def _wallets(c: Coordinator) -> tuple[Wallet, ...]:
    g = c.governance.current
    return () if g is None else tuple(g.policy.wallets)


def approval_view(c: Coordinator, repo: Repo, r: SignRequest) -> dict[str, Any] | None:
    """The ``approval`` member of ``r``: for a request that waits or waited for approvers."""
    rows = repo.approvals(r.id)
    if r.status != "pending_approval" and not rows:
        return None
    try:
        key = c.keys.get(r.key_id)
        ev = c.approvals.evaluate(key, r.body, int(time.time()))
    except (Problem, SignRequestError):
        return None
    return c.approvals.view(ev, r.body, rows, int(time.time()))
