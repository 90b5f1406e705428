"""The authorization seam: the one place a node decides whether it may release a partial
signature (DESIGN.md invariant 2).

:func:`authorize` is called by every signing path (FROST and ECDSA) after the request has
been parsed and before any nonce or presignature is touched. It raises
:class:`NotAuthorized` to refuse; returning means "allowed".

The rule today is exactly:

1. the HTTP request was signed by the enrolled coordinator (``custody.nodeauth``,
   checked by the service before the handler runs, recorded in ``coordinator_verified``);
2. the node recomputed the message from the request payload itself
   (``custody.signing.message_to_sign``) and it is byte-for-byte what the signing package
   (FROST) or the caller (ECDSA) asks it to sign;
3. a ``kind: raw`` request only for a key the current governance lists in
   ``raw_signing_keys`` (``raw_enabled``): the coordinator key alone never gets a signature
   over arbitrary bytes.

The policy/approvals check of a later issue (verify approver signatures against the policy
the node holds) plugs in here, as a further step; nothing else in the node needs to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AuthorizationContext", "NotAuthorized", "authorize"]


class NotAuthorized(Exception):
    """The node refuses to sign; ``reason`` is a stable code for the problem document."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class AuthorizationContext:
    """Everything the decision may look at (public values only)."""

    node_id: str
    key_id: str
    scheme: str
    request: Mapping[str, Any]
    recomputed_message: bytes
    requested_message: bytes
    coordinator_verified: bool
    raw_enabled: bool = False  # governance lists this key in raw_signing_keys


def authorize(ctx: AuthorizationContext) -> None:
    """Raise :class:`NotAuthorized` unless the rule in the module docstring holds."""
    if not ctx.coordinator_verified:
        raise NotAuthorized("not-coordinator", "request is not signed by the enrolled coordinator")
    if ctx.request.get("key_id") != ctx.key_id:
        raise NotAuthorized("key-mismatch", "request names another key than the one asked to sign")
    if ctx.request.get("kind") == "raw" and not ctx.raw_enabled:
        raise NotAuthorized(
            "raw-not-enabled",
            f"governance does not enable raw signing for key {ctx.key_id!r} (raw_signing_keys)",
        )
    if ctx.recomputed_message != ctx.requested_message:
        raise NotAuthorized(
            "message-mismatch", "message to sign differs from the one recomputed from the request"
        )
