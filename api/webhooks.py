"""Webhooks in the Standard Webhooks form: an outbox, a delivery worker, sealed secrets.

**Outbox.** :func:`enqueue` is called inside the transaction of the state change it
reports (the sign outcome in :mod:`api.coordinator.outcomes`, approvals and rejections in
:mod:`api.coordinator.approvals`, the request's insert in :mod:`api.repository`, expiry in
:mod:`api.coordinator.service`, DKG results in :mod:`api.coordinator.keys`): it writes one
``webhook_messages`` row and one ``pending`` ``webhook_deliveries`` row per enabled
subscription to the event type. A rolled-back change leaves no event; a committed one
always has its event (no dual write).

**Delivery.** :class:`DeliveryWorker` (a coordinator background task) POSTs each due
delivery with the headers ``webhook-id`` (the message id: the same on every attempt and
redelivery, so a receiver de-duplicates on it), ``webhook-timestamp`` and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256, made by
``standardwebhooks.Webhook.sign``). A 2xx answer marks it ``delivered``; anything else
(status, timeout, refused connection) is retried after ``webhook_backoff_base * 2**(n-1)``
seconds (at most ``webhook_backoff_max``), ``failed`` after ``webhook_max_attempts``.
Every attempt is logged on the delivery (``GET /v1/webhooks/{id}/deliveries``).

**Secrets.** A subscription's secret (``whsec_`` + 24 random bytes, base64) is shown once
at creation, then stored only sealed with AES-256-GCM by the coordinator's HSM token
(:meth:`hsm.Hsm.seal`, bound to the webhook id), unsealed in memory to sign. It is never
logged.

**SSRF.** A webhook URL must be ``http(s)``, and every address its host resolves to must
be a unicast address outside link-local (``169.254.0.0/16``, where cloud metadata lives,
``fe80::/10``), unspecified, multicast and reserved ranges; loopback only with
``webhook_allow_loopback`` (development). The check runs at creation and again before
every delivery (a name that later resolves elsewhere is refused then). Private ranges
(RFC 1918) are allowed: receivers are often internal services.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import logging
import secrets
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import httpx
from prometheus_client import Counter
from sqlalchemy import Connection, Table, delete, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook as StandardWebhook

from api import audit
from api.db import Database, Webhook, WebhookDelivery, WebhookMessage, utcnow
from api.pagination import PageOf, paginate
from api.problems import Problem
from api.settings import Settings

log = logging.getLogger("api.webhooks")

EVENT_TYPES = (
    "sign_request.pending_approval",
    "sign_request.approved",
    "sign_request.signed",
    "sign_request.failed",
    "sign_request.rejected",
    "sign_request.expired",
    "key.active",
    "key.failed",
    "webhook.test",
)
ALL = "*"
LOG_KEEP = 20  # attempts kept on a delivery row
_AAD = b"tpwc-webhook-secret-v1\0"

ATTEMPTS = Counter(
    "custody_webhook_attempts",
    "Webhook delivery attempts by event type and outcome (delivered; retry: failed, will be "
    "tried again; failed: the last attempt failed)",
    ["event_type", "outcome"],
)

_WEBHOOKS = cast(Table, Webhook.__table__)
_MESSAGES = cast(Table, WebhookMessage.__table__)
_DELIVERIES = cast(Table, WebhookDelivery.__table__)


class Sealer(Protocol):
    """What seals secrets: :class:`hsm.Hsm` (``seal``/``unseal`` with AAD)."""

    def seal(self, plaintext: bytes, aad: bytes, version: int | None = None) -> bytes: ...

    def unseal(self, blob: bytes, aad: bytes) -> bytes: ...


# -- the outbox ---------------------------------------------------------------------------------
def enqueue(
    conn: Connection | Session,
    event_type: str,
    data: Mapping[str, Any],
    *,
    only: str | None = None,
) -> str | None:
    """In the caller's transaction: the event's message and a pending delivery to every
    enabled subscription of ``event_type`` (``only``: that one webhook). Returns the
    message id, or None (nothing written) when nobody subscribes."""
    q = select(_WEBHOOKS.c.id, _WEBHOOKS.c.event_types).where(_WEBHOOKS.c.enabled.is_(True))
    if only is not None:
        q = q.where(_WEBHOOKS.c.id == only)
    targets = [
        wid
        for wid, types in conn.execute(q)
        if only is not None or event_type in types or ALL in types
    ]
    if not targets:
        return None
    now = utcnow()
    mid = "msg_" + uuid.uuid4().hex
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": dict(data)}
    conn.execute(
        _MESSAGES.insert(),
        {"id": mid, "event_type": event_type, "payload": payload, "created_at": now},
    )
    conn.execute(
        _DELIVERIES.insert(),
        [
            {
                "message_id": mid,
                "webhook_id": wid,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "log": [],
                "created_at": now,
                "updated_at": now,
            }
            for wid in targets
        ],
    )
    return mid


def sign_request_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` of a ``sign_request.*`` event: what a receiver needs to act, the
    signature included (it is public), without the request body."""
    out: dict[str, Any] = {"id": row["id"], "status": row.get("status")}
    for name in ("key_id", "kind", "signature", "recovery_id", "error"):
        if row.get(name) is not None:
            out[name] = row[name]
    return out


# -- secrets ------------------------------------------------------------------------------------
def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def seal_secret(sealer: Sealer, webhook_id: str, secret: str) -> str:
    return base64.b64encode(sealer.seal(secret.encode(), _AAD + webhook_id.encode())).decode()


def unseal_secret(sealer: Sealer, webhook_id: str, sealed: str) -> str:
    return sealer.unseal(base64.b64decode(sealed), _AAD + webhook_id.encode()).decode()


# -- URLs ---------------------------------------------------------------------------------------
def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback_ok: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if loopback_ok else "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "not a unicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fd00:ec2::/32"):
        return "a cloud metadata address"
    return None


def check_url(url: str, *, allow_loopback: bool) -> str:
    """``url`` if a webhook may be sent there, else a 422 problem ``webhook-url-refused``
    saying why (resolves the host: a name is checked by every address it has)."""

    def refuse(why: str) -> Problem:
        return Problem(
            422, "webhook-url-refused", "Webhook URL refused", f"{url!r}: {why}", field="url"
        )

    try:
        u = urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError as exc:
        raise refuse(f"not a URL ({exc})") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise refuse("not an http:// or https:// URL with a host")
    if u.username or u.password:
        raise refuse("credentials in the URL")
    try:
        infos = socket.getaddrinfo(u.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refuse(f"the host does not resolve ({exc})") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        why = _refused(ip, allow_loopback)
        if why:
            raise refuse(f"{u.hostname} resolves to {ip}, {why}")
    return url


def check_event_types(types: Iterable[str]) -> list[str]:
    out = sorted(set(types))
    unknown = [t for t in out if t != ALL and t not in EVENT_TYPES]
    if unknown:
        raise Problem(
            422,
            "unknown-event-type",
            "Unknown event type",
            f"{unknown}: known are {[ALL, *EVENT_TYPES]}",
            field="event_types",
        )
    return out


# -- delivery -----------------------------------------------------------------------------------
def backoff(attempts: int, settings: Settings) -> float:
    """Seconds before attempt ``attempts + 1``: base, 2 base, 4 base, ... capped."""
    return float(
        min(settings.webhook_backoff_max, settings.webhook_backoff_base * 2 ** (attempts - 1))
    )


class _Due(NamedTuple):
    delivery_id: int
    attempts: int
    log: list[Any]
    message_id: str
    payload: dict[str, Any]
    created_at: dt.datetime
    webhook_id: str
    url: str
    secret: str


class DeliveryWorker:
    """Delivers due webhook messages, one sweep every ``webhook_poll_interval``."""

    def __init__(self, settings: Settings, db: Database, sealer: Sealer) -> None:
        self.settings = settings
        self.db = db
        self.sealer = sealer
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False)
        self.wake = asyncio.Event()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sweep()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook sweep failed")
                try:
                    await asyncio.wait_for(
                        self.wake.wait(), timeout=self.settings.webhook_poll_interval
                    )
                except TimeoutError:
                    pass
                self.wake.clear()
        finally:
            await self.http.aclose()

    def _due(self) -> list[_Due]:
        now = utcnow()
        with self.db.engine.connect() as conn:
            return [
                _Due(*row)
                for row in conn.execute(
                    select(
                        _DELIVERIES.c.id,
                        _DELIVERIES.c.attempts,
                        _DELIVERIES.c.log,
                        _MESSAGES.c.id,
                        _MESSAGES.c.payload,
                        _MESSAGES.c.created_at,
                        _WEBHOOKS.c.id,
                        _WEBHOOKS.c.url,
                        _WEBHOOKS.c.secret,
                    )
                    .join(_MESSAGES, _MESSAGES.c.id == _DELIVERIES.c.message_id)
                    .join(_WEBHOOKS, _WEBHOOKS.c.id == _DELIVERIES.c.webhook_id)
                    .where(
                        _DELIVERIES.c.status == "pending",
                        _DELIVERIES.c.next_attempt_at <= now,
                        _WEBHOOKS.c.enabled.is_(True),
                    )
                    .order_by(_DELIVERIES.c.id)
                    .limit(100)
                )
            ]

    async def sweep(self) -> int:
        """Attempt every due delivery once (concurrently); how many were attempted."""
        due = await asyncio.to_thread(self._due)
        await asyncio.gather(*(self._attempt(*d) for d in due))
        return len(due)

    async def _attempt(
        self,
        did: int,
        attempts: int,
        past: list[Any],
        mid: str,
        payload: dict[str, Any],
        created: dt.datetime,
        wid: str,
        url: str,
        sealed: str,
    ) -> None:
        if not await self.db.write(lambda conn: _claim(conn, did, attempts, self.settings)):
            return  # another coordinator (or sweep) took this attempt
        body = json.dumps(payload, separators=(",", ":"))
        start = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            await asyncio.to_thread(
                check_url, url, allow_loopback=self.settings.webhook_allow_loopback
            )
            secret = await asyncio.to_thread(unseal_secret, self.sealer, wid, sealed)
            now = utcnow()
            signature = StandardWebhook(secret).sign(mid, now, body)
            headers = {
                "content-type": "application/json",
                "user-agent": "tpwc-webhooks/1",
                "webhook-id": mid,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            }
            r = await self.http.post(url, content=body.encode(), headers=headers)
            code = r.status_code
            if not 200 <= code < 300:
                error = f"answered {code}"
        except Problem as p:
            error = p.detail or p.title
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        ms = round((time.perf_counter() - start) * 1000, 2)
        n = attempts + 1
        now = utcnow()
        entry = {"at": now.isoformat(), "status_code": code, "error": error, "ms": ms}
        event_type = str(payload.get("type"))
        if error is None:
            status, nxt = "delivered", None
        elif n >= self.settings.webhook_max_attempts:
            status, nxt = "failed", None
        else:
            status, nxt = "pending", now + dt.timedelta(seconds=backoff(n, self.settings))
        changes = {
            "status": status,
            "attempts": n,
            "next_attempt_at": nxt,
            "last_status_code": code,
            "last_error": error,
            "log": [*past, entry][-LOG_KEEP:],
            "updated_at": now,
        }
        await self.db.write(
            lambda conn: conn.execute(
                update(_DELIVERIES).where(_DELIVERIES.c.id == did).values(**changes)
            )
        )
        outcome = "retry" if status == "pending" else status
        ATTEMPTS.labels(event_type if event_type in EVENT_TYPES else "other", outcome).inc()
        log.info(
            "webhook delivery",
            extra={
                "webhook_id": wid,
                "message_id": mid,
                "attempt": n,
                "status_code": code,
                "outcome": status,
            },
        )


def _claim(conn: Connection, did: int, attempts: int, settings: Settings) -> bool:
    """Take attempt ``attempts + 1`` of a due delivery: a conditional update, so of two
    coordinators sweeping one database only one sends it; the claim pushes the next
    attempt past this one's timeout (a coordinator that dies mid-attempt is retried)."""
    now = utcnow()
    lease = now + dt.timedelta(seconds=2 * settings.webhook_timeout + 1)
    done = conn.execute(
        update(_DELIVERIES)
        .where(
            _DELIVERIES.c.id == did,
            _DELIVERIES.c.status == "pending",
            _DELIVERIES.c.attempts == attempts,
            _DELIVERIES.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease)
    )
    return bool(done.rowcount)


def redeliver(conn: Connection | Session, webhook_id: str, delivery_id: int) -> bool:
    """Queue a delivery again, at once (same message id): False if there is none."""
    done = conn.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id == delivery_id, _DELIVERIES.c.webhook_id == webhook_id)
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), updated_at=utcnow())
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


# -- the store the routes use (api.routes.webhooks holds no SQL) --------------------------------
def _audit_data(w: Webhook) -> dict[str, Any]:  # never the secret
    return {"url": w.url, "event_types": list(w.event_types), "enabled": bool(w.enabled)}


def store_webhook(db: Database, w: Webhook, actor: str) -> None:
    with db.session() as s:
        s.add(w)
        audit.append(s, actor, "webhook.create", w.id, _audit_data(w))


def list_webhooks(db: Database) -> list[Webhook]:
    with db.session() as s:
        return list(s.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id)))


def _not_found(webhook_id: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"no webhook {webhook_id!r}")


def get_webhook(db: Database, webhook_id: str) -> Webhook:
    with db.session() as s:
        w = s.get(Webhook, webhook_id)
    if w is None:
        raise _not_found(webhook_id)
    return w


def update_webhook(
    db: Database, webhook_id: str, changes: Mapping[str, Any], actor: str
) -> Webhook:
    """Apply ``changes`` (url, event_types, description, enabled), audited."""
    with db.session() as s:
        w = s.get(Webhook, webhook_id)
        if w is None:
            raise _not_found(webhook_id)
        for name, value in changes.items():
            setattr(w, name, value)
        w.updated_at = utcnow()
        audit.append(s, actor, "webhook.update", webhook_id, _audit_data(w))
        return w


def delete_webhook(db: Database, webhook_id: str, actor: str) -> None:
    with db.session() as s:
        w = s.get(Webhook, webhook_id)
        if w is None:
            raise _not_found(webhook_id)
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
        s.delete(w)
        audit.append(s, actor, "webhook.delete", webhook_id, {})


def queue_test(db: Database, webhook_id: str) -> str | None:
    """A ``webhook.test`` message to this webhook only; None when it is disabled."""
    get_webhook(db, webhook_id)
    with db.session() as s:
        return enqueue(s, "webhook.test", {"webhook_id": webhook_id}, only=webhook_id)


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery
    event_type: str


def delivery(
    db: Database,
    webhook_id: str,
    *,
    message_id: str | None = None,
    delivery_id: int | None = None,
) -> DeliveryView:
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
    return DeliveryView(row[0], row[1])


def deliveries(
    db: Database, webhook_id: str, limit: int, cursor: str | None
) -> tuple[PageOf[WebhookDelivery], dict[str, str]]:
    """One page of a webhook's deliveries, newest first, and their messages' event types."""
    get_webhook(db, webhook_id)
    with db.session() as s:
        page = paginate(
            s,
            WebhookDelivery,
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id),
            WebhookDelivery.id,
            limit=limit,
            cursor=cursor,
        )
        ids = [d.message_id for d in page.rows]
        q = select(WebhookMessage.id, WebhookMessage.event_type)
        types = {m: t for m, t in s.execute(q.where(WebhookMessage.id.in_(ids)))}
    return page, types


def redeliver_audited(db: Database, webhook_id: str, delivery_id: int, actor: str) -> bool:
    with db.session() as s:
        ok = redeliver(s, webhook_id, delivery_id)
        if ok:
            audit.append(s, actor, "webhook.redeliver", webhook_id, {"delivery": delivery_id})
        return ok
