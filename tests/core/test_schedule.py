"""tests/schedule.py: the order the suite's modules run in under pytest-xdist, and the
model of xdist's loadfile scheduler it is judged by."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import schedule

DURATIONS = """
============================= slowest durations ==============================
55.10s call     tests/e2e/test_backup.py::test_dr_drill
18.00s setup    tests/e2e/test_backup.py::test_holds
0.50s call     tests/e2e/test_backup.py::test_holds
0.01s teardown tests/e2e/test_backup.py::test_holds
2.00s call     tests/mpc/test_dkg.py::test_x[a b]
1.00s call     tests/mpc/test_dkg.py::test_y
(3 durations < 0.005s hidden.  Use -vv to show these durations.)
1 passed in 3.00s
"""


@dataclass
class Item:
    nodeid: str


def test_durations_lines_are_summed_per_test_and_per_module() -> None:
    tests = schedule.parse_durations(DURATIONS.splitlines())
    assert tests == {
        "tests/e2e/test_backup.py::test_dr_drill": 55.1,
        "tests/e2e/test_backup.py::test_holds": pytest.approx(18.51),
        "tests/mpc/test_dkg.py::test_x[a b]": 2.0,  # an id with a space in its parameter
        "tests/mpc/test_dkg.py::test_y": 1.0,
    }
    assert schedule.module_times(tests) == {
        "tests/e2e/test_backup.py": 73.61,
        "tests/mpc/test_dkg.py": 3.0,
    }


def test_unknown_modules_weigh_their_folders_median_or_the_longest_known() -> None:
    times = {"tests/mpc/a.py": 1.0, "tests/mpc/b.py": 3.0, "tests/mpc/c.py": 50.0}
    w = schedule.weights(["tests/mpc/a.py", "tests/mpc/new.py", "tests/lb/test_x.py"], times)
    # a new folder's module goes first (as long as the longest known)
    assert w == {"tests/mpc/a.py": 1.0, "tests/mpc/new.py": 3.0, "tests/lb/test_x.py": 50.0}
    assert schedule.weights(["tests/lb/test_x.py"], {}) == {"tests/lb/test_x.py": 60.0}


def test_items_are_ordered_by_module_longest_first_and_keep_their_order_inside() -> None:
    ids = ["tests/a.py::t1", "tests/b.py::t1", "tests/a.py::t2", "tests/c.py::t1"]
    items = [Item(i) for i in ids]
    schedule.order_items(items, {"tests/a.py": 1.0, "tests/b.py": 30.0, "tests/c.py": 1.0})
    # b first; a and c tie and keep collection order; a's two tests together, in order
    assert [i.nodeid for i in items] == [
        "tests/b.py::t1",
        "tests/a.py::t1",
        "tests/a.py::t2",
        "tests/c.py::t1",
    ]


def test_the_model_follows_xdists_rules() -> None:
    # one unit each, then one more to every worker with two tests or fewer pending
    assert schedule.simulate([("a", [5.0]), ("b", [1.0]), ("c", [1.0]), ("d", [1.0])]) == [
        6.0,
        2.0,
    ]
    # a worker with more than two tests pending takes nothing more until it is down to two
    ends = schedule.simulate([("a", [1.0] * 4), ("b", [9.0]), ("c", [1.0])])
    assert ends == [4.0, 10.0]  # a: 4 tests, then c went to b's worker (prefetched)


def test_longest_first_ends_the_workers_together_where_most_tests_first_does_not() -> None:
    """The suite's shape: many modules of many fast tests, a few cluster modules of a
    few long tests. xdist's default order (most tests first) leaves the cluster modules
    for the end; longest first balances them."""
    units = {f"tests/mpc/test_{i}.py": [0.1] * 40 for i in range(20)}  # 80 s in all
    units |= {"tests/e2e/test_a.py": [50.0], "tests/e2e/test_b.py": [30.0]}
    units |= {"tests/e2e/test_c.py": [20.0]}  # 100 s of cluster tests
    mods = list(units)
    most_tests = sorted(mods, key=lambda m: -len(units[m]))
    ours = schedule.longest_first(mods, {m: sum(v) for m, v in units.items()})
    default_ends = schedule.simulate([(m, units[m]) for m in most_tests])
    ours_ends = schedule.simulate([(m, units[m]) for m in ours])
    assert max(ours_ends) == pytest.approx(90.0)  # the ideal: 180 s on two workers
    # most tests first: both workers share the in-process modules, then one of them
    # runs the 50 s and the 20 s module while the other runs the 30 s one and idles
    assert max(default_ends) == pytest.approx(110.0)
    assert min(default_ends) == pytest.approx(70.0)


def test_the_times_file_names_existing_modules_with_positive_times() -> None:
    doc = json.loads(schedule.TIMES.read_text())
    root = Path(__file__).resolve().parents[2]
    assert doc["modules"], "tests/module_times.json is empty"
    for module, seconds in doc["modules"].items():
        assert seconds >= 0, module
        assert module.startswith("tests/") and module.endswith(".py"), module
    known = [m for m in doc["modules"] if (root / m).exists()]
    # modules get renamed and split: most, not all, must still exist
    assert len(known) >= 0.8 * len(doc["modules"]), sorted(set(doc["modules"]) - set(known))
