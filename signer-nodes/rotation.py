"""Seal-key rotation: rewrap every sealed blob under a new HSM key version, then destroy
the old one.

Steps (each a fault point ``rotate:<n>``, see :mod:`signer_nodes.faults`)::

    1  record      rotation row (from_version) committed           -> crash point rotate:1
    2  new key     hsm.create_seal_key(); row.to_version committed  -> rotate:2
    3  database    ONE transaction rewraps identity keys, shares and unused ledger items
                   (hsm.reseal) and sets step='db-rewrapped'        -> rotate:3a (inside the
                   transaction, half the rows rewritten, not committed), rotate:3
    4  key file    the sealed DB key is rewritten (tmp + fsync + rename + fsync dir)
                                                                    -> rotate:4a (tmp written,
                   not renamed), rotate:4
    5  destroy     every older seal key version is destroyed        -> rotate:5
    6  done        rotation row deleted

Invariant: until step 5, both the old and the new key exist, and every blob is under one
of them; step 5 runs only after steps 3 and 4 put every blob under the new one. Recovery
(:func:`recover`, run by every ``Node.open``) therefore always *finishes forward*: with a
rotation row present or more than one seal key on the token, it rewraps whatever is not
under the newest version, rewrites the key file if needed, destroys older versions and
deletes the row. Each of those is idempotent, so a crash during recovery is recovered too.

Concurrency: the whole rotation holds ``store.sealing`` as writer (and the store lock), and
every other path that seals and writes (new nonces, new shares) or unseals-then-uses
(signing) holds ``store.sealing`` as reader, so no blob is sealed under, or read with, a key
version the rotation is about to destroy; signing requests still run in parallel with each
other.
"""

from __future__ import annotations

import json
import time
from typing import Any

from signer_nodes import logs, vault
from signer_nodes.faults import NO_FAULTS, FaultHooks
from signer_nodes.store import NodeStore

__all__ = ["rotate", "recover", "pending"]


def pending(store: NodeStore) -> dict[str, Any] | None:
    with store.read() as c:
        r = c.execute("SELECT from_version, to_version, step FROM rotation WHERE id = 1").fetchone()
    return None if r is None else {"from_version": r[0], "to_version": r[1], "step": r[2]}


def _rewrap_db(
    v: vault.Vault, store: NodeStore, node_id: str, target: int, faults: FaultHooks
) -> int:
    """Step 3: one transaction; returns how many blobs were rewrapped."""
    n = 0
    with store.tx() as c:
        rows: list[tuple[str, Any, bytes, bytes]] = []
        for kind, blob in c.execute("SELECT kind, sealed FROM identity").fetchall():
            rows.append(("identity", kind, bytes(blob), vault.identity_aad(node_id, kind)))
        for key_id, sv, blob in c.execute(
            "SELECT key_id, share_version, sealed_share FROM keys"
        ).fetchall():
            rows.append(("keys", key_id, bytes(blob), vault.share_aad(key_id, node_id, int(sv))))
        for item_id, kind, key_id, blob in c.execute(
            "SELECT item_id, kind, key_id, sealed FROM ledger WHERE used = 0"
        ).fetchall():
            rows.append(
                ("ledger", item_id, bytes(blob), vault.ledger_aad(key_id, node_id, kind, item_id))
            )
        for i, (table, ident, blob, aad) in enumerate(rows):
            if v.blob_version(blob) == target:
                continue
            new = v.hsm.reseal(blob, aad, target)
            if table == "identity":
                c.execute(
                    "UPDATE identity SET sealed = ?, seal_version = ? WHERE kind = ?",
                    (new, target, ident),
                )
            elif table == "keys":
                c.execute(
                    "UPDATE keys SET sealed_share = ?, seal_version = ? WHERE key_id = ?",
                    (new, target, ident),
                )
            else:
                c.execute(
                    "UPDATE ledger SET sealed = ?, seal_version = ? WHERE item_id = ?",
                    (new, target, ident),
                )
            n += 1
            if i == len(rows) // 2:
                faults.reached("rotate:3a")
        n += _rewrap_pending_shares(c, v, node_id, target)
        c.execute("UPDATE rotation SET step = 'db-rewrapped' WHERE id = 1")
    return n


def _rewrap_pending_shares(c: Any, v: vault.Vault, node_id: str, target: int) -> int:
    """The pending shares of unfinished key ceremonies (meta ``pending-share:KEY``,
    :mod:`signer_nodes.ceremonies`), in the same transaction as the rest of step 3."""
    n = 0
    rows = c.execute("SELECT k, v FROM meta WHERE k LIKE 'pending-share:%'").fetchall()
    for k, raw in rows:
        rec = json.loads(raw)
        blob = bytes.fromhex(rec["sealed_share"])
        if v.blob_version(blob) == target:
            continue
        aad = vault.share_aad(k.removeprefix("pending-share:"), node_id, rec["share_version"])
        rec["sealed_share"] = v.hsm.reseal(blob, aad, target).hex()
        rec["seal_version"] = target
        c.execute("UPDATE meta SET v = ? WHERE k = ?", (json.dumps(rec), k))
        n += 1
    return n


def _rewrap_key_file(v: vault.Vault, target: int, faults: FaultHooks) -> bool:
    """Step 4: atomically replace the sealed DB key file if it is not under ``target``."""
    blob = v.paths.db_key.read_bytes()
    if v.blob_version(blob) == target:
        return False
    new = v.hsm.reseal(blob, vault.db_key_aad(v.node_id), target)
    tmp = v.paths.db_key.with_name(v.paths.db_key.name + ".tmp")
    tmp.write_bytes(new)
    faults.reached("rotate:4a")
    vault.atomic_write(v.paths.db_key, new)
    return True


def _finish(
    v: vault.Vault, store: NodeStore, node_id: str, target: int, faults: FaultHooks
) -> dict[str, int]:
    blobs = _rewrap_db(v, store, node_id, target, faults)
    faults.reached("rotate:3")
    key_file = _rewrap_key_file(v, target, faults)
    faults.reached("rotate:4")
    destroyed = 0
    for old in v.versions():
        if old < target:
            v.hsm.destroy_seal_key(old)
            destroyed += 1
    faults.reached("rotate:5")
    with store.tx() as c:
        c.execute("DELETE FROM rotation WHERE id = 1")
    tmp = v.paths.db_key.with_name(v.paths.db_key.name + ".tmp")
    tmp.unlink(missing_ok=True)
    return {"blobs": blobs, "key_file": int(key_file), "destroyed": destroyed, "version": target}


def rotate(
    v: vault.Vault, store: NodeStore, node_id: str, faults: FaultHooks = NO_FAULTS
) -> dict[str, int]:
    """Rotate to a new seal key version (see the module docstring)."""
    with store.sealing.write(), store.lock:
        recover(v, store, node_id, faults)
        old = v.current_version()
        with store.tx() as c:
            c.execute(
                "INSERT INTO rotation (id, from_version, to_version, step, started_at)"
                " VALUES (1, ?, 0, 'begin', ?)",
                (old, time.time()),
            )
        faults.reached("rotate:1")
        new = v.hsm.create_seal_key()
        with store.tx() as c:
            c.execute(
                "UPDATE rotation SET to_version = ?, step = 'key-created' WHERE id = 1", (new,)
            )
        faults.reached("rotate:2")
        out = _finish(v, store, node_id, new, faults)
        logs.event("seal_key.rotated", node_id=node_id, from_version=old, **out)
        return out


def recover(
    v: vault.Vault, store: NodeStore, node_id: str, faults: FaultHooks = NO_FAULTS
) -> dict[str, int] | None:
    """Finish an interrupted rotation, if any (idempotent; called at every open)."""
    with store.sealing.write(), store.lock:
        versions = v.versions()
        rec = pending(store)
        if not versions or (rec is None and len(versions) <= 1):
            return None
        target = max(versions)
        if rec is None:
            with store.tx() as c:
                c.execute(
                    "INSERT INTO rotation (id, from_version, to_version, step, started_at)"
                    " VALUES (1, ?, ?, 'recovering', ?)",
                    (min(versions), target, time.time()),
                )
        out = _finish(v, store, node_id, target, faults)
        logs.warn(
            "seal_key.rotation_recovered", node_id=node_id, step=(rec or {}).get("step"), **out
        )
        return out
