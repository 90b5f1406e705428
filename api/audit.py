"""Hash-chained audit log, anchored by node-signed checkpoints.

The canonical hashing (ONE definition, :func:`entry_digest` and :func:`chain_hash`; the
signer nodes hash entries the same way when they co-sign a checkpoint)::

    entry    = {"seq": int, "at": str, "actor": str, "action": str, "subject": str,
                "data": object}
    canon(x) = UTF-8 of json.dumps(x, sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=False)   # integers only, no floats
    digest_i = SHA-256(canon(entry_i))                   # 32 bytes
    hash_i   = SHA-256(hash_{i-1} || digest_i)           # 32 raw bytes each
    hash_0   = 32 zero bytes (GENESIS, stored as 64 hex zeros)

Hashes are stored as lowercase hex; ``seq`` runs 1, 2, 3, ... without gaps. Rows are
appended in the same transaction as the state change they record, so a failed audit write
rolls the change back (fail closed). ``seq`` is the primary key: two writers racing for
the same ``seq`` collide on it and the loser retries, on SQLite and PostgreSQL alike.

Whoever can write the database can rewrite the chain and re-hash it, or cut its tail.
Checkpoints (:mod:`api.checkpoints`) stop that: a checkpoint is ``(seq, head)`` signed by
the nodes, plus the entry digests it covers, so :func:`verify` names the first entry that
differs from what the nodes signed. What a node signs is :func:`checkpoint_statement`.
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

from api.db import AuditEntry

GENESIS = "0" * 64
CHECKPOINT_DOMAIN = b"tpwc-audit-checkpoint-v1\n"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_digest(entry: Mapping[str, Any]) -> str:
    """``SHA-256(canon(entry))`` (hex) of ``{seq, at, actor, action, subject, data}``."""
    return hashlib.sha256(canonical_json(dict(entry))).hexdigest()


def chain_hash(prev_hash: str, digest: str) -> str:
    """``SHA-256(prev_hash || digest)`` over the raw 32-byte values (hex in, hex out)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """The stored ``hash`` of ``entry`` after ``prev_hash``: the one canonical function."""
    return chain_hash(prev_hash, entry_digest(entry))


def fold(prev_hash: str, digests: Iterable[str]) -> str:
    """The head after appending entries with ``digests`` to a chain ending in ``prev_hash``."""
    h = prev_hash
    for d in digests:
        h = chain_hash(h, d)
    return h


def checkpoint_statement(cluster: str, node_id: str, seq: int, head: str) -> bytes:
    """The bytes a node signs (Ed25519, its identity key) to co-sign a checkpoint:
    ``b"tpwc-audit-checkpoint-v1\\n" || canon({"cluster", "node_id", "seq", "head"})``."""
    return CHECKPOINT_DOMAIN + canonical_json(
        {"cluster": cluster, "node_id": node_id, "seq": seq, "head": head}
    )


def row_entry(row: Any) -> dict[str, Any]:
    """The hashed entry of a stored row (ORM object or Core row)."""
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
    append wrote: after its INSERT the transaction holds SQLite's write lock, so nobody
    appended since; on PostgreSQL a concurrent append by another coordinator takes the
    same ``seq`` and one of the two transactions fails on the primary key, as before."""
    if isinstance(s, Connection):
        cached = s.info.get("audit_head")
        tx = s.get_transaction()
        if cached is not None and tx is not None and cached[0] is tx and tx.is_active:
            return cached[1], cached[2]
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
    digests: dict[int, str] = field(default_factory=dict)  # seq -> digest of the stored row


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
        rep.digests[row.seq] = entry_digest(entry)
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
    """Check the chain against the stored checkpoints (``seq``, ``head``, ``digests``,
    ``signatures``); returns ``(findings, checkpoints anchored, last anchored seq)``.

    A checkpoint anchors only with at least one valid signature of an enrolled node over
    :func:`checkpoint_statement` under its pinned ``sign_pk`` (``node_keys``), and only
    when its digests fold from the previous anchored head to its head. Against an anchored
    checkpoint, the first row whose digest differs names a ``rewritten`` entry (edited
    and re-chained), and a missing row a ``truncated`` chain."""
    findings: list[Finding] = []
    anchored, last_seq, last_head = 0, 0, GENESIS
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        signed = [
            n
            for n, sig in dict(cp.signatures or {}).items()
            if n in node_keys
            and verify_sig(node_keys[n], checkpoint_statement(cluster, n, cp.seq, cp.head), sig)
        ]
        digests = list(cp.digests or [])
        if not signed:
            findings.append(
                Finding("checkpoint-unsigned", None, f"checkpoint {cp.seq}", "no valid node sig")
            )
            continue
        if cp.seq - last_seq != len(digests) or fold(last_head, digests) != cp.head:
            findings.append(
                Finding(
                    "checkpoint-invalid",
                    None,
                    f"checkpoint {cp.seq}",
                    "its digests do not lead from the previous checkpoint to its head",
                )
            )
            continue
        for i, d in enumerate(digests, start=last_seq + 1):
            got = rep.digests.get(i)
            if got is None:
                findings.append(
                    Finding(
                        "truncated", i, None, f"entry {i} is gone; checkpoint {cp.seq} signed it"
                    )
                )
                return findings, anchored, last_seq
            if got != d:
                findings.append(
                    Finding(
                        "rewritten",
                        i,
                        None,
                        f"entry {i} differs from what checkpoint {cp.seq} signed",
                    )
                )
                return findings, anchored, last_seq
        anchored, last_seq, last_head = anchored + 1, cp.seq, cp.head
    return findings, anchored, last_seq
