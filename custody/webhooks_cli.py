"""``custody webhooks list|create|show|deliveries|test|redeliver|delete``: Standard Webhooks
subscriptions (``/v1/webhooks``, the admin credential).

    custody webhooks create https://hooks.example.com/custody \\
        --event sign_request.signed --event sign_request.failed
    custody webhooks list [--json]
    custody webhooks deliveries WEBHOOK_ID [--json]
    custody webhooks test WEBHOOK_ID
    custody webhooks redeliver WEBHOOK_ID DELIVERY_ID

``create`` prints the signing secret (``whsec_...``) once; a receiver verifies each
delivery with ``standardwebhooks.Webhook(secret).verify(body, headers)`` and
de-duplicates on the ``webhook-id`` header (a redelivery carries the same id).
"""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from custody.cli_support import (
    ApiOpt,
    ClusterOpt,
    JsonOpt,
    TokenOpt,
    connect,
    print_fields,
    print_json,
    print_model,
    print_rows,
    require_id,
)
from custody.exitcodes import ExitCode
from custody.models import WebhookDeliveryOut, WebhookOut

webhooks_app = typer.Typer(
    no_args_is_help=True, help="Webhooks: subscriptions, deliveries, tests, redelivery (admin)."
)
WebhookArg = Annotated[str, typer.Argument(help="the webhook's id (wh_...)")]


def _fields(w: WebhookOut) -> list[tuple[str, object]]:
    return [
        ("id", w.id),
        ("url", w.url),
        ("events", ", ".join(w.event_types)),
        ("enabled", "yes" if w.enabled else "no"),
        ("description", w.description),
        ("created", w.created_at.isoformat()),
    ]


def _delivery(d: WebhookDeliveryOut) -> list[tuple[str, object]]:
    return [
        ("delivery", d.id),
        ("message id", d.message_id),
        ("event", d.event_type),
        ("status", d.status),
        ("attempts", d.attempts),
        ("next attempt", d.next_attempt_at.isoformat() if d.next_attempt_at else ""),
        ("last status", d.last_status_code if d.last_status_code is not None else ""),
        ("last error", d.last_error or ""),
    ]


@webhooks_app.command("create")
def create(
    url: Annotated[str, typer.Argument(help="where to POST events (http:// or https://)")],
    events: Annotated[
        list[str],
        typer.Option("--event", help="an event type to subscribe to (repeat; * for all)"),
    ],
    description: Annotated[str, typer.Option("--description", help="a note")] = "",
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a URL to event types; prints the signing secret (shown once)."""
    with connect("admin", cluster, api_url, token) as c:
        w = c.create_webhook(url, events, description=description)
    if as_json:
        print_json(w.model_dump(mode="json"))
        return
    print_fields([*_fields(w), ("secret", w.secret)])
    typer.echo("the secret is shown this once: store it now", err=True)


@webhooks_app.command("list")
def list_(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List webhook subscriptions."""
    with connect("admin", cluster, api_url, token) as c:
        items = c.list_webhooks()
    if as_json:
        print_json([w.model_dump(mode="json") for w in items])
        return
    print_rows(
        ("id", "enabled", "events", "url"),
        [(w.id, "yes" if w.enabled else "no", ",".join(w.event_types), w.url) for w in items],
        long=("events", "url"),
    )


@webhooks_app.command("show")
def show(
    webhook_id: WebhookArg,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one webhook subscription."""
    require_id(webhook_id, "webhook id")
    with connect("admin", cluster, api_url, token) as c:
        w = c.get_webhook(webhook_id)
    print_model(w, _fields(w), as_json)


@webhooks_app.command("deliveries")
def deliveries(
    webhook_id: WebhookArg,
    limit: Annotated[int, typer.Option("--limit", help="at most this many, newest first")] = 50,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log of a webhook: each message's state and attempts."""
    require_id(webhook_id, "webhook id")
    with connect("admin", cluster, api_url, token) as c:
        items = list(itertools.islice(c.webhook_deliveries(webhook_id), max(limit, 0)))
    if as_json:
        print_json([d.model_dump(mode="json") for d in items])
        return
    print_rows(
        ("delivery", "status", "attempts", "last", "event", "message id"),
        [
            (d.id, d.status, d.attempts, d.last_status_code or "", d.event_type, d.message_id)
            for d in items
        ],
        long=("message id",),
    )


@webhooks_app.command("test")
def test(
    webhook_id: WebhookArg,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a webhook.test event to a webhook; prints its delivery."""
    require_id(webhook_id, "webhook id")
    with connect("admin", cluster, api_url, token) as c:
        d = c.test_webhook(webhook_id)
    print_model(d, _delivery(d), as_json)


@webhooks_app.command("redeliver")
def redeliver(
    webhook_id: WebhookArg,
    delivery_id: Annotated[int, typer.Argument(help="the delivery's number (see deliveries)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message again now, with the same webhook-id (receivers de-duplicate)."""
    require_id(webhook_id, "webhook id")
    with connect("admin", cluster, api_url, token) as c:
        d = c.redeliver_webhook(webhook_id, delivery_id)
    print_model(d, _delivery(d), as_json)


@webhooks_app.command("delete")
def delete(
    webhook_id: WebhookArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a webhook subscription and its delivery log."""
    require_id(webhook_id, "webhook id")
    if not yes and not typer.confirm(f"delete {webhook_id} and its delivery log?"):
        raise typer.Exit(ExitCode.ABORTED)
    with connect("admin", cluster, api_url, token) as c:
        c.delete_webhook(webhook_id)
    if as_json:
        print_json({"deleted": webhook_id})
    else:
        typer.echo(f"deleted {webhook_id}")
