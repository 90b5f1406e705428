"""Rows to the public API models (:mod:`custody.models`), as JSON-ready dicts."""

from __future__ import annotations

import logging
from typing import Any

from api.db import AuditEntry, Checkpoint, Key, Node, SignRequest
from api.nodes import NodeInfo
from custody.kinds import KindError
from custody.kinds.addresses import bitcoin_p2tr_address, ethereum_address
from custody.models import AuditOut, CheckpointOut, KeyOut, NodeOut, SignRequestOut
from custody.signing import SignRequestError, sign_result

log = logging.getLogger("api")


def addresses(scheme: str, public_key: str | None, network: str | None) -> dict[str, str]:
    """The addresses a key shows (``custody.kinds.addresses``): Ethereum (EIP-55) for an
    ECDSA key, BIP-86 P2TR on the key's network for a BIP-340 key, none otherwise."""
    if not public_key:
        return {}
    try:
        if scheme == "ecdsa-secp256k1":
            return {"ethereum": ethereum_address(bytes.fromhex(public_key))}
        if scheme == "bip340":
            return {
                "bitcoin": bitcoin_p2tr_address(bytes.fromhex(public_key), network or "mainnet")
            }
    except (KindError, ValueError):  # a key the DKG agreed on always has its address
        log.error("key without an address", extra={"scheme": scheme})
    return {}


def _result(c: dict[str, Any]) -> dict[str, Any] | None:
    """The signed request's result, assembled again from its stored signature (pure and
    deterministic: the signer assembled and checked the same before storing it)."""
    if c["kind"] not in ("evm-tx", "btc-psbt") or c["signature"] is None:
        return None
    scheme = "ecdsa-secp256k1" if c["kind"] == "evm-tx" else "bip340"
    try:
        return sign_result(scheme, c["body"], bytes.fromhex(c["signature"]), c["recovery_id"])
    except (SignRequestError, ValueError):
        log.error(
            "signed request without a result", extra={"request_id": c["id"], "kind": c["kind"]}
        )
        return None


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
            "network": k.network,
            "addresses": addresses(k.scheme, k.public_key, k.network),
            "error": k.error,
            "created_at": k.created_at,
            "label": k.label,
            "metadata": k.key_metadata or {},
        }
    ).model_dump(mode="json")


def sign_out(
    r: SignRequest | dict[str, Any], approval: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A sign request from its row, or from the column values (the signing hot path
    answers from what it wrote, without reading the row back); ``approval``: what an
    approver needs (:meth:`api.coordinator.approvals.ApprovalDesk.view`)."""
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
            "result": _result(c) if signed else None,
            "blamed": c["blamed"] or [],
            "error": c["error"],
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "expires_at": c["expires_at"],
            "payload": c["body"].get("payload"),
            "initiator": c["body"].get("initiator"),
            "derivation_path": c["body"].get("derivation_path"),
            "approval": approval,
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
