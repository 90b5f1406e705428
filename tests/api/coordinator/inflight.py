"""A test helper: put a stored sign request back in flight (``signing``), as the job queue
has it while a coordinator signs it, so a test can hand the outcome writer an outcome for
it. The writer stores an outcome only for a ``signing`` request: the first stored wins
(:mod:`api.coordinator.outcomes`, issue 14)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from api.db import SignRequest


def in_flight(api: Any, request_id: str) -> None:
    """``request_id`` is ``signing`` again (whatever the test's cluster made of it)."""
    with api.app.state.db.session() as s:
        s.execute(
            update(SignRequest)
            .where(SignRequest.id == request_id)
            .values(status="signing", signature=None, error=None)
        )
