"""Hash-chained audit log, anchored by node-signed checkpoints.

The chain is THE definition the signer nodes check (:mod:`custody.auditchain`); the
coordinator's stored ``hash`` of every row is the node's audit-entry hash::

    record   = {"seq": int, "at": str, "actor": str, "action": str, "subject": str,
                "data": object}                     # the full row, as stored
    canon(x) = UTF-8 of json.dumps(x, sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=False)   # integers only, no floats
    entry    = {"seq": seq, "prev": hash_{seq-1}, "kind": action,
                "data": SHA-256(canon(record)),
                "sign": {"request_digest", "key_id", "signers"} | null}
    hash     = SHA-256("tpwc-audit-entry-v1\0" || canonical CBOR(entry))
    hash_0   = 32 zero bytes (GENESIS, stored as 64 hex zeros)

``sign`` is filled for every ``sign.signed`` entry from its ``data`` (``request_digest``,
``key_id``, ``signers``; :func:`sign_data` computes them as a node does, from the request
body through ``custody.signing.message_to_sign``), and null otherwise. Hashes are stored
as lowercase hex; ``seq`` runs 1, 2, 3, ... without gaps. Rows are appended in the same
transaction as the state change they record, so a failed audit write rolls the change back
(fail closed). ``seq`` is the primary key: two writers racing for the same ``seq`` collide
on it; on PostgreSQL appends take the chain's advisory lock first
(:func:`api.db.lock_audit_chain`), so concurrent writers, several coordinators among them,
append one after another instead of colliding.

Whoever can write the database can rewrite the chain and re-hash it, or cut its tail.
Checkpoints (:mod:`api.coordinator.checkpoints`) stop that: a checkpoint is ``(seq,
head)`` signed by the nodes (:func:`checkpoint_statement`), stored with the wire entries
it covers, so :func:`verify_checkpoints` names the first entry that differs from what the
nodes signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.orm import Session

from api.db import AuditEntry, lock_audit_chain
from custody import auditchain

GENESIS = auditchain.ZERO.hex()
SIGNED = "sign.signed"  # a stored signature: its entry carries ``sign``
ATTEMPT = "sign.attempt"  # another signer set asked to sign (it may have released shares)
SIGN_ACTIONS = frozenset({SIGNED, ATTEMPT})  # the actions whose entries carry ``sign``


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_digest(
    request_id: str, key_id: str, scheme: str, body: Mapping[str, Any], message: bytes
) -> bytes:
    """The request digest the nodes put in their release logs for ``body`` (the request
    they were sent), whose message to sign is ``message``."""
    return auditchain.request_digest(request_id, key_id, str(body.get("kind")), message)


def sign_data(request_digest: bytes, key_id: str, signers: Iterable[int]) -> dict[str, Any]:
    """What a ``sign.signed`` or ``sign.attempt`` entry's ``data`` holds for ``sign``: the
    request digest, key and signer set the nodes match their releases against."""
    return {"request_digest": request_digest.hex(), "key_id": key_id, "signers": sorted(signers)}


def chain_entry(prev_hash: str, record: Mapping[str, Any]) -> auditchain.AuditEntry:
    """The node-checked entry of ``record`` (a stored row's full content) after
    ``prev_hash``: ``data`` is ``SHA-256(canon(record))``, ``sign`` from a signing entry."""
    data = record.get("data")
    sign: tuple[bytes, str, tuple[int, ...]] | tuple[None, None, None] = (None, None, None)
    if record.get("action") in SIGN_ACTIONS and isinstance(data, Mapping):
        try:
            sign = (
                bytes.fromhex(str(data["request_digest"])),
                str(data["key_id"]),
                tuple(sorted(int(p) for p in data["signers"])),
            )
        except (KeyError, TypeError, ValueError):
            sign = (None, None, None)  # malformed: hashed without sign (it will not match)
    return auditchain.AuditEntry(
        int(record["seq"]),
        bytes.fromhex(prev_hash),
        str(record["action"]),
        hashlib.sha256(canonical_json(dict(record))).digest(),
        *sign,
    )


def entry_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """The stored ``hash`` of ``record`` after ``prev_hash``: the node's entry hash (hex)."""
    return chain_entry(prev_hash, record).hash.hex()


def wire(row: Any) -> dict[str, Any]:
    """A stored row as a node reads it (``POST /v1/audit/checkpoint`` ``entries``)."""
    return auditchain.entry_wire(chain_entry(row.prev_hash, row_entry(row)))


def content(wire_entry: Mapping[str, Any]) -> bytes:
    """What an entry says, apart from its link (``prev``, ``hash``): equal for a row and a
    checkpoint's copy of it unless the row itself was changed."""
    return canonical_json({k: v for k, v in wire_entry.items() if k not in ("prev", "hash")})


def checkpoint_statement(cluster: str, node_id: str, seq: int, head: str) -> bytes:
    """The bytes a node signs (Ed25519, its identity key) to co-sign a checkpoint
    (:func:`custody.auditchain.checkpoint_statement`, ``head`` as hex here)."""
    return auditchain.checkpoint_statement(cluster, node_id, seq, bytes.fromhex(head))


def row_entry(row: Any) -> dict[str, Any]:
    """The full record of a stored row (ORM object or Core row)."""
    return {
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "subject": row.subject,
        "data": row.data,
    }


_LAST = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
_INSERT = cast(Table, AuditEntry.__table__).insert()  # Core, prebuilt: parameters per call


def append(
    s: Session | Connection, actor: str, action: str, subject: str, data: dict[str, Any]
) -> int:
    """Append one entry inside the caller's transaction (executed, not committed); returns
    its ``seq``. Works on an ORM session or a Core connection (the signing hot path: one
    prebuilt Core INSERT, and the chain head read once per transaction, see
    :func:`_head`)."""
    last = _head(s)
    seq = 1 if last is None else last[0] + 1
    prev = GENESIS if last is None else last[1]
    entry = {
        "seq": seq,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "data": data,
    }
    h = entry_hash(prev, entry)
    s.execute(
        _INSERT,
        {
            "seq": seq,
            "at": entry["at"],
            "actor": actor,
            "action": action,
            "subject": subject,
            "data": data,
            "prev_hash": prev,
            "hash": h,
        },
    )
    if isinstance(s, Connection):
        s.info["audit_head"] = (s.get_transaction(), seq, h)
    return seq


def _head(s: Session | Connection) -> tuple[int, str] | None:
    """The chain head ``(seq, hash)``. On a Core connection that appended earlier in the
    same transaction (group commit: many signatures per transaction) it is what that
    append wrote: after its INSERT the transaction holds SQLite's write lock, or on
    PostgreSQL the chain's advisory lock (:func:`api.db.lock_audit_chain`, taken before
    the head is read), so nobody appended since."""
    if isinstance(s, Connection):
        cached = s.info.get("audit_head")
        tx = s.get_transaction()
        if cached is not None and tx is not None and cached[0] is tx and tx.is_active:
            return cached[1], cached[2]
    lock_audit_chain(s)  # PostgreSQL: appends go one after another (api.db)
    row = s.execute(_LAST).first()
    return None if row is None else (row[0], row[1])


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One tampering found: its ``kind``, the first bad audit ``seq`` (if it is one) and
    the ``subject`` it concerns (a credential, a sign request, a checkpoint)."""

    kind: str
    seq: int | None
    subject: str | None
    detail: str

    def out(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "subject": self.subject, "detail": self.detail}


@dataclass
class ChainReport:
    entries: int = 0
    head: str = GENESIS
    findings: list[Finding] = field(default_factory=list)
    contents: dict[int, bytes] = field(default_factory=dict)  # seq -> content of the stored row


def walk_chain(rows: Iterable[Any]) -> ChainReport:
    """Walk the stored rows in ``seq`` order; the first break is named and classified:

    - ``deleted``: ``seq`` k is missing (a gap), or the row at k hashes as entry k+1 (the
      rows after a deleted one were renumbered);
    - ``inserted``: the row at k hashes as entry k-1 (it was shifted up by an insertion,
      the intruder is at k-1);
    - ``reordered``: the row at k hashes as entry k+1 and links to a row stored later;
    - ``edited``: the row's content no longer gives its hash, or its link is broken.

    After the first break nothing later is trusted (it is only counted)."""
    rep = ChainReport()
    stored = list(rows)
    by_hash = {r.hash: r for r in stored}
    prev = GENESIS
    broken = False
    for k, row in enumerate(stored, start=1):
        rep.entries += 1
        entry = row_entry(row)
        rep.contents[row.seq] = content(auditchain.entry_wire(chain_entry(row.prev_hash, entry)))
        if broken:
            continue
        finding = _classify(k, row, entry, prev, by_hash)
        if finding is not None:
            rep.findings.append(finding)
            broken = True
            continue
        prev = row.hash
    rep.head = prev  # the last entry that still chains
    return rep


def _classify(
    k: int, row: Any, entry: dict[str, Any], prev: str, by_hash: dict[str, Any]
) -> Finding | None:
    if row.seq != k:
        return Finding("deleted", k, None, f"entry {k} is missing (next stored is {row.seq})")
    own = entry_hash(row.prev_hash, entry) == row.hash
    if own and row.prev_hash == prev:
        return None
    if not own:
        if entry_hash(row.prev_hash, {**entry, "seq": k - 1}) == row.hash and k > 1:
            return Finding("inserted", k - 1, None, f"entry {k - 1} was inserted")
        if entry_hash(row.prev_hash, {**entry, "seq": k + 1}) == row.hash:
            later = by_hash.get(row.prev_hash)
            if later is not None and later.seq > k:
                return Finding("reordered", k, None, f"entry {k} was moved (reordered)")
            return Finding("deleted", k, None, f"entry {k} was deleted and the rest renumbered")
        return Finding("edited", k, None, f"entry {k} does not match its hash")
    return Finding("edited", k, None, f"entry {k} does not link to entry {k - 1}")


def verify_checkpoints(
    rep: ChainReport,
    checkpoints: Iterable[Any],
    cluster: str,
    node_keys: Mapping[str, str],
    verify_sig: Any,
) -> tuple[list[Finding], int, int]:
    """Check the chain against the stored checkpoints (``seq``, ``head``, ``digests``: the
    wire entries it covers, ``signatures``); returns ``(findings, checkpoints anchored,
    last anchored seq)``.

    A checkpoint anchors only with at least one valid signature of an enrolled node over
    :func:`checkpoint_statement` under its pinned ``sign_pk`` (``node_keys``), and only
    when its entries chain (:func:`custody.auditchain.chain`, each hash recomputed) from
    the previous anchored head to its head. Against an anchored checkpoint, the first row
    whose content differs names a ``rewritten`` entry (edited and re-chained), and a
    missing row a ``truncated`` chain."""
    findings: list[Finding] = []
    anchored, last_seq, last_head = 0, 0, GENESIS
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        signed = [
            n
            for n, sig in dict(cp.signatures or {}).items()
            if n in node_keys
            and verify_sig(node_keys[n], checkpoint_statement(cluster, n, cp.seq, cp.head), sig)
        ]
        if not signed:
            findings.append(
                Finding("checkpoint-unsigned", None, f"checkpoint {cp.seq}", "no valid node sig")
            )
            continue
        try:
            covered = auditchain.chain(
                [auditchain.parse_audit_entry(e) for e in list(cp.digests or [])],
                last_seq,
                bytes.fromhex(last_head),
            )
            if not covered or covered[-1].seq != cp.seq or covered[-1].hash.hex() != cp.head:
                raise auditchain.AuditFormatError("the entries do not end at its head")
        except auditchain.AuditFormatError as exc:
            findings.append(
                Finding(
                    "checkpoint-invalid",
                    None,
                    f"checkpoint {cp.seq}",
                    f"its entries do not lead from the previous checkpoint to its head: {exc}",
                )
            )
            continue
        for e in covered:
            got = rep.contents.get(e.seq)
            if got is None:
                findings.append(
                    Finding(
                        "truncated",
                        e.seq,
                        None,
                        f"entry {e.seq} is gone; checkpoint {cp.seq} signed it",
                    )
                )
                return findings, anchored, last_seq
            if got != content(auditchain.entry_wire(e)):
                findings.append(
                    Finding(
                        "rewritten",
                        e.seq,
                        None,
                        f"entry {e.seq} differs from what checkpoint {cp.seq} signed",
                    )
                )
                return findings, anchored, last_seq
        anchored, last_seq, last_head = anchored + 1, cp.seq, cp.head
    return findings, anchored, last_seq
