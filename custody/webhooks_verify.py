"""Verify a Standard Webhooks delivery (https://www.standardwebhooks.com, spec only).

    from custody.webhooks_verify import verify_webhook, WebhookInvalid
    event = verify_webhook(request_body_bytes, request_headers, "whsec_...")

The coordinator signs each delivery with the subscription's secret in the Standard Webhooks
form: headers ``webhook-id`` (the event id: de-duplicate on it), ``webhook-timestamp``
(Unix seconds; older or newer than five minutes is refused, against replays) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, several
space-separated during a secret rotation). Verification is the ``standardwebhooks``
package's own; this helper only gives it one error type and a typed result.

Verify the raw body bytes exactly as received, before any JSON parsing.

May import: standardwebhooks.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookInvalid", "verify_webhook", "WEBHOOK_HEADERS"]

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookInvalid(ValueError):
    """The delivery is not authentic (missing headers, bad signature, stale timestamp)."""


def verify_webhook(
    body: bytes | str, headers: Mapping[str, str], secret: str | bytes
) -> dict[str, Any]:
    """The delivery's JSON event when its signature verifies under ``secret`` (the
    subscription's ``whsec_...`` secret), else :class:`WebhookInvalid`."""
    wanted = {k.lower(): v for k, v in headers.items() if k.lower() in WEBHOOK_HEADERS}
    try:
        event = Webhook(secret).verify(body, wanted)
    except (WebhookVerificationError, ValueError, binascii.Error) as exc:
        raise WebhookInvalid(str(exc) or type(exc).__name__) from None
    if not isinstance(event, dict):
        raise WebhookInvalid("the event is not a JSON object")
    return event
