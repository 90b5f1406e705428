"""The payment core's Alembic migrations (payments/migrations: branches ``core`` and
``book``) on SQLite and on a real PostgreSQL: each branch's baseline builds exactly the
tables the code declares (``alembic.autogenerate.compare_metadata`` finds no difference),
adopts a database ``create_all`` made before migrations, and both branches can share one
database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, insert, inspect, select, text

from payments.book import book_metadata
from payments.db import alembic_config, assets, create_schema, make_engine, metadata, migrate
from payments.db import revisions as revisions_of
from payments.settlement import iso_metadata
from tests import pg

CORE = [metadata, iso_metadata]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'payments.db'}")
        yield eng
        eng.dispose()
        return
    url = pg.fresh_database("paymig")
    eng = make_engine(url)
    yield eng
    eng.dispose()
    pg.drop_database(url)


def differences(engine: Engine, target: list[MetaData]) -> list[Any]:
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        return list(compare_metadata(ctx, target))


def test_the_core_baseline_is_the_ledger_schema(engine: Engine) -> None:
    create_schema(engine)
    assert revisions_of(engine) == {"core0001"}
    assert differences(engine, CORE) == []
    create_schema(engine)  # again: nothing to do
    assert revisions_of(engine) == {"core0001"}


def test_the_book_baseline_is_the_journal_schema(engine: Engine) -> None:
    migrate(engine, "book")
    assert revisions_of(engine) == {"book0001"}
    assert differences(engine, [book_metadata]) == []
    assert set(inspect(engine).get_table_names()) == {"book_journal", "alembic_version"}


def test_both_branches_in_one_database(engine: Engine) -> None:
    """``PAYMENTS_BOOK_DATABASE_URL`` may name the ledger's own database: each branch keeps
    its own head in the one version table."""
    migrate(engine, "core")
    migrate(engine, "book")
    assert revisions_of(engine) == {"core0001", "book0001"}
    assert differences(engine, [*CORE, book_metadata]) == []


def test_a_ledger_made_before_migrations_is_adopted_with_its_rows(engine: Engine) -> None:
    metadata.create_all(engine)  # what create_schema did before migrations
    with engine.begin() as c:
        c.execute(insert(assets).values(code="EUR", decimals=2))
    assert differences(engine, CORE) != []  # the ISO tables were made later, by the Settler
    create_schema(engine)
    assert differences(engine, CORE) == []
    assert revisions_of(engine) == {"core0001"}
    with engine.connect() as c:
        assert c.execute(select(assets.c.code, assets.c.decimals)).all() == [("EUR", 2)]


def test_the_ledger_constraints_hold_after_migrating(engine: Engine) -> None:
    """The frozen baseline keeps the CHECKs the code relies on (the overdraft guard)."""
    create_schema(engine)
    with engine.begin() as c:
        c.execute(insert(assets).values(code="EUR", decimals=2))
    with pytest.raises(Exception, match="(?i)check|constraint"), engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO accounts (id, owner, asset, kind, allow_negative, balance, held,"
                " created_at) VALUES ('a', 'c', 'EUR', 'customer', :f, 0, 5, CURRENT_TIMESTAMP)"
            ),
            {"f": False},
        )


def test_downgrade_of_one_branch_leaves_the_other(engine: Engine) -> None:
    migrate(engine, "core")
    migrate(engine, "book")
    cfg = alembic_config("book")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "book@base")
    assert revisions_of(engine) == {"core0001"}
    assert "book_journal" not in inspect(engine).get_table_names()
    assert differences(engine, CORE) == []
