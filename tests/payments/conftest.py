"""Fixtures of the payment-core tests: a real database per test (SQLite file, and a real
PostgreSQL server started once per test process where ``initdb`` is installed:
:mod:`tests.pg`), and :func:`payments_cluster`, the ``custody up --with-payments`` cluster
of the modules that run the payment service against real custody processes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from custody.cluster import Cluster, free_port_block
from payments.db import create_schema, make_engine
from tests import pg
from tests.e2e.conftest import clone_cluster

#: What every payments cluster runs with unless its module says otherwise: a presignature
#: pool of 4 per ECDSA key instead of 16 (tests/e2e/conftest.py ``CLUSTER_ENV``): a module
#: signs a handful of ethereum payments, and a full pool is a dozen presign sessions run in
#: the background while it runs. An empty pool presigns on demand.
PAYMENTS_CLUSTER_ENV = {"CUSTODY_PRESIG_TARGET": "4"}


def payments_cluster(d: Path, env: Mapping[str, str] | None = None) -> Cluster:
    """A ``Cluster(payments=True)`` (``custody up --with-payments``) under ``d``, not yet
    started: a copy of the session's provisioned cluster with the demo genesis (no raw
    signing; tests/e2e/conftest.py ``clone_cluster``), so its start runs no provisioning.
    Its own databases, tokens and payment service; the payment service's keys are made by
    DKG on its first start, as on a fresh ``custody up``. ``env`` adds to
    :data:`PAYMENTS_CLUSTER_ENV`."""
    clone_cluster(d, allow_raw=False)
    return Cluster(
        d,
        nodes=3,
        port=free_port_block(3),
        env={**PAYMENTS_CLUSTER_ENV, **(env or {})},
        payments=True,
    )


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
