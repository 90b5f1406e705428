"""The durable job queue of sign requests, shared by every coordinator on one database.

A request the policy (or its approvals) lets go is a ``signing`` row of ``sign_requests``;
it is *queued* while nobody holds a lease on it (``claimed_by`` NULL, or ``lease_until``
passed). A coordinator instance takes it by a **claim**: one conditional UPDATE that sets
``claimed_by`` to the instance id and ``lease_until`` to now + ``sign_lease``, counting
``claims``. On PostgreSQL the rows are picked with ``SELECT ... FOR UPDATE SKIP LOCKED``
inside that UPDATE, so coordinators claiming at once each get other rows and never wait
on each other; SQLite has a single writer, so the same conditional UPDATE is the claim
there (its ``FOR UPDATE`` renders as nothing).

- The POST path inserts its request already claimed by the accepting instance
  (:meth:`JobQueue.lease_columns`, the insert's transaction): it signs at once, in the
  process that accepted it, through the same lease.
- An approval that moves a request to ``signing`` leaves it unclaimed; the route claims it
  (:meth:`JobQueue.claim`) and signs in the background; any worker may win instead.
- Every coordinator runs a worker (``Coordinator._worker``) that claims queued requests
  and expired leases (:meth:`JobQueue.claim_due`): a coordinator SIGKILLed mid-signing
  loses its leases after ``sign_lease`` seconds and another one resumes its requests,
  with no client resubmission.
- The holder renews its leases while it signs (:meth:`JobQueue.renew`, one UPDATE for
  every request it holds, every ``sign_lease / 3`` seconds).
- **The fence.** Before the sign items of a signer set leave for the nodes, the holder
  writes that set into ``attempted`` with an UPDATE conditional on still holding the
  lease of a ``signing`` request (:meth:`JobQueue.fence`); when it fails, nothing is sent.
  So every signer set that may have released shares is durable before the release, and
  whoever stores the outcome records them all in the audit log (``sign.attempt``), as the
  nodes' checkpoints require (``signer_nodes.checkpoint``), even when the coordinator that
  asked them died. And a coordinator that lost its lease (paused past it) asks no node for
  anything more.
- The outcome is stored conditionally (:mod:`api.coordinator.outcomes`): the first stored
  wins, a later one becomes ``sign.attempt`` entries: one request, one stored signature.

No I/O beyond the database; no clocks but ``utcnow``; the instance id is the caller's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, or_, select

from api.db import Database, SignRequest, utcnow

_T = cast(Table, SignRequest.__table__)


@dataclass(frozen=True)
class Claimed:
    """A request this instance now holds: what it needs to sign it."""

    id: str
    key_id: str
    body: dict[str, Any]
    attempted: tuple[tuple[int, ...], ...]  # signer sets asked before (an earlier holder)
    claims: int


class LeaseLost(Exception):
    """This instance no longer holds the request's lease (or it is no longer ``signing``):
    send nothing more for it and store no outcome from here."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"sign request {request_id}: lease lost")
        self.request_id = request_id


def _sets(value: Any) -> tuple[tuple[int, ...], ...]:
    """The ``attempted`` column as signer sets (anything malformed is left out)."""
    if not isinstance(value, list):
        return ()
    out = []
    for s in value:
        if isinstance(s, list) and all(isinstance(p, int) for p in s):
            out.append(tuple(sorted(s)))
    return tuple(out)


class JobQueue:
    """Claims, renewals and the fence of one coordinator instance (module docstring)."""

    def __init__(self, db: Database, instance: str, lease: float) -> None:
        self.db = db
        self.instance = instance
        self.lease = lease

    def _until(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.lease)

    def lease_columns(self) -> dict[str, Any]:
        """The columns of a request inserted already claimed by this instance."""
        return {"claimed_by": self.instance, "lease_until": self._until(), "claims": 1}

    async def claim(self, request_id: str) -> Claimed | None:
        """Claim one queued request (just moved to ``signing`` by its approvals); None when
        it is held by someone else or no longer ``signing``."""
        now = utcnow()
        until = self._until()

        def job(conn: Connection) -> Claimed | None:
            row = conn.execute(
                _T.update()
                .where(
                    _T.c.id == request_id,
                    _T.c.status == "signing",
                    or_(_T.c.lease_until.is_(None), _T.c.lease_until < now),
                )
                .values(claimed_by=self.instance, lease_until=until, claims=_T.c.claims + 1)
                .returning(_T.c.id, _T.c.key_id, _T.c.body, _T.c.attempted, _T.c.claims)
            ).first()
            return None if row is None else _claimed(row)

        return await self.db.write(job)

    async def claim_due(self, limit: int, skip: Iterable[str] = ()) -> list[Claimed]:
        """Claim up to ``limit`` queued requests or expired leases, oldest first
        (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, rows another claimer holds are skipped).
        ``skip``: requests this instance is signing right now (never claimed again here)."""
        now = utcnow()
        until = self._until()
        held = list(skip)

        def job(conn: Connection) -> list[Claimed]:
            due = (
                select(_T.c.id)
                .where(
                    _T.c.status == "signing",
                    or_(_T.c.lease_until.is_(None), _T.c.lease_until < now),
                    *([_T.c.id.not_in(held)] if held else []),
                )
                .order_by(_T.c.seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                _T.update()
                .where(_T.c.id.in_(due.scalar_subquery()))
                .values(claimed_by=self.instance, lease_until=until, claims=_T.c.claims + 1)
                .returning(_T.c.id, _T.c.key_id, _T.c.body, _T.c.attempted, _T.c.claims)
            ).all()
            return [_claimed(r) for r in rows]

        return await self.db.write(job)

    async def renew(self, ids: Sequence[str]) -> set[str]:
        """Extend the leases of ``ids`` this instance still holds; the ids renewed."""
        if not ids:
            return set()
        until = self._until()
        want = list(ids)

        def job(conn: Connection) -> set[str]:
            rows = conn.execute(
                _T.update()
                .where(
                    _T.c.id.in_(want),
                    _T.c.claimed_by == self.instance,
                    _T.c.status == "signing",
                )
                .values(lease_until=until)
                .returning(_T.c.id)
            ).all()
            return {r.id for r in rows}

        return await self.db.write(job)

    async def fence(self, request_id: str, attempted: Sequence[tuple[int, ...]]) -> None:
        """Record ``attempted`` (every signer set asked so far, the new one last) while
        this instance still holds the lease of a ``signing`` request, renewing it; else
        :class:`LeaseLost` (send nothing)."""
        until = self._until()
        value = [list(s) for s in attempted]

        def job(conn: Connection) -> int:
            done = conn.execute(
                _FENCE, {"_rid": request_id, "_me": self.instance, "attempted": value,
                         "lease_until": until}
            )  # fmt: skip
            return int(done.rowcount or 0)

        if not await self.db.write(job):
            raise LeaseLost(request_id)


_FENCE = (
    _T.update()
    .where(
        _T.c.id == bindparam("_rid"),
        _T.c.claimed_by == bindparam("_me"),
        _T.c.status == "signing",
    )
    .values(attempted=bindparam("attempted"), lease_until=bindparam("lease_until"))
)


class Fence:
    """The fence of one request held by this instance: :meth:`JobQueue.fence` with every
    signer set asked so far (those of earlier holders first). The signers await it, via
    :data:`FENCE`, right before their sign items leave."""

    def __init__(
        self, queue: JobQueue, request_id: str, before: Sequence[tuple[int, ...]] = ()
    ) -> None:
        self.queue = queue
        self.request_id = request_id
        self.sets: list[tuple[int, ...]] = list(before)

    async def __call__(self, signers: Iterable[int]) -> None:
        s = tuple(sorted(signers))
        if s not in self.sets:
            self.sets.append(s)
        await self.queue.fence(self.request_id, self.sets)


#: the fence of the sign request the current task signs (set by ``Coordinator.run_sign``;
#: unset, e.g. in the signers' unit tests, nothing is fenced)
FENCE: ContextVar[Fence | None] = ContextVar("sign_fence", default=None)


async def fence(signers: Iterable[int]) -> None:
    """What a signer calls before the sign items of ``signers`` leave (:class:`Fence`)."""
    f = FENCE.get()
    if f is not None:
        await f(signers)


def _claimed(row: Any) -> Claimed:
    return Claimed(row.id, row.key_id, dict(row.body), _sets(row.attempted), int(row.claims))


def recorded_attempts(
    conn: Connection, request_id: str
) -> tuple[str | None, list[tuple[int, ...]]]:
    """Inside the outcome's transaction: the request's status and the signer sets every
    holder fenced (:meth:`JobQueue.fence`), the row locked on PostgreSQL (``FOR UPDATE``)
    so that of two outcomes the second reads the first's status."""
    row = conn.execute(
        select(_T.c.status, _T.c.attempted).where(_T.c.id == request_id).with_for_update()
    ).first()
    if row is None:
        return None, []
    return str(row.status), list(_sets(row.attempted))
