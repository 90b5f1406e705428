"""Several coordinators behind HAProxy, as processes (``simulations.multi.Multi``).

One topology per worker, shared by tests/lb/test_multi.py, tests/multi/test_chaos.py and
tests/e2e/test_coordinator_identities.py (``multi``, drawn from the session fixture
``multi_topology`` of tests/conftest.py; the modules are one unit of work,
tests/schedule.py ``SHARED_UNITS``; the identities module re-pins the coordinator it
retires when it ends): a throw-away
PostgreSQL server, three signer nodes over mutual TLS, two coordinators on one data
directory and one database, HAProxy in front terminating TLS 1.3 for the clients (what
``docker-compose.yml`` runs). A module may SIGKILL a coordinator; when it ends, every
coordinator is running again and UP in HAProxy (:meth:`SharedMulti.restore`), so the next
module gets the whole topology; one that stopped the topology (test_multi's last test)
leaves the next user a new one.

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
#: the shared topology's: tests/lb's sweeps plus tests/multi's job queue (a 3 s sign lease,
#: claims every 0.25 s: a request a SIGKILLed coordinator held is resumed within seconds)
SHARED_ENV = {
    **LB_ENV,
    "CUSTODY_SIGN_LEASE": "3",
    "CUSTODY_QUEUE_POLL": "0.25",
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


def _alive(m: Multi, proc: str) -> bool:
    return m.cluster is not None and proc in m.cluster.procs and m.cluster.procs[proc].alive


def _coordinator_proc(k: int) -> str:
    return "coordinator" if k == 1 else f"coordinator-{k}"


class SharedMulti:
    """The worker's one topology (``multi_topology``): built on the first :meth:`get`,
    built again only when a test stopped it (or it lost a node, HAProxy or PostgreSQL),
    stopped at the session's end."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self.multi: Multi | None = None

    def running(self) -> bool:
        """HAProxy, PostgreSQL and every node up (the coordinators :meth:`restore` restarts)."""
        m = self.multi
        if m is None or m.lb is None or not m.lb.alive or m.pg is None or not m.pg.pids():
            return False
        return all(_alive(m, f"node-{i}") for i in range(1, m.nodes + 1))

    def get(self) -> Multi:
        require_topology()
        if self.multi is not None and not self.running():
            self.close()  # stopped by a test (or broken): the next user gets a new one
        if self.multi is None:
            d: Path = self._factory.mktemp("multi")
            m = Multi(d, coordinators=2, client_tls=True, pg_durable=False, env=dict(SHARED_ENV))
            m.start(timeout=240)  # a failed start stops what it started
            self.multi = m
        else:
            self.restore()
        return self.multi

    def restore(self) -> None:
        """Every coordinator a test killed started again, all UP in HAProxy (nothing to do
        on a stopped topology: the next :meth:`get` builds one)."""
        m = self.multi
        if m is None or not self.running():
            return
        assert m.lb is not None
        for k in range(1, m.coordinators + 1):
            if not _alive(m, _coordinator_proc(k)):
                m.start_coordinator(k)
        m.lb.wait_states(
            {m.backend_name(k): "UP" for k in range(1, m.coordinators + 1)}, timeout=60
        )

    def close(self) -> None:
        m, self.multi = self.multi, None
        if m is not None:
            m.stop()


@pytest.fixture(scope="module")
def multi(multi_topology: SharedMulti) -> Iterator[Multi]:
    """The worker's topology, whole (both coordinators UP); whole again after the module."""
    m = multi_topology.get()
    try:
        yield m
    finally:
        multi_topology.restore()
