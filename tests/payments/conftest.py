"""Fixtures of the payment-core tests: a real database per test (SQLite file, and a real
PostgreSQL server started once per session where ``initdb`` is installed), and
:func:`payments_cluster`, the ``custody up --with-payments`` cluster of the modules that run
the payment service against real custody processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from custody.cluster import Cluster, free_port_block
from payments.db import create_schema, make_engine
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the postgres user then."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _pg_tool(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's packages put it."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CUSTODY_REQUIRE_POSTGRES") == "1":  # CI installs it (.ci/run)
            pytest.fail("CUSTODY_REQUIRE_POSTGRES=1 but PostgreSQL's initdb/pg_ctl are not found")
        yield None
        return
    d = Path(tempfile.mkdtemp(prefix="paycore-pg-"))
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
    data, port = d / "data", _free_port()
    subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
        _as_postgres([initdb, "-D", str(data), "-U", "pay", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
        _as_postgres(
            [
                pg_ctl,
                "-D",
                str(data),
                "-w",
                "-l",
                str(d / "log"),
                "-o",
                f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),  # fmt: skip
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://pay@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(d, ignore_errors=True)


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
