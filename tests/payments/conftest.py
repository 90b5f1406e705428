"""Fixtures of the payment-core tests: a real database per test (SQLite file, and a real
PostgreSQL server started once per test process where ``initdb`` is installed:
:mod:`tests.pg`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from payments.db import create_schema, make_engine
from tests import pg


@pytest.fixture(scope="session")
def postgres_url() -> str | None:
    """The tests' PostgreSQL server (:mod:`tests.pg`, one per test process, shared with the
    coordinator tests); None when not installed (a failure with CUSTODY_REQUIRE_POSTGRES=1)."""
    return pg.server_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'payments.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        if url is None:
            pytest.skip("PostgreSQL (initdb) is not installed")
        eng = make_engine(url)
        with eng.begin() as c:  # a clean schema per test
            c.execute(text("DROP SCHEMA public CASCADE"))
            c.execute(text("CREATE SCHEMA public"))
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'payments.db'}")
    create_schema(eng)
    yield eng
    eng.dispose()
