"""The node's own release history for velocity windows (issue 10, item 4).

A policy's velocity limits (``custody.policy.Velocity``) are counted by every node from its
OWN release log, so no coordinator can reset a window. Each release-log entry records what
velocity needs (``asset`` and ``transfers``: ``[[destination, amount], ...]``, the facts of
the decoded intent, and ``intent_digest``). :class:`ReleaseWindow` keeps, in memory, the
requests released within the longest velocity window of the active policy (its horizon),
rebuilt from the log when the node opens or when a policy with a longer window arrives
(``NodeStore.releases_since``, an index on commit time: never a scan of the whole log).

A request counts ONCE (:func:`signer_nodes.policy.request_key`: request id, key and intent
digest): a retry on another signer subset, or the several items of one request, add
nothing; the request being decided is left out of its own history (the policy adds its
amount itself).

Concurrent requests: :meth:`ReleaseWindow.guard` serializes decision and reservation while
the policy has a velocity window, and :meth:`reserve` counts an allowed request at once,
before its release-log entry commits, so two concurrent requests cannot both spend the
same room. A reservation is confirmed when its entry commits and cancelled when the item is
not released (refused later, already used, failed commit).

The honest bound: a node sees only releases it took part in. A coordinator spreading
requests over signer subsets of a ``t``-of-``n`` key can release up to ``n/t`` times a
limit over the cluster (docs/SECURITY.md).

Entries written before this module existed carry no ``transfers``: they do not count.

Imports: :mod:`signer_nodes.store`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from custody import policy as pol
from signer_nodes.store import NodeStore

__all__ = ["ReleaseWindow", "Counted", "horizon", "RequestKey"]

RequestKey = tuple[str, str, bytes]
#: Commit time may trail the decision's time by the length of a commit: load a little more.
SLACK = 120
PRUNE_EVERY = 10  # seconds between drops of what left the window (memory only)


def horizon(policy: pol.Policy) -> int:
    """The longest velocity window of ``policy`` (0: it has none)."""
    return max((v.window for r in policy.rules for v in r.velocity), default=0)


@dataclass(frozen=True)
class Counted:
    """One released request as velocity sees it."""

    time: int
    key_id: str
    asset: str
    transfers: tuple[tuple[str, int], ...]


class ReleaseWindow:
    """Released requests within the horizon, by asset (see the module docstring)."""

    def __init__(self, store: NodeStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()
        self._horizon = 0
        self._assets: dict[str, dict[RequestKey, Counted]] = {}
        self._pending: dict[RequestKey, int] = {}  # reservations not yet committed
        self._committed: set[RequestKey] = set()
        self._pruned_at = 0

    # -- the window ------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, policy: pol.Policy) -> Iterator[None]:
        """Held around decide-and-reserve while ``policy`` counts velocity."""
        if horizon(policy) == 0:
            yield
            return
        with self._lock:
            yield

    def history(
        self, policy: pol.Policy, now: int
    ) -> Callable[[str, RequestKey], list[pol.Release]]:
        """The ``History`` the authorization seam calls for ``policy`` at ``now``."""
        h = horizon(policy)
        self._widen(h, now)

        def of(asset: str, exclude: RequestKey) -> list[pol.Release]:
            since = now - h
            with self._lock:
                entries = list(self._assets.get(asset, {}).items())
            return [
                pol.Release(c.time, c.key_id, c.asset, dest, amount)
                for k, c in entries
                if k != exclude and c.time > since
                for dest, amount in c.transfers
            ]

        return of

    def _widen(self, h: int, now: int) -> None:
        """Make the window cover ``h`` seconds back from ``now`` (loads from the log once
        per widening: at open, or when a policy with a longer window arrives)."""
        with self._lock:
            if h <= self._horizon:
                if now - self._pruned_at >= PRUNE_EVERY:
                    self._prune(now)
                return
            for raw in self.store.releases_since(now - h - SLACK):
                self._add_entry(cbor2.loads(raw))
            self._horizon = h
            self._prune(now)

    def _prune(self, now: int) -> None:
        self._pruned_at = now
        since = now - self._horizon - SLACK
        for asset, entries in list(self._assets.items()):
            old = [k for k, c in entries.items() if c.time <= since and k not in self._pending]
            for k in old:
                del entries[k]
                self._committed.discard(k)
            if not entries:
                del self._assets[asset]

    def _add_entry(self, fields: Mapping[str, Any]) -> None:
        asset, transfers, digest = (
            fields.get("asset"),
            fields.get("transfers"),
            fields.get("intent_digest"),
        )
        if not isinstance(asset, str) or not isinstance(transfers, list) or digest is None:
            return  # an entry from before velocity was recorded, or one that moves nothing
        key = (str(fields["request_id"]), str(fields["key_id"]), bytes(digest))
        counted = Counted(
            int(fields["time"]),
            str(fields["key_id"]),
            asset,
            tuple((str(d), int(a)) for d, a in transfers),
        )
        self._assets.setdefault(asset, {}).setdefault(key, counted)
        self._committed.add(key)

    # -- reservations ----------------------------------------------------------------------
    def reserve(self, key: RequestKey, counted: Counted | None) -> RequestKey | None:
        """Count an allowed request now (``None``: it moves nothing); the token to confirm
        or cancel."""
        if counted is None:
            return None
        with self._lock:
            entries = self._assets.setdefault(counted.asset, {})
            entries.setdefault(key, counted)
            self._pending[key] = self._pending.get(key, 0) + 1
        return key

    def confirm(self, token: RequestKey | None) -> None:
        """The reserved request's release-log entry committed: it counts for good."""
        if token is None:
            return
        with self._lock:
            self._committed.add(token)
            self._release(token)

    def cancel(self, token: RequestKey | None) -> None:
        """The reserved item was not released: it counts no more (unless released too)."""
        if token is None:
            return
        with self._lock:
            self._release(token)
            if token not in self._pending and token not in self._committed:
                for entries in self._assets.values():
                    entries.pop(token, None)

    def _release(self, token: RequestKey) -> None:
        n = self._pending.get(token, 0) - 1
        if n > 0:
            self._pending[token] = n
        else:
            self._pending.pop(token, None)

    def size(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._assets.values())
