"""Rows to the public API models (:mod:`custody.models`), as JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from api.db import AuditEntry, Checkpoint, Key, Node, SignRequest
from api.nodes import NodeInfo
from custody.models import AuditOut, CheckpointOut, KeyOut, NodeOut, SignRequestOut


def key_out(k: Key) -> dict[str, Any]:
    return KeyOut.model_validate(
        {
            "id": k.id,
            "scheme": k.scheme,
            "threshold": k.threshold,
            "nodes": list(k.nodes),
            "status": k.status,
            "public_key": k.public_key,
            "verifying_shares": k.verifying_shares,
            "error": k.error,
            "created_at": k.created_at,
        }
    ).model_dump(mode="json")


def sign_out(r: SignRequest | dict[str, Any]) -> dict[str, Any]:
    """A sign request from its row, or from the column values (the signing hot path
    answers from what it wrote, without reading the row back)."""
    c = r if isinstance(r, dict) else {k: getattr(r, k) for k in _SIGN_COLUMNS}
    signed = c["status"] == "signed"
    return SignRequestOut.model_validate(
        {
            "id": c["id"],
            "key_id": c["key_id"],
            "kind": c["kind"],
            "message": c["body"].get("message", ""),
            "status": c["status"],
            "signature": c["signature"] if signed else None,
            "recovery_id": c["recovery_id"] if signed else None,
            "signers": c["signers"],
            "blamed": c["blamed"] or [],
            "error": c["error"],
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "expires_at": c["expires_at"],
        }
    ).model_dump(mode="json")


_SIGN_COLUMNS = (
    "id",
    "key_id",
    "kind",
    "body",
    "status",
    "signature",
    "recovery_id",
    "signers",
    "blamed",
    "error",
    "created_at",
    "updated_at",
    "expires_at",
)


def node_out(n: Node, live: NodeInfo | None = None) -> dict[str, Any]:
    """An enrolled node; ``live`` (the registry's view) overrides the stored health."""
    doc: dict[str, Any] = {
        "id": n.id,
        "party_id": n.party_id,
        "url": n.url,
        "status": n.status,
        "last_seen": n.last_seen,
        "last_error": n.last_error,
        "sign_pk": n.sign_pk,
        "box_pk": n.box_pk,
    }
    if live is not None:
        doc["status"] = live.status
        doc["last_error"] = live.last_error
        if live.last_seen:
            doc["last_seen"] = live.last_seen  # epoch seconds: pydantic reads it as UTC
    return NodeOut.model_validate(doc).model_dump(mode="json")


def audit_out(e: AuditEntry) -> dict[str, Any]:
    return AuditOut.model_validate(e, from_attributes=True).model_dump()


def checkpoint_out(c: Checkpoint) -> dict[str, Any]:
    return CheckpointOut.model_validate(
        {"seq": c.seq, "head": c.head, "signatures": c.signatures, "created_at": c.created_at}
    ).model_dump(mode="json")
