"""The modules that share the worker's one multi-machine topology (tests/conftest.py
``multi_topology``) are one unit of work: tests/schedule.py ``SHARED_UNITS`` orders them
together, and tests/conftest.py's scheduler keeps them on one worker. (That a run builds one
topology for all of them: docs/PERFORMANCE.md, "Test suite time (2026-12-02)" and
"Test suite time (session 23)".)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import schedule
from tests.conftest import pytest_xdist_make_scheduler

ROOT = Path(__file__).resolve().parents[2]
CHAOS, LB = "tests/multi/test_chaos.py", "tests/lb/test_multi.py"
CID = "tests/e2e/test_coordinator_identities.py"  # retires coordinator-2, re-pins it at its end


@dataclass
class Item:
    nodeid: str


def test_the_shared_units_name_existing_modules_each_once() -> None:
    mods = [m for unit in schedule.SHARED_UNITS.values() for m in unit]
    assert len(mods) == len(set(mods)), mods
    for m in mods:
        assert (ROOT / m).is_file(), m
    assert schedule.SHARED_UNITS["multi-topology"] == (CHAOS, CID, LB)  # LB last: it stops it


def test_a_shared_units_modules_are_one_unit_and_others_their_own() -> None:
    assert schedule.unit_of(f"{CHAOS}::test_x[3]") == "multi-topology"
    assert schedule.unit_of(f"{LB}::test_topology_up") == "multi-topology"
    assert schedule.unit_of(f"{CID}::test_two") == "multi-topology"
    assert schedule.unit_of("tests/lb/test_compose.py::test_topology") == (
        "tests/lb/test_compose.py"
    )


def test_a_shared_unit_weighs_its_modules_sum_and_keeps_its_order() -> None:
    # collection order puts tests/lb first; the unit runs CHAOS first, LB (which stops the
    # topology) last, with a.py (50 s) between neither: the unit (30 + 30 s) goes first
    ids = [f"{LB}::t1", f"{LB}::t_zz", "tests/a.py::t1", f"{CHAOS}::t1", "tests/b.py::t1"]
    items = [Item(i) for i in ids]
    times = {LB: 30.0, CHAOS: 30.0, "tests/a.py": 50.0, "tests/b.py": 1.0}
    schedule.order_items(items, times)
    assert [i.nodeid for i in items] == [
        f"{CHAOS}::t1",
        f"{LB}::t1",
        f"{LB}::t_zz",
        "tests/a.py::t1",
        "tests/b.py::t1",
    ]
    # the same with the unit lighter than a.py: a.py first, the unit's modules still adjacent
    items = [Item(i) for i in ids]
    schedule.order_items(items, {**times, "tests/a.py": 70.0})
    assert [i.nodeid for i in items][1:4] == [f"{CHAOS}::t1", f"{LB}::t1", f"{LB}::t_zz"]


def test_the_scheduler_splits_by_unit_under_loadfile_only() -> None:
    pytest.importorskip("xdist")
    from xdist.scheduler import LoadFileScheduling  # noqa: PLC0415

    class Config:  # what the scheduler reads of pytest's config (-n 2 --dist ...)
        def __init__(self, dist: str) -> None:
            self.values = {"dist": dist, "tx": ["2*popen"]}

        def getvalue(self, name: str) -> object:
            return self.values[name]

    assert pytest_xdist_make_scheduler(Config("load"), None) is None  # type: ignore[arg-type]
    sched = pytest_xdist_make_scheduler(Config("loadfile"), None)  # type: ignore[arg-type]
    assert isinstance(sched, LoadFileScheduling)
    assert sched._split_scope(f"{LB}::test_topology_up") == "multi-topology"
    assert sched._split_scope(f"{CHAOS}::test_x[3]") == "multi-topology"
    assert sched._split_scope("tests/lb/test_compose.py::test_topology") == (
        "tests/lb/test_compose.py"
    )
