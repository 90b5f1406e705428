"""Two coordinator processes on one real PostgreSQL, three signer-node processes over
mutual TLS (``simulations.multi.Multi``: the nodes, two ``python -m api serve`` on one
coordinator data directory and one database, HAProxy in front), one topology per module.

The coordinators run with a short lease (``CUSTODY_SIGN_LEASE``) and a fast queue worker,
so a request a SIGKILLed coordinator held is resumed by the other within seconds.
Skipped, with the reason, only when HAProxy or PostgreSQL's server programs are missing
and ``CUSTODY_REQUIRE_POSTGRES`` is unset (``tests/lb/conftest.py``'s rule)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.multi import Multi
from tests.lb.conftest import LB_ENV, require_topology

#: tests/lb's sweeps plus the job queue's: a 3 s lease, claims every 0.25 s
MULTI_ENV = {
    **LB_ENV,
    "CUSTODY_SIGN_LEASE": "3",
    "CUSTODY_QUEUE_POLL": "0.25",
}


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multi]:
    require_topology()
    d: Path = tmp_path_factory.mktemp("multi")
    m = Multi(d, coordinators=2, pg_durable=False, env=dict(MULTI_ENV))
    try:
        m.start(timeout=240)
        yield m
    finally:
        m.stop()
