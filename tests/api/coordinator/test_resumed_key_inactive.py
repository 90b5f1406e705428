"""Issue 14 (several coordinators): a request resumed from the queue whose key is no longer
active fails with the reason, and the ``sign.attempt`` entries of the signer sets an earlier
holder fenced carry the request digest the nodes logged (before: empty), so the nodes'
audit checkpoints find every release they made for it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from api.coordinator.queue import Claimed
from api.db import AuditEntry, Database, Key, SignRequest, utcnow
from tests.api.coordinator.inflight import in_flight
from tests.api.test_sign_requests import post_sr, stored_digest


async def test_a_resumed_request_of_an_inactive_key_audits_its_attempts_with_the_digest(
    api,  # noqa: ANN001
) -> None:
    c = api.app.state.coordinator
    db: Database = api.app.state.db
    kid, _sk = api.add_signing_key()
    sid = post_sr(api, kid, "inactive").json()["id"]
    in_flight(api, sid)
    digest = stored_digest(api, sid)
    assert len(digest) == 32
    with db.session() as s:  # the dead holder fenced {1, 3}; the key was then disabled
        s.execute(
            update(SignRequest)
            .where(SignRequest.id == sid)
            .values(claimed_by="dead:1:00", lease_until=utcnow() - dt.timedelta(seconds=1),
                    attempted=[[1, 3]], claims=1)
        )  # fmt: skip
        s.execute(update(Key).where(Key.id == kid).values(status="disabled"))
    c.keys._by_id.pop(kid, None)  # the key book's cache of active keys
    (claim,) = await c.queue.claim_due(5)
    assert isinstance(claim, Claimed) and claim.attempted == ((1, 3),)
    await c._run_claimed(claim)
    got = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("requester")).json()
    assert got["status"] == "failed" and "disabled" in got["error"]["detail"], got
    with db.session() as s:
        entries = s.scalars(
            select(AuditEntry).where(AuditEntry.subject == sid).order_by(AuditEntry.seq)
        ).all()
    attempts = [e.data for e in entries if e.action == "sign.attempt"]
    assert attempts, [e.action for e in entries]
    for data in attempts:
        assert data["signers"] == [1, 3]
        assert data["request_digest"] == digest.hex(), data
    # the key stays out of the key book's active cache (nothing signs with it)
    assert kid not in c.keys._by_id
