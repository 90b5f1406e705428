"""Alembic environment of the coordinator database (SQLite or PostgreSQL).

Run through :func:`api.db.migrate`, which hands over an open connection in
``config.attributes["connection"]``; with none, the URL is ``sqlalchemy.url`` of the
config (``alembic -x``-free use by an operator: :func:`api.db.alembic_config`).

- ``target_metadata`` is :data:`api.db.Base`'s, with :mod:`api.shadow` imported so its
  tables are on it: autogenerate and ``tests/api/test_migrations.py`` compare against it.
- SQLite cannot ALTER most things in place: ``render_as_batch`` makes autogenerate write
  ``op.batch_alter_table`` (copy-and-move) for every ALTER, which PostgreSQL runs as plain
  ALTERs.
- Several coordinators may start at once on one PostgreSQL: the whole upgrade runs in one
  transaction under a transaction-level advisory lock, so one migrates and the others
  wait, then find the schema at head (PostgreSQL DDL is transactional).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text

from api import shadow  # noqa: F401 - registers the shadow tables on api.db.Base
from api.db import MIGRATION_LOCK, Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them on a database")
run_migrations_online()
