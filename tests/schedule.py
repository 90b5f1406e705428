"""The order test modules run in under pytest-xdist, from their measured times.

``scripts/test.sh`` runs the suite on two workers with ``--dist loadfile``: each module is
one unit of work and stays on one worker (its module fixtures, its cluster). xdist hands
the units out in queue order, one more to a worker whenever it has two tests or fewer left,
and by default (``--loadscope-reorder``) queues the modules with the most tests first. That
puts the cheap in-process modules (hundreds of parametrized cases) first and the cluster
modules (a handful of tests, 20-120 s each) last, so the run ends with one worker finishing
a long module while the other idles. Here the suite runs with ``--no-loadscope-reorder``
and :func:`order_items` (called from tests/conftest.py under xdist) queues the modules
longest first (the LPT rule: the last units handed out are the shortest, so the two
workers end close together).

The times are ``tests/module_times.json``: seconds per module (setup + call + teardown of
each of its tests, module fixtures included) from one run's ``--durations=0``. A module not
in it weighs its folder's median; a module of a folder not in it weighs as much as the
longest module known (new folders are mostly cluster tests: they go first, which costs
nothing if they turn out short: only the modules handed out last decide how far apart the
workers end). The order changes no test and no fixture: only which module a worker takes
next. Every worker computes the same order from the same file, so their collections agree.

Refresh the times from a run (``-n 2 --dist loadfile --durations=0 --durations-min=0``,
output saved to a file) and check the schedule they predict::

    python -m tests.schedule update run.txt          # writes tests/module_times.json
    python -m tests.schedule update --merge part.txt # only the modules a partial run measured
    python -m tests.schedule simulate run.txt        # predicted wall: xdist's order vs this
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

TIMES = Path(__file__).with_name("module_times.json")
#: The weight of a module of a new folder when the times file is empty (seconds).
NEW_FOLDER = 60.0

_LINE = re.compile(r"^\s*(?P<s>\d+(?:\.\d+)?)s (?P<phase>setup|call|teardown)\s+(?P<id>\S.*?)\s*$")


#: Modules that share one session fixture run as ONE unit of work (one worker, in this
#: order): under ``--dist loadfile`` two modules are two units and may land on two workers,
#: each then building the fixture. ``multi_topology`` (tests/conftest.py): the whole
#: multi-machine topology (PostgreSQL, TLS, HAProxy, three nodes, two coordinators);
#: tests/e2e/test_coordinator_identities.py retires coordinator-2 and re-pins it when it
#: ends; tests/lb/test_multi.py goes last, its last test stops the topology. ``shared_live``
#: (tests/e2e/conftest.py): the session's one running 3-node cluster of the modules that
#: only make their own keys and sign.
SHARED_UNITS: dict[str, tuple[str, ...]] = {
    "multi-topology": (
        "tests/multi/test_chaos.py",
        "tests/e2e/test_coordinator_identities.py",
        "tests/lb/test_multi.py",
    ),
    "e2e-shared-cluster": (
        "tests/e2e/test_approve_cli.py",
        "tests/e2e/test_ceremony_offline.py",
        "tests/e2e/test_kinds.py",
    ),
}
_UNIT_OF = {m: unit for unit, mods in SHARED_UNITS.items() for m in mods}


def module_of(nodeid: str) -> str:
    """``tests/e2e/test_backup.py`` of ``tests/e2e/test_backup.py::test_x[a]``."""
    return nodeid.split("::", 1)[0]


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the name of the
    :data:`SHARED_UNITS` entry its module is in (the scheduler's ``_split_scope``)."""
    module = module_of(nodeid)
    return _UNIT_OF.get(module, module)


def parse_durations(lines: Iterable[str]) -> dict[str, float]:
    """Seconds per test id (its setup + call + teardown) from pytest's ``--durations``
    report lines (``12.34s call     tests/x.py::test_y``); other lines are skipped."""
    out: dict[str, float] = {}
    for line in lines:
        m = _LINE.match(line)
        if m:
            out[m["id"]] = out.get(m["id"], 0.0) + float(m["s"])
    return out


def module_times(tests: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for nodeid, s in tests.items():
        out[module_of(nodeid)] = out.get(module_of(nodeid), 0.0) + s
    return {m: round(s, 2) for m, s in sorted(out.items())}


def load_times(path: Path = TIMES) -> dict[str, float]:
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {str(m): float(s) for m, s in doc["modules"].items()}


def weights(modules: Sequence[str], times: Mapping[str, float]) -> dict[str, float]:
    """Each module's expected seconds: measured, else its folder's median, else (a new
    folder) the longest known module's (:data:`NEW_FOLDER` if none is known)."""
    by_folder: dict[str, list[float]] = {}
    for m, s in times.items():
        by_folder.setdefault(m.rsplit("/", 1)[0], []).append(s)
    longest = max(times.values(), default=NEW_FOLDER)
    out = {}
    for m in modules:
        folder = by_folder.get(m.rsplit("/", 1)[0])
        out[m] = times.get(m, statistics.median(folder) if folder else longest)
    return out


def longest_first(modules: Sequence[str], times: Mapping[str, float]) -> list[str]:
    """``modules`` (in collection order) ordered by expected time, longest first; ties
    keep collection order."""
    w = weights(modules, times)
    return sorted(modules, key=lambda m: -w[m])  # sorted() is stable


def unit_times(times: Mapping[str, float], modules: Sequence[str]) -> dict[str, float]:
    """``times`` with every :data:`SHARED_UNITS` entry one of ``modules`` falls in added
    as one more entry: the sum of its modules' weights."""
    out = dict(times)
    w = weights(modules, times)
    for m in modules:
        unit = _UNIT_OF.get(m)
        if unit is not None:
            out[unit] = out.get(unit, 0.0) + w[m]
    return out


def order_items(items: list[Any], times: Mapping[str, float] | None = None) -> None:
    """Reorder pytest ``items`` in place: whole units (a module, or a :data:`SHARED_UNITS`
    entry's modules one after the other in its order), longest first; items of a module
    keep their order and stay together."""
    groups: dict[str, list[Any]] = {}
    for it in items:
        groups.setdefault(module_of(it.nodeid), []).append(it)
    known = load_times() if times is None else times
    units: dict[str, list[str]] = {}
    for m in groups:
        units.setdefault(_UNIT_OF.get(m, m), []).append(m)
    for unit, mods in units.items():
        if unit in SHARED_UNITS:
            mods.sort(key=SHARED_UNITS[unit].index)
    order = longest_first(list(units), unit_times(known, list(groups)))
    items[:] = [it for u in order for m in units[u] for it in groups[m]]


# -- a model of xdist's loadfile scheduler -------------------------------------------------


def simulate(units: Sequence[tuple[str, Sequence[float]]], workers: int = 2) -> list[float]:
    """When each worker ends, for ``units`` (module, its tests' seconds) queued in this
    order, under xdist's LoadScope rules (``xdist/scheduler/loadscope.py``): each worker
    takes one unit, then one more whenever it has two tests or fewer pending, until the
    queue is empty. Start-up, collection and messages take no time here."""
    queue = list(units)
    pending: list[list[float]] = [[] for _ in range(workers)]
    clock = [0.0] * workers

    def assign(w: int) -> None:
        if queue:
            pending[w].extend(queue.pop(0)[1])

    for w in range(workers):
        assign(w)
    for w in range(workers):
        if len(pending[w]) <= 2:
            assign(w)
    events = [(0.0, w) for w in range(workers)]
    heapq.heapify(events)
    while events:
        _, w = heapq.heappop(events)
        if not pending[w]:
            continue
        clock[w] += pending[w].pop(0)
        if len(pending[w]) <= 2:
            assign(w)
        heapq.heappush(events, (clock[w], w))
    return clock


def _units(tests: Mapping[str, float], order: Sequence[str]) -> list[tuple[str, list[float]]]:
    by: dict[str, list[float]] = {}
    for nodeid, s in tests.items():
        by.setdefault(unit_of(nodeid), []).append(s)
    return [(m, by[m]) for m in order]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.schedule")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("update", help="write tests/module_times.json from --durations=0 output")
    up.add_argument("durations", nargs="+", type=Path)
    up.add_argument(
        "--merge",
        action="store_true",
        help="keep the modules the runs did not measure (a run of some folders only)",
    )
    sim = sub.add_parser("simulate", help="predicted wall time of a run's modules, two orders")
    sim.add_argument("durations", nargs="+", type=Path)
    sim.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    tests: dict[str, float] = {}
    for f in args.durations:
        tests.update(parse_durations(f.read_text().splitlines()))
    if not tests:
        print("no --durations lines found (run with --durations=0 --durations-min=0)")
        return 1
    if args.cmd == "update":
        measured = module_times(tests)
        kept = load_times() if args.merge else {}
        doc = {
            "about": "seconds per test module (setup + call + teardown of its tests), from "
            "--durations=0; tests/schedule.py orders the modules longest first under xdist",
            "modules": dict(sorted({**kept, **measured}.items())),
        }
        TIMES.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{TIMES}: {len(doc['modules'])} modules, {sum(tests.values()):.0f} s")
        return 0
    mods = list(dict.fromkeys(unit_of(t) for t in tests))
    counts = {m: sum(1 for t in tests if unit_of(t) == m) for m in mods}
    xdist_default = sorted(mods, key=lambda m: -counts[m])  # --loadscope-reorder
    per_module = module_times(tests)
    ours = longest_first(mods, unit_times(per_module, list(per_module)))
    total = sum(tests.values())
    print(f"{len(tests)} tests, {len(mods)} modules, {total:.0f} s of test time")
    print(f"ideal ({args.workers} workers): {total / args.workers:.0f} s")
    for name, order in (
        ("xdist default (most tests first)", xdist_default),
        ("longest first", ours),
    ):
        ends = simulate(_units(tests, order), args.workers)
        print(f"{name}: workers end at {', '.join(f'{e:.0f}' for e in ends)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
