"""Alembic environment of the payment core's databases (SQLite or PostgreSQL).

Run through :func:`payments.db.migrate`, which hands over an open connection in
``config.attributes["connection"]`` and which database it is in
``config.attributes["branch"]`` (``core`` or ``book``), so autogenerate compares each
database with its own tables only.

- ``render_as_batch``: SQLite ALTERs are written as ``op.batch_alter_table``.
- Under a PostgreSQL transaction-level advisory lock, so services starting together on
  one server take turns (DDL is transactional there).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine, text

from payments.book import book_metadata
from payments.db import MIGRATION_LOCK, metadata
from payments.settlement import iso_metadata

TARGETS: dict[str, list[MetaData]] = {"core": [metadata, iso_metadata], "book": [book_metadata]}


def _run(connection: Connection) -> None:
    branch = context.config.attributes.get("branch", "core")
    context.configure(
        connection=connection,
        target_metadata=TARGETS[branch],
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
