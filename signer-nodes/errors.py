"""Domain errors of the node: what went wrong (a :class:`Kind`) and whose fault it was.

Every refusal of the node is a :class:`NodeError` with a :class:`Kind`, a human-readable
``detail`` (never a secret) and, where a peer is provably at fault, ``culprits`` (party
ids). Nothing here knows about HTTP: :mod:`signer_nodes.service` is the one place that maps
a kind to a status code and an RFC 9457 problem document.

``code`` is the stable name of the problem (the ``urn:tpwc:node:<code>`` type). It is the
kind's value, except for :attr:`Kind.NOT_AUTHORIZED`, whose code is the reason the
authorization seam (:mod:`signer_nodes.policy`) gave, e.g. ``message-mismatch``.

Imports: nothing of ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

__all__ = ["Kind", "NodeError"]


class Kind(StrEnum):
    """Every kind of refusal; the value is the problem code."""

    BAD_REQUEST = "bad-request"
    BAD_PEER = "bad-peer"
    BAD_SIGNING_PACKAGE = "bad-signing-package"
    WRONG_SCHEME = "wrong-scheme"
    UNKNOWN_KEY = "unknown-key"
    UNKNOWN_SESSION = "unknown-session"
    UNKNOWN_NONCE = "unknown-nonce"
    UNKNOWN_PRESIGNATURE = "unknown-presignature"
    UNKNOWN_PEER = "unknown-peer"
    NONCE_USED = "nonce-used"
    PRESIGNATURE_USED = "presignature-used"
    SESSION_EXISTS = "session-exists"
    KEY_EXISTS = "key-exists"
    PROTOCOL_ERROR = "protocol-error"
    OT_PAIR_RETIRED = "ot-pair-retired"
    RESTARTED = "restarted"
    NOT_AUTHORIZED = "not-authorized"
    GOVERNANCE_MISSING = "governance-missing"
    GOVERNANCE_MALFORMED = "governance-malformed"
    GOVERNANCE_UNCHAINED = "governance-unchained"
    GOVERNANCE_UNDER_SIGNED = "governance-under-signed"
    GOVERNANCE_ROLLBACK = "governance-rollback"
    GOVERNANCE_WRONG_CLUSTER = "governance-wrong-cluster"
    IDENTITY_MISMATCH = "identity-mismatch"
    NOT_IN_ROSTER = "not-in-roster"
    POOL_FULL = "pool-full"
    CHECKPOINT_UNCHAINED = "checkpoint-unchained"
    CHECKPOINT_MISSING_RELEASES = "checkpoint-missing-releases"
    INTERNAL = "internal"


class NodeError(Exception):
    """A request (or one item of a batch, or a session) the node refuses."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        culprits: Sequence[int] = (),
        code: str | None = None,
    ) -> None:
        self.kind = kind
        self.detail = detail
        self.culprits = tuple(culprits)
        self.code = code or kind.value
        super().__init__(f"{self.code}: {detail}")

    def to_record(self) -> dict[str, Any]:
        """The error as stored with a failed session (JSON; rendered by the service)."""
        rec: dict[str, Any] = {"kind": self.kind.value, "code": self.code, "detail": self.detail}
        if self.culprits:
            rec["culprits"] = list(self.culprits)
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> NodeError:
        """Inverse of :meth:`to_record` (an unknown kind reads back as ``internal``)."""
        try:
            kind = Kind(str(rec.get("kind")))
        except ValueError:
            kind = Kind.INTERNAL
        return cls(
            kind,
            str(rec.get("detail", "")),
            culprits=[int(c) for c in rec.get("culprits", ())],
            code=str(rec.get("code") or kind.value),
        )
