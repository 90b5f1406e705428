"""A topology whose start fails leaves nothing behind: the PostgreSQL server it had
started is stopped and its directory removed, no process of ours is left running."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from simulations.multi import Multi
from tests.lb.conftest import require_topology


def test_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    require_topology()
    # a value the coordinator's settings refuse: `api init` (the first process) fails
    m = Multi(tmp_path / "d", pg_durable=False, env={"CUSTODY_ROUND_TIMEOUT": "soon"})
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("custody-sim-pg-*"))
    with pytest.raises(RuntimeError, match="api init"):
        m.start(timeout=60)
    assert (
        set(Path(tempfile.gettempdir()).glob("custody-sim-pg-*")) <= before
    )  # its directory is gone
    assert m.pg is not None and m.pg.dir is None and not m.pg.running
    assert m.pids() == {}
