"""Keys: the DKG ceremony (run, agree on the result, store it) and the active-key book.

A DKG runs among every share holder through the :class:`SessionRelay`; every party must
report the same public key and verifying shares, which :func:`api.crypto.check_public_key`
checks, else the minority is blamed. The key becomes ``active`` or ``failed`` in one
transaction with its audit entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

from sqlalchemy import select

from api import audit, crypto, webhooks
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.types import KeyInfo, SessionFailed, problem_doc
from api.db import Database, Key, utcnow
from api.problems import Problem
from custody.domain import Scheme, SessionKind

log = logging.getLogger("api.coordinator")


class KeyBook:
    """Active keys as signing and the pools need them (public data only, from memory).

    A key's row changes once active only by a committed refresh (new verifying shares),
    which drops the key from here (:meth:`forget`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_id: dict[str, KeyInfo] = {}
        self._active: list[KeyInfo] | None = None

    def get(self, key_id: str, *, any_status: bool = False) -> KeyInfo:
        """The active key ``key_id``; 404/409 problem when it does not exist or is not
        active. ``any_status``: also a key no longer active (its public values, to name a
        request it can no longer sign in the audit; never cached, never used to sign)."""
        k = self._by_id.get(key_id)
        if k is not None:
            return k
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(
                    Key.id,
                    Key.scheme,
                    Key.threshold,
                    Key.nodes,
                    Key.status,
                    Key.public_key,
                    Key.verifying_shares,
                    Key.network,
                ).where(Key.id == key_id)
            ).first()
        if row is None:
            raise Problem(404, "key-not-found", "Key not found", f"no key {key_id!r}")
        if row.status != "active" and not any_status:
            raise Problem(409, "key-not-active", "Key not active", f"key is {row.status}")
        k = KeyInfo(
            row.id,
            row.scheme,
            row.threshold,
            list(row.nodes),
            row.public_key or "",
            dict(row.verifying_shares or {}),
            row.network,
        )
        if row.status == "active":
            self._by_id[key_id] = k
        return k

    def active(self) -> list[KeyInfo]:
        """Every active key, as of the last :meth:`forget_list` (a key only ever becomes
        active, so a stale list only lacks the newest keys for one sweep)."""
        if self._active is None:
            with self.db.session() as s:
                ids = list(s.scalars(select(Key.id).where(Key.status == "active")))
            self._active = [self.get(i) for i in ids]
        return self._active

    def forget_list(self) -> None:
        self._active = None

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` (its verifying shares changed: a refresh committed)."""
        self._by_id.pop(key_id, None)
        self._active = None


class KeyCeremony:
    """Runs the DKG of a pending key and records its outcome."""

    def __init__(self, db: Database, registry: NodeRegistry, relay: SessionRelay) -> None:
        self.db = db
        self.registry = registry
        self.relay = relay

    async def run_dkg(self, key_id: str) -> bool:
        """DKG for the pending key ``key_id``; True when it became active."""
        key = await asyncio.to_thread(self._load, key_id)
        assert key is not None
        scheme, t, node_ids = key.scheme, key.threshold, list(key.nodes)
        nodes = [self.registry.nodes[n] for n in node_ids]
        kind: SessionKind = "dkg"
        body: dict[str, Any] = {
            "session_id": secrets.token_hex(32),
            "kind": kind,
            "key_id": key_id,
            "scheme": scheme,
            "threshold": t,
            "participants": sorted(n.party_id for n in nodes),
        }
        if key.network is not None:  # a bip340 key: every node records its network
            body["network"] = key.network
        error: dict[str, Any] | None = None
        pk: str | None = None
        shares: dict[str, str] | None = None
        try:
            results = await self.relay.run(nodes, body)
            pk, shares = _agree(scheme, t, results)
            if key.network is not None:
                if wrong := sorted(
                    p for p, r in results.items() if r.get("network") != key.network
                ):
                    raise SessionFailed(
                        f"nodes did not record network {key.network!r}",
                        [(p, "DKG result without the key's network") for p in wrong],
                    )
        except SessionFailed as e:
            error = problem_doc(
                "dkg-failed",
                "DKG failed",
                e.detail,
                culprits=sorted({c for c, _ in e.blame}),
                blamed=[self.registry.blame_entry(c, r) for c, r in e.blame],
            )
        except Exception as e:  # never leave a key pending forever
            log.exception("dkg crashed", extra={"key_id": key_id})
            error = problem_doc("dkg-failed", "DKG failed", type(e).__name__, status=500)
        await asyncio.to_thread(self._record, key_id, scheme, t, node_ids, pk, shares, error)
        return error is None

    def _load(self, key_id: str) -> Any:
        with self.db.session() as s:
            return s.execute(
                select(Key.scheme, Key.threshold, Key.nodes, Key.network).where(Key.id == key_id)
            ).first()

    def _record(
        self,
        key_id: str,
        scheme: Scheme,
        t: int,
        node_ids: list[str],
        pk: str | None,
        shares: dict[str, str] | None,
        error: dict[str, Any] | None,
    ) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Key).where(Key.id == key_id))
            assert row is not None
            row.updated_at = utcnow()
            if error is None:
                row.status, row.public_key, row.verifying_shares = "active", pk, shares
                audit.append(
                    s,
                    "coordinator",
                    "key.active",
                    key_id,
                    {"scheme": scheme, "public_key": pk, "threshold": t, "nodes": node_ids},
                )
            else:
                row.status, row.error = "failed", error
                audit.append(s, "coordinator", "key.failed", key_id, {"error": error})
            webhooks.enqueue(
                s,
                f"key.{row.status}",
                {"id": key_id, "status": row.status, "scheme": scheme, "public_key": pk},
            )


def _agree(scheme: Scheme, t: int, results: dict[int, Any]) -> tuple[str, dict[str, str]]:
    """All parties must report the same public key and verifying shares (else blame)."""
    seen: dict[str, list[int]] = {}
    parsed: dict[int, tuple[str, dict[str, str]]] = {}
    for p, r in results.items():
        try:
            pk = str(r["public_key"])
            vs = {str(k): str(v) for k, v in dict(r["verifying_shares"]).items()}
            crypto.check_public_key(scheme, pk, vs, t)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SessionFailed(
                f"party {p} gave a malformed DKG result", [(p, f"garbage: {e}")]
            ) from None
        parsed[p] = (pk, vs)
        seen.setdefault(json.dumps([pk, vs], sort_keys=True), []).append(p)
    if len(seen) != 1:
        groups = sorted(seen.values(), key=len)
        minority = [p for g in groups[:-1] for p in g]
        raise SessionFailed(
            "parties disagree on the DKG result",
            [(p, "inconsistent DKG result") for p in minority],
        )
    return next(iter(parsed.values()))
