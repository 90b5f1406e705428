"""``/v1/webhooks``: Standard Webhooks subscriptions, their delivery log, test events and
redelivery (admin only; :mod:`api.webhooks`). The signing secret is in the creation answer
only; it is stored sealed by the coordinator's HSM token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import delete, select

from api import audit, webhooks
from api.auth import AUTH_ERRORS
from api.db import Webhook, WebhookDelivery, WebhookMessage, utcnow
from api.deps import Admin, Cursor, Db, SettingsDep
from api.pagination import paginate
from api.problems import Problem, problem_responses
from custody.domain import ID_PATTERN, MAX_ID_LEN
from custody.models import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
WebhookId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]


def webhook_out(w: Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "url": w.url,
        "event_types": list(w.event_types),
        "description": w.description,
        "enabled": bool(w.enabled),
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    }


def _get(db: Db, webhook_id: str) -> Webhook:
    with db.session() as s:
        w = s.get(Webhook, webhook_id)
    if w is None:
        raise Problem(404, "not-found", "Not found", f"no webhook {webhook_id!r}")
    return w


def _audit_data(w: Webhook) -> dict[str, Any]:  # never the secret
    return {"url": w.url, "event_types": list(w.event_types), "enabled": bool(w.enabled)}


def _wake(request: Request) -> None:
    worker = getattr(request.app.state, "webhook_worker", None)
    if worker is not None:
        worker.wake.set()


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problem_responses(*AUTH_ERRORS, 422),
    summary="Subscribe a webhook",
    operation_id="createWebhook",
)
async def create_webhook(
    body: WebhookCreate, request: Request, db: Db, settings: SettingsDep, p: Admin
) -> dict[str, Any]:
    """Subscribe ``url`` to ``event_types`` (``["*"]``: all). The URL must be http(s) and
    resolve to no link-local, metadata, loopback (unless the development setting allows
    it), multicast or reserved address. The ``secret`` is in this answer only."""
    types = webhooks.check_event_types(body.event_types)
    await asyncio.to_thread(
        webhooks.check_url, body.url, allow_loopback=settings.webhook_allow_loopback
    )
    wid = "wh_" + uuid.uuid4().hex[:20]
    secret = webhooks.new_secret()
    sealed = await asyncio.to_thread(webhooks.seal_secret, request.app.state.sealer, wid, secret)
    now = utcnow()
    w = Webhook(
        id=wid,
        url=body.url,
        event_types=types,
        description=body.description,
        secret=sealed,
        enabled=True,
        created_by=p.credential_id,
        created_at=now,
        updated_at=now,
    )

    def store() -> None:
        with db.session() as s:
            s.add(w)
            audit.append(s, p.credential_id, "webhook.create", wid, _audit_data(w))

    await asyncio.to_thread(store)
    return {**webhook_out(w), "secret": secret}


@router.get(
    "",
    response_model=WebhookList,
    responses=problem_responses(*AUTH_ERRORS),
    summary="List webhooks",
    operation_id="listWebhooks",
)
async def list_webhooks(db: Db, _: Admin) -> dict[str, Any]:
    """Every subscription, oldest first (never a secret)."""

    def rows() -> list[Webhook]:
        with db.session() as s:
            return list(s.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id)))

    return {"items": [webhook_out(w) for w in await asyncio.to_thread(rows)], "next_cursor": None}


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Show one webhook",
    operation_id="getWebhook",
)
async def get_webhook(webhook_id: WebhookId, db: Db, _: Admin) -> dict[str, Any]:
    """One subscription."""
    return webhook_out(await asyncio.to_thread(_get, db, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(*AUTH_ERRORS, 404, 422),
    summary="Change a webhook",
    operation_id="updateWebhook",
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, db: Db, settings: SettingsDep, p: Admin
) -> dict[str, Any]:
    """Change the URL (checked as at creation), event types, description, or pause it
    (``enabled: false``: its deliveries wait until it is enabled again)."""
    types = None if body.event_types is None else webhooks.check_event_types(body.event_types)
    if body.url is not None:
        await asyncio.to_thread(
            webhooks.check_url, body.url, allow_loopback=settings.webhook_allow_loopback
        )

    def change() -> Webhook:
        with db.session() as s:
            w = s.get(Webhook, webhook_id)
            if w is None:
                raise Problem(404, "not-found", "Not found", f"no webhook {webhook_id!r}")
            if body.url is not None:
                w.url = body.url
            if types is not None:
                w.event_types = types
            if body.description is not None:
                w.description = body.description
            if body.enabled is not None:
                w.enabled = body.enabled
            w.updated_at = utcnow()
            audit.append(s, p.credential_id, "webhook.update", webhook_id, _audit_data(w))
            return w

    return webhook_out(await asyncio.to_thread(change))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Delete a webhook",
    operation_id="deleteWebhook",
)
async def delete_webhook(webhook_id: WebhookId, db: Db, p: Admin) -> Response:
    """Delete a subscription with its delivery log (undelivered messages are dropped)."""

    def drop() -> None:
        with db.session() as s:
            w = s.get(Webhook, webhook_id)
            if w is None:
                raise Problem(404, "not-found", "Not found", f"no webhook {webhook_id!r}")
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
            s.delete(w)
            audit.append(s, p.credential_id, "webhook.delete", webhook_id, {})

    await asyncio.to_thread(drop)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Send a test event",
    operation_id="testWebhook",
)
async def test_webhook(webhook_id: WebhookId, request: Request, db: Db, _: Admin) -> dict[str, Any]:
    """Queue a ``webhook.test`` event to this webhook only; follow it in its deliveries."""
    await asyncio.to_thread(_get, db, webhook_id)

    def job() -> str | None:
        with db.session() as s:
            return webhooks.enqueue(s, "webhook.test", {"webhook_id": webhook_id}, only=webhook_id)

    mid = await asyncio.to_thread(job)
    if mid is None:
        raise Problem(409, "webhook-disabled", "Webhook disabled", f"{webhook_id} is disabled")
    _wake(request)
    return await asyncio.to_thread(_delivery, db, webhook_id, message_id=mid)


def _delivery(
    db: Db, webhook_id: str, *, message_id: str | None = None, delivery_id: int | None = None
) -> dict[str, Any]:
    q = (
        select(WebhookDelivery, WebhookMessage.event_type)
        .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
        .where(WebhookDelivery.webhook_id == webhook_id)
    )
    if message_id is not None:
        q = q.where(WebhookDelivery.message_id == message_id)
    if delivery_id is not None:
        q = q.where(WebhookDelivery.id == delivery_id)
    with db.session() as s:
        row = s.execute(q).first()
    if row is None:
        raise Problem(404, "not-found", "Not found", f"no such delivery of {webhook_id!r}")
    return delivery_out(row[0], row[1])


def delivery_out(d: WebhookDelivery, event_type: str) -> dict[str, Any]:
    return {
        "id": d.id,
        "message_id": d.message_id,
        "event_type": event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "log": list(d.log or []),
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


@router.get(
    "/{webhook_id}/deliveries",
    response_model=WebhookDeliveryList,
    responses=problem_responses(*AUTH_ERRORS, 404, 422),
    summary="List a webhook's deliveries",
    operation_id="listWebhookDeliveries",
)
async def list_deliveries(
    webhook_id: WebhookId,
    db: Db,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The delivery log, newest first: each message's state, attempts (status code,
    error, duration) and next attempt."""
    await asyncio.to_thread(_get, db, webhook_id)

    def page() -> dict[str, Any]:
        with db.session() as s:
            pg = paginate(
                s,
                WebhookDelivery,
                select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id),
                WebhookDelivery.id,
                limit=limit,
                cursor=cursor,
            )
            ids = [d.message_id for d in pg.rows]
            q = select(WebhookMessage.id, WebhookMessage.event_type)
            types = {m: t for m, t in s.execute(q.where(WebhookMessage.id.in_(ids)))}
            return pg.out(lambda d: delivery_out(d, types.get(d.message_id, "")))

    return await asyncio.to_thread(page)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Redeliver a message",
    operation_id="redeliverWebhookMessage",
)
async def redeliver(
    webhook_id: WebhookId,
    delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    request: Request,
    db: Db,
    p: Admin,
) -> dict[str, Any]:
    """Send a delivered or failed message again, now, with the same ``webhook-id`` (a
    receiver that already processed it de-duplicates it)."""

    def job() -> bool:
        with db.session() as s:
            ok = webhooks.redeliver(s, webhook_id, delivery_id)
            if ok:
                audit.append(
                    s, p.credential_id, "webhook.redeliver", webhook_id, {"delivery": delivery_id}
                )
            return ok

    if not await asyncio.to_thread(job):
        raise Problem(404, "not-found", "Not found", f"no delivery {delivery_id} of {webhook_id!r}")
    _wake(request)
    return await asyncio.to_thread(_delivery, db, webhook_id, delivery_id=delivery_id)
