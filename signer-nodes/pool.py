"""The in-memory pool of single-use secrets: FROST nonces and DKLs23 presignatures.

Rollback-proof by construction (DESIGN.md invariant 3, issue 9): a nonce or presignature
secret lives only in this process's memory and is sealed nowhere, so restoring the
database, the token directory or a whole-disk snapshot cannot make one usable again. A
restart discards every outstanding item; the coordinator refills the pools. What a live
memory snapshot of the running process gives an attacker is out of scope (docs/SECURITY.md).

:meth:`Pool.take` removes an item atomically: of two racing requests for one item, exactly
one gets it. Memory is bounded: at most ``cap`` outstanding items per (kind, key), a key's
presignatures for all its derivation paths counted together; beyond that :meth:`Pool.add`
refuses (``pool-full``) until items are used.

Imports: :mod:`signer_nodes.errors`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from signer_nodes.errors import Kind, NodeError

__all__ = ["Pool", "PoolItem", "MAX_OUTSTANDING"]

MAX_OUTSTANDING = {"nonce": 20_000, "presig": 2_000}


@dataclass(frozen=True)
class PoolItem:
    item_id: str
    kind: str  # "nonce" or "presig"
    key_id: str
    public: bytes
    secret: Any = field(repr=False)
    # a presignature made with the share derived for this BIP-32 path ("" for the root key):
    # it signs for that path only (signer_nodes.pipeline); counted against its key's cap
    path: str = ""


class Pool:
    """Outstanding single-use items of one node process (see the module docstring)."""

    def __init__(self, caps: dict[str, int] | None = None) -> None:
        self.caps = dict(caps or MAX_OUTSTANDING)
        self._items: dict[str, PoolItem] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._inflight: set[str] = set()  # taken, release entry not yet committed
        self._lock = threading.Lock()

    def add(self, items: Sequence[PoolItem]) -> None:
        """Add items (all of one kind and key, or refuse them all: ``pool-full``)."""
        with self._lock:
            need: dict[tuple[str, str], int] = {}
            for it in items:
                need[(it.kind, it.key_id)] = need.get((it.kind, it.key_id), 0) + 1
            for (kind, key_id), n in need.items():
                have = self._counts.get((kind, key_id), 0)
                if have + n > self.caps[kind]:
                    raise NodeError(
                        Kind.POOL_FULL,
                        f"key {key_id!r} has {have} outstanding {kind} items; at most "
                        f"{self.caps[kind]} (use some first)",
                    )
            for it in items:
                if it.item_id in self._items:
                    raise NodeError(Kind.INTERNAL, "duplicate pool item id")
            for it in items:
                self._items[it.item_id] = it
                k = (it.kind, it.key_id)
                self._counts[k] = self._counts.get(k, 0) + 1

    def get(self, item_id: str) -> PoolItem | None:
        with self._lock:
            return self._items.get(item_id)

    def take(self, item_id: str) -> PoolItem | None:
        """Remove and return the item (None if another request took it first)."""
        with self._lock:
            it = self._items.pop(item_id, None)
            if it is not None:
                self._counts[(it.kind, it.key_id)] -= 1
                self._inflight.add(item_id)
            return it

    def in_flight(self, item_id: str) -> bool:
        """Taken by a request whose release entry is not committed yet."""
        with self._lock:
            return item_id in self._inflight

    def settle(self, item_ids: Sequence[str]) -> None:
        """The commit holding these items' release entries returned: the release log
        answers for them now. (Never called after a failed commit: such items stay in
        flight, i.e. burnt, for the life of the process.)"""
        with self._lock:
            self._inflight.difference_update(item_ids)

    def drop_key(self, key_id: str) -> int:
        """Drop every outstanding item of ``key_id`` (its share changed: a refresh or
        reshare committed); returns how many were dropped."""
        with self._lock:
            gone = [i for i, it in self._items.items() if it.key_id == key_id]
            for i in gone:
                it = self._items.pop(i)
                self._counts[(it.kind, it.key_id)] -= 1
            return len(gone)

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(n for (k, _), n in self._counts.items() if k == kind)
