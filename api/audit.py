"""Hash-chained audit log.

Each row commits to its predecessor: ``hash = sha256(prev_hash || canonical_json(entry))``
where ``entry`` is ``{seq, at, actor, action, subject, data}`` serialised with sorted keys
and no whitespace, and the first row's ``prev_hash`` is 64 zeros. Rows are appended in the
same transaction as the state change they record, so a failed audit write rolls the change
back (fail closed). ``seq`` is the primary key: two writers racing for the same ``seq``
collide on it and the loser retries, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.orm import Session

from api.db import AuditEntry

GENESIS = "0" * 64


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(entry)).hexdigest()


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


def verify_chain(s: Session) -> tuple[bool, int, int | None]:
    """Walk the chain; returns ``(ok, entries, first_bad_seq)``."""
    prev = GENESIS
    n = 0
    for row in s.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        n += 1
        entry = {
            "seq": row.seq,
            "at": row.at,
            "actor": row.actor,
            "action": row.action,
            "subject": row.subject,
            "data": row.data,
        }
        if row.prev_hash != prev or entry_hash(prev, entry) != row.hash or row.seq != n:
            return False, n, row.seq
        prev = row.hash
    return True, n, None
