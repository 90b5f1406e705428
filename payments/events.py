"""The append-only event store: every fact of the payment core, in order, per stream.

Written by hand rather than with the ``eventsourcing`` package on purpose: an event, the
ledger postings it causes, the balance updates guarded by the database's ``CHECK`` and the
``Idempotency-Key`` row that created it must commit in ONE database transaction (so a
crash leaves all of them or none). ``eventsourcing`` owns its own recorder transactions and
tables, so it cannot share ours; what we need of it is small: an ordered stream per
aggregate with optimistic concurrency, which the ``UNIQUE (stream, seq)`` constraint gives
on SQLite and PostgreSQL alike.

Rules: events are only inserted (no UPDATE, no DELETE anywhere in this package); a stream's
events are numbered 1, 2, ... by :func:`append`, which takes the version the caller
decided on and fails with :class:`ConcurrencyError` when another writer got there first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from payments.db import events


class ConcurrencyError(Exception):
    """Another writer appended to ``stream`` first: reload and decide again."""

    def __init__(self, stream: str, expected: int) -> None:
        super().__init__(f"stream {stream!r} moved past version {expected} under us")
        self.stream = stream
        self.expected = expected


@dataclass(frozen=True)
class Event:
    id: int
    stream: str
    seq: int
    type: str
    data: dict[str, Any]
    at: dt.datetime


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def append(conn: Connection, stream: str, expected: int, type_: str, data: dict[str, Any]) -> Event:
    """Append one event as number ``expected + 1`` of ``stream`` (in the caller's
    transaction, inside a savepoint so a lost race leaves the transaction usable)."""
    at = now()
    try:
        with conn.begin_nested():
            row = conn.execute(
                insert(events)
                .values(stream=stream, seq=expected + 1, type=type_, data=data, at=at)
                .returning(events.c.id)
            ).one()
    except IntegrityError:
        raise ConcurrencyError(stream, expected) from None
    return Event(row.id, stream, expected + 1, type_, data, at)


def _event(r: Any) -> Event:
    at = r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)
    return Event(r.id, r.stream, r.seq, r.type, r.data, at)


def load(conn: Connection, stream: str) -> list[Event]:
    rows = conn.execute(select(events).where(events.c.stream == stream).order_by(events.c.seq))
    return [_event(r) for r in rows]


def all_events(conn: Connection, batch: int = 1000) -> Iterator[Event]:
    """Every event in commit order (by id), read in batches."""
    last = 0
    while True:
        rows = conn.execute(
            select(events).where(events.c.id > last).order_by(events.c.id).limit(batch)
        ).all()
        if not rows:
            return
        for r in rows:
            yield _event(r)
        last = rows[-1].id
