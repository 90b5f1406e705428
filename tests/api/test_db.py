"""api.db and api.audit on the signing hot path: group commit, grouped audit appends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from api import audit
from api.db import AuditEntry, Database


def _row(seq: int) -> dict:
    return {
        "seq": seq,
        "at": "t",
        "actor": "a",
        "action": "x",
        "subject": "s",
        "data": {},
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }


async def test_group_writer_commits_queued_jobs_together_and_fails_one_alone(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.create_all()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)  # the writer thread now blocks inside the first batch

        def add(seq: int):  # noqa: ANN202
            return lambda c: c.execute(insert(AuditEntry).values(**_row(seq))).rowcount

        def clash(c):  # noqa: ANN001, ANN202 - same seq as job 1: IntegrityError
            return c.execute(insert(AuditEntry).values(**{**_row(1), "hash": "f" * 64}))

        queued = [asyncio.ensure_future(db.write(add(i))) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        assert await asyncio.gather(*queued) == [1] * 5
        assert (db.writer.batches, db.writer.jobs) == (2, 6)  # 5 queued jobs, one commit

        gate.clear()
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(db.write(add(i))) for i in (6, 7)]
        bad = asyncio.ensure_future(db.write(clash))
        queued.append(asyncio.ensure_future(db.write(add(8))))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        assert await asyncio.gather(*queued) == [1, 1, 1]
        with pytest.raises(Exception, match="UNIQUE"):
            await bad
        with db.engine.connect() as c:
            assert c.execute(
                select(AuditEntry.seq).order_by(AuditEntry.seq)
            ).scalars().all() == list(range(1, 9))
    finally:
        gate.set()
        db.close()


async def test_audit_appends_grouped_in_one_transaction_keep_the_chain(tmp_path: Path) -> None:
    """Appends queued together share one transaction; each links to the one before it
    (the chain head is read once per transaction), and a failed batch rerun alone still
    links correctly."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)

        def job(i: int, fail: bool = False):  # noqa: ANN202
            def run(c):  # noqa: ANN001, ANN202
                seq = audit.append(c, "t", "x", f"s{i}", {"i": i})
                if fail:
                    raise RuntimeError("job fails after its append")
                return seq

            return run

        jobs = [asyncio.ensure_future(db.write(job(i, fail=i == 3))) for i in range(6)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        res = await asyncio.gather(*jobs, return_exceptions=True)
        assert isinstance(res[3], RuntimeError)
        assert sorted(r for r in res if isinstance(r, int)) == [1, 2, 3, 4, 5]
        with db.session() as s:
            rep = audit.walk_chain(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
            assert (rep.entries, rep.findings) == (5, [])
    finally:
        gate.set()
        db.close()


def test_create_all_adds_the_principal_column_to_an_older_database(tmp_path: Path) -> None:
    """A coordinator database made before principals existed (no credentials.principal
    column) gains it at start; its credentials read as principals of their own id, and new
    ones carry the principal they were given."""
    import sqlite3  # noqa: PLC0415 - test only

    from api.auth import Principal, create_credential  # noqa: PLC0415
    from api.db import Credential  # noqa: PLC0415

    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}")
    db.create_all()
    cid, _ = create_credential(db, "requester")
    db.close()
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX IF EXISTS ix_credentials_principal")
    raw.execute("ALTER TABLE credentials DROP COLUMN principal")  # as the old schema was
    raw.execute("DROP TABLE alembic_version")  # made before migrations (api/migrations)
    # nor had it what revision 0002 (issue 14: the job queue and shared pools) adds
    for col in ("claimed_by", "lease_until", "claims", "attempted"):
        raw.execute(f"ALTER TABLE sign_requests DROP COLUMN {col}")
    for table in ("pool_commitments", "pool_presignatures", "pool_refills"):
        raw.execute(f"DROP TABLE {table}")
    raw.commit()
    assert "principal" not in {r[1] for r in raw.execute("PRAGMA table_info(credentials)")}
    raw.close()
    db = Database(f"sqlite:///{path}")
    try:
        db.create_all()
        db.create_all()  # idempotent
        with db.session() as s:
            old = s.get(Credential, cid)
            assert old is not None and old.principal is None
        new, _ = create_credential(db, "requester", principal="payments-bot")
        with db.session() as s:
            assert s.get(Credential, new).principal == "payments-bot"
        assert Principal(cid, "requester", cid).principal_id == cid
        with pytest.raises(ValueError, match="principal"):
            create_credential(db, "requester", principal="not an id!")
    finally:
        db.close()


def test_api_init_names_the_bootstrap_credentials_principals(tmp_path: Path) -> None:
    """``python -m api init --principal ROLE=NAME`` (what ``custody up`` runs): a bad role or
    name creates nothing; good ones become the credentials' audited principals."""
    import subprocess  # noqa: PLC0415 - test only
    import sys  # noqa: PLC0415

    from api.db import AuditEntry, Credential  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    d = tmp_path / "coord"

    def init(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own argv
            [sys.executable, "-m", "api", "init", "--data-dir", str(d), *extra],
            capture_output=True,
            text=True,
            cwd=root,
            check=False,
            timeout=120,
        )

    for bad in ("--principal=requester=not an id", "--principal=boss=x"):
        r = init(bad)
        assert r.returncode == 2 and "--principal" in r.stderr, r.stderr
    r = init("--principal=requester=payments-bot", "--principal=approver=treasury-desk")
    assert r.returncode == 0, r.stderr
    db = Database(f"sqlite:///{d / 'coordinator.db'}")
    try:
        with db.session() as s:
            names = {c.role: (c.id, c.principal) for c in s.scalars(select(Credential))}
            audited = {
                e.subject: e.data["principal"]
                for e in s.scalars(
                    select(AuditEntry).where(AuditEntry.action == "credential.create")
                )
            }
        assert names["requester"][1] == "payments-bot"
        assert names["approver"][1] == "treasury-desk"
        assert names["admin"][1] == names["admin"][0]  # default: its own id
        assert {cid: p for cid, p in names.values()} == audited
    finally:
        db.close()
