"""Request and response bodies of the public API (pydantic v2; drive the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.problems import ProblemModel

Scheme = Literal["ed25519", "bip340", "ecdsa-secp256k1"]
SCHEMES: tuple[str, ...] = ("ed25519", "bip340", "ecdsa-secp256k1")
Kind = Literal["raw", "payment", "settlement"]
KeyStatus = Literal["pending", "active", "failed"]
SignStatus = Literal["pending_approval", "signing", "signed", "rejected", "failed", "expired"]
HEX = r"^(?:[0-9a-fA-F]{2})*$"
MAX_MESSAGE_HEX = 2 * 64 * 1024


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str


class Ready(BaseModel):
    status: Literal["ready", "not-ready"]
    database: str
    nodes_healthy: int
    nodes_enrolled: int
    pools: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "unused preprocessing held in memory: FROST nonce commitments, ECDSA presignatures"
        ),
    )
    batching: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "node sign calls made since start and the sign items they carried (micro-batching)"
        ),
    )


class NodeEnrol(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=8,
        max_length=300,
        pattern=r"^https?://[^\s]+$",
        description="base URL of the signer node, e.g. http://127.0.0.1:7101",
    )


class NodeOut(BaseModel):
    id: str
    party_id: int
    url: str
    status: str = Field(description="healthy | degraded | down | unknown")
    last_seen: dt.datetime | None
    last_error: str | None
    sign_pk: str
    box_pk: str


class NodeList(BaseModel):
    items: list[NodeOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: Scheme
    threshold: int = Field(ge=2, le=255)
    nodes: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="node ids holding shares; default all enrolled",
    )


class KeyOut(BaseModel):
    id: str
    scheme: Scheme
    threshold: int
    nodes: list[str]
    status: KeyStatus
    public_key: str | None = Field(
        description="hex: 32 bytes (ed25519), 32-byte x-only (bip340), 33-byte compressed (ecdsa)"
    )
    verifying_shares: dict[str, str] | None = None
    error: ProblemModel | None = None
    created_at: dt.datetime


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


class SignRequestCreate(BaseModel):
    """A request to sign. Extra members (payment details) are kept and sent to the nodes,
    which recompute the message from them (``custody.signing.message_to_sign``)."""

    model_config = ConfigDict(extra="allow")
    key_id: str = Field(min_length=1, max_length=40)
    kind: Kind
    message: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_HEX,
        pattern=HEX,
        description="hex; required for raw (ECDSA: a 32-byte digest); for payment and "
        "settlement optional, and if given must equal the payload digest",
    )


class Blame(BaseModel):
    node_id: str | None
    party_id: int | None
    reason: str


class SignRequestOut(BaseModel):
    id: str
    key_id: str
    kind: Kind
    message: str
    status: SignStatus
    signature: str | None = Field(
        description="hex, 64 bytes: R||s (ed25519, bip340) or r||s low-s (ecdsa)"
    )
    recovery_id: int | None
    signers: list[int] | None = Field(description="party ids whose shares made the signature")
    blamed: list[Blame]
    error: ProblemModel | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None


class SignRequestList(BaseModel):
    items: list[SignRequestOut]
    next_cursor: str | None


class AuditOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditList(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


class AuditVerify(BaseModel):
    ok: bool
    entries: int
    first_bad_seq: int | None
