"""Opaque cursors and the one pagination helper every list route uses.

A cursor is base64url(JSON ``{"s": seq}``) without padding: the ``seq`` of the last item
of the page, so a page is ``seq < cursor`` (newest first) or ``seq > cursor`` (oldest
first). Clients pass ``next_cursor`` back unchanged; anything else is a 422 problem.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.problems import Problem

R = TypeVar("R")
MAX_SEQ = 2**63 - 1  # the largest integer SQLite and PostgreSQL BIGINT hold


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq = json.loads(raw)["s"]
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise ValueError
        return seq
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise Problem(
            422, "invalid-cursor", "Invalid cursor", "pass back a next_cursor value unchanged"
        ) from None


@dataclass(frozen=True)
class PageOf(Generic[R]):
    rows: Sequence[R]
    next_cursor: str | None

    def out(self, serialize: Callable[[R], Any]) -> dict[str, Any]:
        """The API's ``{"items", "next_cursor"}`` with each row serialised."""
        return {"items": [serialize(r) for r in self.rows], "next_cursor": self.next_cursor}


def paginate(
    s: Session,
    model: type[R],
    query: Select[Any],
    seq: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
    order: Literal["newest", "oldest"] = "newest",
) -> PageOf[R]:
    """Run ``query`` (a ``select(model)``, maybe filtered) for one page of ``limit`` rows
    after ``cursor`` in ``seq`` order; the next cursor is set when more rows follow."""
    after = decode_cursor(cursor)
    if order == "newest":
        query = query.order_by(seq.desc())
        if after is not None:
            query = query.where(seq < after)
    else:
        query = query.order_by(seq).where(seq > (after or 0))
    found = s.scalars(query.limit(limit + 1)).all()
    more = len(found) > limit
    rows = cast(Sequence[R], found[:limit])
    return PageOf(rows, encode_cursor(getattr(rows[-1], seq.key)) if more else None)
