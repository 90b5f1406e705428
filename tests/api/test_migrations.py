"""The coordinator's Alembic migrations (api/migrations) on SQLite and on a real PostgreSQL.

The baseline must build exactly the schema the models declare (SQLAlchemy's own schema
comparison, ``alembic.autogenerate.compare_metadata``, finds no difference), adopt a
database an older release made with ``create_all``, run once when several coordinators
start together on one PostgreSQL, and the service must refuse a database it cannot run on
when it is told not to migrate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from api import shadow  # noqa: F401 - its tables are on api.db.Base
from api.auth import create_credential
from api.db import (
    Base,
    Credential,
    Database,
    SchemaError,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    migrate,
)
from tests import pg

ROOT = Path(__file__).resolve().parents[2]
HEAD = head_revision()  # 0002 (issue 14) and any later revision


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    u = pg.fresh_database("mig")
    yield u
    pg.drop_database(u)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    e = make_engine(url)
    yield e
    e.dispose()


def differences(engine: Engine) -> list[Any]:
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_the_baseline_on_an_empty_database_is_the_models_schema(engine: Engine) -> None:
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == head_revision() == HEAD
    assert HEAD is not None and HEAD >= "0002"
    assert differences(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) | {"alembic_version"} == tables


def test_upgrading_again_changes_nothing_and_keeps_the_data(engine: Engine, url: str) -> None:
    db = Database(url)
    try:
        db.migrate()
        cid, _ = create_credential(db, "auditor", label="kept")
        db.migrate()
        with db.session() as s:
            assert s.get(Credential, cid).label == "kept"
        assert current_revision(db.engine) == HEAD
    finally:
        db.close()


def test_downgrade_to_base_drops_every_table_and_upgrade_builds_them_again(
    engine: Engine,
) -> None:
    migrate(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(engine) is None
    migrate(engine)
    assert differences(engine) == []


def _as_an_older_release_made_it(engine: Engine) -> None:
    """The schema ``create_all`` made before the columns later releases added (and with
    32-bit row ids on PostgreSQL), no ``alembic_version``: one credential row in it."""
    Base.metadata.create_all(engine)
    with engine.begin() as c:
        for table, col, index in (
            ("credentials", "principal", "ix_credentials_principal"),
            ("credentials", "scope", None),
            ("credentials", "rotated_at", None),
            ("sign_requests", "receipt", None),
            ("keys", "label", "ix_keys_label"),
            ("keys", "key_metadata", None),
            # revision 0002 (issue 14): the job queue's columns
            ("sign_requests", "claimed_by", None),
            ("sign_requests", "lease_until", None),
            ("sign_requests", "claims", None),
            ("sign_requests", "attempted", None),
        ):
            if index:
                c.execute(text(f"DROP INDEX {index}"))
            c.execute(text(f"ALTER TABLE {table} DROP COLUMN {col}"))
        if engine.dialect.name == "postgresql":
            c.execute(text("ALTER TABLE audit ALTER COLUMN seq TYPE integer"))
            c.execute(text("ALTER SEQUENCE audit_seq_seq AS integer"))
        c.execute(text("DROP TABLE policy_shadow_disagreements"))  # a table added later
        for table in ("pool_commitments", "pool_presignatures", "pool_refills"):  # 0002
            c.execute(text(f"DROP TABLE {table}"))
        c.execute(
            text(
                "INSERT INTO credentials (id, role, token_sha256, label, created_at, revoked) "
                "VALUES ('cred_old', 'auditor', :h, 'old', CURRENT_TIMESTAMP, :f)"
            ),
            {"h": "ab" * 32, "f": False},
        )


def test_a_database_made_before_migrations_is_adopted(engine: Engine) -> None:
    _as_an_older_release_made_it(engine)
    assert differences(engine) != []  # the older schema really differs
    migrate(engine)
    assert differences(engine) == []
    assert current_revision(engine) == HEAD
    with engine.connect() as c:
        row = c.execute(select(Credential.label, Credential.principal)).one()
        assert tuple(row) == ("old", None)
        if engine.dialect.name == "postgresql":
            kind = c.scalar(
                text(
                    "SELECT data_type FROM information_schema.sequences "
                    "WHERE sequence_name = 'audit_seq_seq'"
                )
            )
            assert kind == "bigint"  # the widened id's sequence, not only the column


def test_without_migrating_the_service_refuses_a_database_not_at_head(url: str) -> None:
    db = Database(url)
    try:
        refused = r"revision none \(not migrated\).*needs " + str(HEAD)
        with pytest.raises(SchemaError, match=refused):
            db.migrate(apply=False)
        db.migrate()
        db.migrate(apply=False)  # at head: starts
    finally:
        db.close()


def test_coordinators_starting_together_on_postgres_migrate_once(tmp_path: Path) -> None:
    """Three coordinator processes upgrade one fresh PostgreSQL database at once (processes:
    Alembic's context is per process): the advisory lock serialises them, so every one
    succeeds (unserialised, they collide on CREATE TABLE and on the version row) and the
    schema is built once."""
    u = pg.fresh_database("race")
    env = {**os.environ, "CUSTODY_DATABASE_URL": u}
    argv = [sys.executable, "-m", "api", "db", "upgrade", "--data-dir"]
    procs = [
        subprocess.Popen(  # noqa: S603 - our own argv
            [*argv, str(tmp_path / f"c{i}")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    e = make_engine(u)
    try:
        assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
        assert [json.loads(out)["to"] for out, _ in outs] == [HEAD] * 3
        with e.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
        assert differences(e) == []
    finally:
        e.dispose()
        pg.drop_database(u)


def _db_cli(action: str, d: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "db", action, "--data-dir", str(d)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_python_m_api_db_upgrade_and_current(url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CUSTODY_DATABASE_URL": url}
    d = tmp_path / "coord"
    before = _db_cli("current", d, env)
    assert before.returncode == 1, before.stderr
    assert json.loads(before.stdout) == {"current": None, "head": HEAD}
    up = _db_cli("upgrade", d, env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == {"from": None, "to": HEAD}
    after = _db_cli("current", d, env)
    assert after.returncode == 0 and json.loads(after.stdout)["current"] == HEAD
    e = make_engine(url)
    try:
        assert differences(e) == []
    finally:
        e.dispose()


def test_a_failed_upgrade_names_the_cause(tmp_path: Path) -> None:
    env = {**os.environ, "CUSTODY_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    bad = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "db", "upgrade", "--data-dir", str(tmp_path / "d")]
        + ["--revision", "9999"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1 and "db upgrade failed" in bad.stderr and "9999" in bad.stderr


AUTOGENERATE = """
import sys
import sqlalchemy as sa
from alembic import command
from api import shadow  # noqa: F401
from api.db import Base, alembic_config, make_engine, migrate
url, out = sys.argv[1], sys.argv[2]
migrate(make_engine(url))
Base.metadata.tables["keys"].append_column(sa.Column("note", sa.String(20), nullable=True))
cfg = alembic_config(url)
import api.migrations, pathlib
ours = pathlib.Path(api.migrations.__file__).parent / "versions"
cfg.set_main_option("version_locations", f"{ours} {out}")
command.revision(cfg, "add a note", autogenerate=True, rev_id="9999", version_path=out)
"""


def test_autogenerate_writes_batch_alters_for_sqlite(tmp_path: Path) -> None:
    """A model change autogenerates as ``op.batch_alter_table`` (env.py ``render_as_batch``),
    the form SQLite can run (it rebuilds the table), from the migrated baseline."""
    out = tmp_path / "versions"
    out.mkdir()
    done = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-c", AUTOGENERATE, f"sqlite:///{tmp_path / 'c.db'}", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (script,) = out.glob("9999_*.py")
    text_ = script.read_text()
    assert f"down_revision: str | Sequence[str] | None = '{HEAD}'" in text_
    assert "with op.batch_alter_table('keys'" in text_ and "add_column" in text_
    assert "create_table" not in text_  # the baseline matched everything else
