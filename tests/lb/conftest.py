"""Several coordinators behind HAProxy, as processes (``simulations.multi.Multi``).

One topology per test module (``multi``): a throw-away PostgreSQL server, three signer
nodes over mutual TLS, two coordinators on one data directory and one database, HAProxy
in front terminating TLS 1.3 for the clients (what ``docker-compose.yml`` runs).

Skipped, with the reason, only when HAProxy or PostgreSQL's server programs are missing
and ``CUSTODY_REQUIRE_POSTGRES`` is unset; in CI (``.ci/run`` installs both and sets it) a
missing one is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations import pgserver
from simulations.haproxy import haproxy_binary
from simulations.multi import Multi

#: fast pool and health sweeps, short rounds, a small presignature pool (tests/e2e's choice)
LB_ENV = {
    "CUSTODY_POOL_INTERVAL": "0.3",
    "CUSTODY_ROUND_TIMEOUT": "5",
    "CUSTODY_PRESIG_TARGET": "4",
}


def require_topology() -> None:
    """Skip (or fail under ``CUSTODY_REQUIRE_POSTGRES=1``) without haproxy or PostgreSQL."""
    missing = []
    if haproxy_binary() is None:
        missing.append("haproxy (apt-get install haproxy)")
    if not pgserver.available():
        missing.append("PostgreSQL's initdb/pg_ctl (apt-get install postgresql)")
    if not missing:
        return
    why = "the load-balancer tests need " + " and ".join(missing)
    if os.environ.get("CUSTODY_REQUIRE_POSTGRES") == "1":
        pytest.fail(why + " (CUSTODY_REQUIRE_POSTGRES=1: required here)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multi]:
    require_topology()
    d: Path = tmp_path_factory.mktemp("multi")
    m = Multi(d, coordinators=2, client_tls=True, pg_durable=False, env=dict(LB_ENV))
    try:
        m.start(timeout=240)
        yield m
    finally:
        m.stop()
