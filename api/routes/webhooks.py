"""``/v1/webhooks``: Standard Webhooks subscriptions, their delivery log, test events and
redelivery (admin only; :mod:`api.webhooks`, which holds the queries). The signing secret
is in the creation answer only; it is stored sealed by the coordinator's HSM token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from api import webhooks
from api.auth import AUTH_ERRORS
from api.db import Webhook, WebhookDelivery, utcnow
from api.deps import Admin, Cursor, Db, IdPath, SettingsDep
from api.problems import Problem, problem_responses
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

    await asyncio.to_thread(webhooks.store_webhook, db, w, p.credential_id)
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

    rows = await asyncio.to_thread(webhooks.list_webhooks, db)
    return {"items": [webhook_out(w) for w in rows], "next_cursor": None}


@router.get(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Show one webhook",
    operation_id="getWebhook",
)
async def get_webhook(webhook_id: IdPath, db: Db, _: Admin) -> dict[str, Any]:
    """One subscription."""
    return webhook_out(await asyncio.to_thread(webhooks.get_webhook, db, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problem_responses(*AUTH_ERRORS, 404, 422),
    summary="Change a webhook",
    operation_id="updateWebhook",
)
async def update_webhook(
    webhook_id: IdPath, body: WebhookUpdate, db: Db, settings: SettingsDep, p: Admin
) -> dict[str, Any]:
    """Change the URL (checked as at creation), event types, description, or pause it
    (``enabled: false``: its deliveries wait until it is enabled again)."""
    types = None if body.event_types is None else webhooks.check_event_types(body.event_types)
    if body.url is not None:
        await asyncio.to_thread(
            webhooks.check_url, body.url, allow_loopback=settings.webhook_allow_loopback
        )

    changes: dict[str, Any] = {
        "url": body.url,
        "event_types": types,
        "description": body.description,
        "enabled": body.enabled,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    w = await asyncio.to_thread(webhooks.update_webhook, db, webhook_id, changes, p.credential_id)
    return webhook_out(w)


@router.delete(
    "/{webhook_id}",
    status_code=204,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Delete a webhook",
    operation_id="deleteWebhook",
)
async def delete_webhook(webhook_id: IdPath, db: Db, p: Admin) -> Response:
    """Delete a subscription with its delivery log (undelivered messages are dropped)."""

    await asyncio.to_thread(webhooks.delete_webhook, db, webhook_id, p.credential_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Send a test event",
    operation_id="testWebhook",
)
async def test_webhook(webhook_id: IdPath, request: Request, db: Db, _: Admin) -> dict[str, Any]:
    """Queue a ``webhook.test`` event to this webhook only; follow it in its deliveries."""
    mid = await asyncio.to_thread(webhooks.queue_test, db, webhook_id)
    if mid is None:
        raise Problem(409, "webhook-disabled", "Webhook disabled", f"{webhook_id} is disabled")
    _wake(request)
    return _view(await asyncio.to_thread(webhooks.delivery, db, webhook_id, message_id=mid))


def _view(v: webhooks.DeliveryView) -> dict[str, Any]:
    return delivery_out(v.delivery, v.event_type)


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
    webhook_id: IdPath,
    db: Db,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The delivery log, newest first: each message's state, attempts (status code,
    error, duration) and next attempt."""
    page, types = await asyncio.to_thread(webhooks.deliveries, db, webhook_id, limit, cursor)
    return page.out(lambda d: delivery_out(d, types.get(d.message_id, "")))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=problem_responses(*AUTH_ERRORS, 404),
    summary="Redeliver a message",
    operation_id="redeliverWebhookMessage",
)
async def redeliver(
    webhook_id: IdPath,
    delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    request: Request,
    db: Db,
    p: Admin,
) -> dict[str, Any]:
    """Send a delivered or failed message again, now, with the same ``webhook-id`` (a
    receiver that already processed it de-duplicates it)."""

    done = await asyncio.to_thread(
        webhooks.redeliver_audited, db, webhook_id, delivery_id, p.credential_id
    )
    if not done:
        raise Problem(404, "not-found", "Not found", f"no delivery {delivery_id} of {webhook_id!r}")
    _wake(request)
    view = await asyncio.to_thread(webhooks.delivery, db, webhook_id, delivery_id=delivery_id)
    return _view(view)
