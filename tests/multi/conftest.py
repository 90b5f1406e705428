"""Two coordinator processes on one real PostgreSQL, three signer-node processes over
mutual TLS (``simulations.multi.Multi``: the nodes, two ``python -m api serve`` on one
coordinator data directory and one database, HAProxy in front): the worker's one topology,
shared with tests/lb/test_multi.py (``multi``, tests/lb/conftest.py; the two modules are
one unit of work, tests/schedule.py ``SHARED_UNITS``, this one first).

The coordinators run with a short lease (``CUSTODY_SIGN_LEASE``) and a fast queue worker
(tests/lb/conftest.py ``SHARED_ENV``), so a request a SIGKILLed coordinator held is resumed
by the other within seconds. A coordinator this module kills is started again when it
ends. Skipped, with the reason, only when HAProxy or PostgreSQL's server programs are
missing and ``CUSTODY_REQUIRE_POSTGRES`` is unset (``tests/lb/conftest.py``'s rule)."""

from __future__ import annotations

from tests.lb.conftest import multi

__all__ = ["multi"]
