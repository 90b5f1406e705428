"""THE audit-chain definition, shared by the signer nodes and the coordinator: release-log
entries, audit-log entries, request digests, the statements a node signs, the chain walk.

Nothing here does I/O or reads a clock; every function is deterministic over its inputs.
The nodes (``signer_nodes.pipeline``, ``signer_nodes.checkpoint``) and the coordinator
(``api.audit``, ``api.coordinator.checkpoints``) import this one module: the coordinator's
stored chain hash IS :func:`audit_entry_hash`, so what a node co-signs is what the
coordinator verifies.

**Request digest** (what a release and an audit entry agree on)::

    request_digest = SHA-256("tpwc-request-digest-v1\\0" ||
                             cbor([request_id, key_id, kind, message]))

with ``message`` = ``custody.signing.message_to_sign(scheme, request)``.

**Release-log entry** (one per partial signature a node released), canonical CBOR map
``{"seq", "prev", "time", "request_id", "request_digest", "kind", "key_id", "signers",
"item_id", "scheme"}`` and, since the nodes decide (issue 10; entries before it lack them),
the authorization: ``"intent_digest"`` (``custody.approvals.intent_digest``),
``"initiator"`` (str or null for raw), ``"policy_version"``, ``"governance_digest"``,
``"rule"`` (the rule id that allowed it), ``"approvals"`` (``[[approver_id,
SHA-256(signed statement bytes)], ...]``, those that counted), and what velocity counts:
``"asset"`` (str or null) and ``"transfers"`` (``[[destination, amount], ...]``, the
policy facts of the decoded intent); ``hash = SHA-256("tpwc-release-v1\\0" || that
CBOR)``; ``prev`` is the previous entry's ``hash`` (32 zero bytes for seq 1).

**Audit-log entry** (the coordinator's, in the minimal canonical form a node checks)::

    {"seq": int >= 1, "prev": 32 bytes, "kind": str, "data": 32 bytes,
     "sign": {"request_digest": 32 bytes, "key_id": str, "signers": [party ids]} | null}

``data`` is the SHA-256 of whatever else the coordinator records (actor, payload, ...).
``hash = SHA-256("tpwc-audit-entry-v1\\0" || canonical CBOR of the map)``; seq 1 has
``prev`` = 32 zero bytes. On the wire (JSON) byte strings are hex and each entry also
carries its ``hash`` (checked).

**Statements** a node signs with its identity key (Ed25519 over the context tag and the
canonical CBOR): a checkpoint ``{cluster, node_id, seq, head}`` and a release-log head
``{node_id, seq, head}``.

Imports: nothing of ours (``cbor2`` only).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = [
    "ZERO",
    "AuditEntry",
    "AuditFormatError",
    "request_digest",
    "release_hash",
    "encode_release",
    "audit_entry_hash",
    "parse_audit_entry",
    "checkpoint_statement",
    "releases_statement",
    "CHECKPOINT_CONTEXT",
    "RELEASES_CONTEXT",
    "entry_wire",
    "chain",
]

ZERO = bytes(32)
REQUEST_CONTEXT = b"tpwc-request-digest-v1\x00"
RELEASE_CONTEXT = b"tpwc-release-v1\x00"
AUDIT_CONTEXT = b"tpwc-audit-entry-v1\x00"
CHECKPOINT_CONTEXT = b"tpwc-audit-checkpoint-v1\x00"
RELEASES_CONTEXT = b"tpwc-release-head-v1\x00"
_KIND = re.compile(r"^[a-z0-9._:-]{1,64}$")


class AuditFormatError(ValueError):
    """An audit entry (wire form) that is malformed or whose hash does not match."""


def request_digest(request_id: str, key_id: str, kind: str, message: bytes) -> bytes:
    return hashlib.sha256(
        REQUEST_CONTEXT + cbor2.dumps([request_id, key_id, kind, message], canonical=True)
    ).digest()


def encode_release(fields: Mapping[str, Any]) -> bytes:
    """Canonical CBOR of a release entry (``fields`` includes ``seq`` and ``prev``)."""
    return cbor2.dumps(dict(fields), canonical=True)


def release_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(RELEASE_CONTEXT + encoded).digest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    prev: bytes
    kind: str
    data: bytes
    request_digest: bytes | None = None
    key_id: str | None = None
    signers: tuple[int, ...] | None = None

    def encode(self) -> bytes:
        sign = (
            None
            if self.request_digest is None
            else {
                "request_digest": self.request_digest,
                "key_id": self.key_id,
                "signers": sorted(self.signers or ()),
            }
        )
        return cbor2.dumps(
            {
                "seq": self.seq,
                "prev": self.prev,
                "kind": self.kind,
                "data": self.data,
                "sign": sign,
            },
            canonical=True,
        )

    @property
    def hash(self) -> bytes:
        return audit_entry_hash(self)


def audit_entry_hash(entry: AuditEntry) -> bytes:
    return hashlib.sha256(AUDIT_CONTEXT + entry.encode()).digest()


def _hex32(raw: Any, what: str) -> bytes:
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9a-f]{64}", raw):
        raise AuditFormatError(f"{what}: 64 lower-case hex digits")
    return bytes.fromhex(raw)


def parse_audit_entry(raw: Any) -> AuditEntry:
    """The wire (JSON) form of an entry; its ``hash`` must match the recomputed one."""
    if not isinstance(raw, dict):
        raise AuditFormatError("an entry is an object")
    seq = raw.get("seq")
    if type(seq) is not int or seq < 1:
        raise AuditFormatError("seq: a positive integer")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise AuditFormatError(f"entry {seq}: kind is 1-64 characters of [a-z0-9._:-]")
    sign = raw.get("sign")
    digest = key_id = signers = None
    if sign is not None:
        if not isinstance(sign, dict):
            raise AuditFormatError(f"entry {seq}: sign is an object or null")
        digest = _hex32(sign.get("request_digest"), f"entry {seq}: sign.request_digest")
        key_id = sign.get("key_id")
        if not isinstance(key_id, str) or not 1 <= len(key_id) <= 128:
            raise AuditFormatError(f"entry {seq}: sign.key_id is a key id")
        s = sign.get("signers")
        if not isinstance(s, list) or not all(type(p) is int and 1 <= p <= 255 for p in s):
            raise AuditFormatError(f"entry {seq}: sign.signers is a list of party ids")
        signers = tuple(sorted(s))
    entry = AuditEntry(
        seq,
        _hex32(raw.get("prev"), f"entry {seq}: prev"),
        kind,
        _hex32(raw.get("data"), f"entry {seq}: data"),
        digest,
        key_id,
        signers,
    )
    if _hex32(raw.get("hash"), f"entry {seq}: hash") != entry.hash:
        raise AuditFormatError(f"entry {seq}: hash does not match its fields")
    return entry


def entry_wire(entry: AuditEntry) -> dict[str, Any]:
    """The JSON form :func:`parse_audit_entry` reads (for the coordinator and tests)."""
    return {
        "seq": entry.seq,
        "prev": entry.prev.hex(),
        "kind": entry.kind,
        "data": entry.data.hex(),
        "sign": None
        if entry.request_digest is None
        else {
            "request_digest": entry.request_digest.hex(),
            "key_id": entry.key_id,
            "signers": sorted(entry.signers or ()),
        },
        "hash": entry.hash.hex(),
    }


def checkpoint_statement(cluster: str, node_id: str, seq: int, head: bytes) -> bytes:
    return CHECKPOINT_CONTEXT + cbor2.dumps(
        {"cluster": cluster, "node_id": node_id, "seq": seq, "head": head}, canonical=True
    )


def releases_statement(node_id: str, seq: int, head: bytes) -> bytes:
    return RELEASES_CONTEXT + cbor2.dumps(
        {"node_id": node_id, "seq": seq, "head": head}, canonical=True
    )


def chain(entries: Sequence[AuditEntry], seq: int, head: bytes) -> list[AuditEntry]:
    """Check that ``entries`` extend (``seq``, ``head``) link by link; returns them."""
    for e in entries:
        if e.seq != seq + 1:
            raise AuditFormatError(f"entry {e.seq} does not follow seq {seq}")
        if e.prev != head:
            raise AuditFormatError(f"entry {e.seq} does not chain to the hash of entry {seq}")
        seq, head = e.seq, e.hash
    return list(entries)
