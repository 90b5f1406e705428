"""Several coordinators on one PostgreSQL database (the first step of issue 14's "many
coordinators"): the audit chain stays one gapless chain when coordinators append at once,
and an ``Idempotency-Key`` holds across coordinators (same key on both: one request).

These run in both passes (they make their own databases on the tests' server,
:mod:`tests.pg`); skipped where PostgreSQL is not installed, unless it is required."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from api import audit
from api.db import AuditEntry, Database, SignRequest
from custody import governance as gov
from tests import pg
from tests.api.conftest import Api, make_api
from tests.api.conftest import test_policy as approvals_policy
from tests.api.test_approvals import ETH_LIMIT, b64, post_approval, post_tx, statement


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = pg.fresh_database("multi")
    yield url
    pg.drop_database(url)


def test_concurrent_appends_from_two_coordinators_make_one_gapless_chain(pg_url: str) -> None:
    """Two coordinators' databases (engines, pools) on one PostgreSQL, eight writers each
    appending at once: every append succeeds and the chain walks clean 1..N (without the
    chain's advisory lock two transactions read the same head and one fails on ``seq``)."""
    dbs = [Database(pg_url), Database(pg_url)]
    dbs[0].migrate()
    per_writer, writers = 15, 8
    gate = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(db: Database, n: int) -> None:
        gate.wait()
        try:
            for i in range(per_writer):
                with db.session() as s:
                    audit.append(s, f"writer-{n}", "test.append", f"s{n}-{i}", {"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(dbs[n % 2], n)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        with dbs[1].session() as s:
            rows = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
            report = audit.walk_chain(rows)
        assert (report.entries, report.findings) == (per_writer * writers, [])
        assert [r.seq for r in rows] == list(range(1, per_writer * writers + 1))
    finally:
        for db in dbs:
            db.close()


def shared_genesis() -> bytes:
    """One signed governance genesis (tests/api/conftest.py's, as bytes) for both
    coordinators: approvals name the governance they were made under."""
    officer = SigningKey.generate()
    body = gov.Governance(
        cluster_id="tpwc-dev",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("test-officer", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=frozenset(),
        policy=approvals_policy(),
    )
    return gov.unsigned(body).with_signature(officer, "test-officer").encode()


@pytest.fixture
def two(tmp_path: Path, pg_url: str) -> Iterator[tuple[Api, Api]]:
    """Two coordinator apps (own data directory, own HSM token and key) on one database,
    under one governance."""
    g = shared_genesis()
    with ExitStack() as stack:
        a = stack.enter_context(_entered(make_api(tmp_path / "a", genesis=g, database_url=pg_url)))
        b = stack.enter_context(_entered(make_api(tmp_path / "b", genesis=g, database_url=pg_url)))
        yield a, b


class _entered:
    """A fixture-style generator used as a context manager."""

    def __init__(self, gen: Iterator[Api]) -> None:
        self.gen = gen

    def __enter__(self) -> Api:
        return next(self.gen)

    def __exit__(self, *exc: object) -> None:
        for _ in self.gen:
            pass


def _post(api: Api, token: str, key_id: str, idem: str, message: str = "11" * 32):  # noqa: ANN202
    return api.client.post(
        "/v1/sign-requests",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": idem},
        json={"key_id": key_id, "kind": "raw", "message": message},
    )


def test_the_same_idempotency_key_on_two_coordinators_is_one_request(
    two: tuple[Api, Api],
) -> None:
    a, b = two
    kid = a.add_key()
    token = a.tokens["requester"]  # one client, one credential, two coordinators
    first = _post(a, token, kid, "pay-42")
    again = _post(b, token, kid, "pay-42")
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = _post(b, token, kid, "pay-42", message="22" * 32)
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-mismatch")
    with a.app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(SignRequest)) == 1


def test_racing_posts_on_two_coordinators_create_one_request(two: tuple[Api, Api]) -> None:
    """Six POSTs with one key, three on each coordinator, released at once: one request is
    created; every other answer is its replay or a 409 while it is in flight."""
    a, b = two
    kid = a.add_key()
    token = a.tokens["requester"]
    gate = threading.Barrier(6)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def post(api: Api) -> None:
        gate.wait()
        r = _post(api, token, kid, "race-1")
        with lock:
            answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=post, args=(x,)) for x in (a, b) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 6
    made = {body["id"] for code, body in answers if code == 202}
    assert len(made) == 1, answers
    assert all(code in (202, 409) for code, _ in answers), answers
    with b.app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(SignRequest)) == 1
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        assert audit.walk_chain(rows).findings == []


def test_times_come_back_timezone_aware_utc(two: tuple[Api, Api]) -> None:
    a, _ = two
    kid = a.add_key()
    r = _post(a, a.tokens["requester"], kid, "tz-1")
    with a.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == r.json()["id"]))
        assert row is not None and row.created_at.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - row.created_at) < dt.timedelta(minutes=5)


def _approve(api: Api, rid: str, who: str) -> int:
    return post_approval(api, rid, b64(statement(api, rid, who)), f"ap-{who}-{rid}").status_code


def _at_once(calls: list[Callable[[], int]]) -> list[int]:
    """Run the calls in threads released together; their results."""
    gate = threading.Barrier(len(calls))
    out: list[int] = []

    def run(call: Callable[[], int]) -> None:
        gate.wait()
        out.append(call())

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_approvals_taken_by_two_coordinators_at_once_both_count(two: tuple[Api, Api]) -> None:
    """Two approvers' approvals of one request arrive at the same moment, one on each
    coordinator: both are stored and counted (the request row is read FOR UPDATE), and the
    request leaves pending_approval exactly once. Without the lock each transaction reads
    the other's approval as absent and the request stays pending with one of them lost."""
    a, b = two
    kid = a.add_key()
    for n in range(3):
        r = post_tx(a, kid, 2 * ETH_LIMIT, f"big-{n}")
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        approvals = [(a, "dev-approver-1"), (b, "dev-approver-3")]
        codes = _at_once(
            [lambda api=api, who=who, rid=rid: _approve(api, rid, who) for api, who in approvals]
        )
        assert codes == [200, 200], codes
        with a.app.state.db.session() as s:
            row = s.scalar(select(SignRequest).where(SignRequest.id == rid))
            assert row is not None and len(row.body["approvals"]) == 2
            assert row.status != "pending_approval"
            acts = s.scalars(select(AuditEntry.action).where(AuditEntry.subject == rid)).all()
            assert acts.count("sign.approval") == 2 and acts.count("sign.approved") == 1
