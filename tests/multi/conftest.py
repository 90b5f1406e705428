"""Two coordinator processes on one real PostgreSQL, three signer-node processes over
mutual TLS (``simulations.multi.Multi``: the nodes, two ``python -m api serve`` on one
coordinator data directory and one database, HAProxy in front): the worker's one topology,
shared with tests/lb/test_multi.py (``multi``, tests/lb/conftest.py; the two modules are
one unit of work, tests/schedule.py ``SHARED_UNITS``, this one first).

The coordinators run with a short lease (``CUSTODY_SIGN_LEASE``) and a fast queue worker
(tests/lb/conftest.py ``SHARED_ENV``), so a request a SIGKILLed coordinator held is resumed
by the other within seconds. A coordinator or node this module kills is started again
when it ends (a node first: the shared topology counts one lost node as broken and would
build the next module a new one). Skipped, with the reason, only when HAProxy or
PostgreSQL's server programs are missing and ``CUSTODY_REQUIRE_POSTGRES`` is unset
(``tests/lb/conftest.py``'s rule)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from simulations.multi import Multi
from tests.lb.conftest import SharedMulti


@pytest.fixture(scope="module")
def multi(multi_topology: SharedMulti) -> Iterator[Multi]:
    """tests/lb/conftest.py's ``multi``, and after the module every node it killed (or
    left frozen) running again before the coordinators are restored."""
    m = multi_topology.get()
    try:
        yield m
    finally:
        if m.cluster is not None:
            for i in range(1, m.nodes + 1):
                proc = m.cluster.procs.get(f"node-{i}")
                if proc is not None and proc.alive and proc.popen is not None:
                    os.kill(proc.popen.pid, signal.SIGCONT)  # a no-op unless frozen
                elif proc is not None:
                    m.start_node(i)
        multi_topology.restore()
