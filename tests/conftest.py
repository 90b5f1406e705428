"""Settings shared by every test package.

Hypothesis: no per-example deadline (CI runs on a loaded 2-core machine, where a slow
example is not a failure; performance is measured by the benchmarks), and every failure
prints the blob that reproduces it.

And no test or module reads a file beside the repository (see the audit hook below).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests import bytecode, schedule

settings.register_profile("custody", deadline=None, print_blob=True)
settings.load_profile("custody")

# the processes the session starts keep their bytecode (tests/bytecode.py)
bytecode.let_children_keep_bytecode()


# The repository stands alone: no test or module may open a file beside it (a sibling of
# the checkout, such as a design brief or vectors folder next to the clone). An audit hook
# refuses such an open, so the test that tried fails with the path in its message. Where
# the checkout sits among system paths (its parent holds the temp dir, the interpreter or
# the home directory, or is the filesystem root) the hook stays off and the static scan in
# tests/core/test_vectors_integrity.py is the check.
_ROOT = Path(__file__).resolve().parents[1]


def _guarded_zone() -> Path | None:
    parent = _ROOT.parent
    if parent == Path(parent.anchor):
        return None
    busy = [tempfile.gettempdir(), sys.prefix, sys.base_prefix, sys.exec_prefix, Path.home()]
    for place in busy:
        path = Path(place).resolve()
        if path.is_relative_to(parent) and not path.is_relative_to(_ROOT):
            return None
    return parent


GUARDED_ZONE = _guarded_zone()


def _refuse_sibling_paths(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or not args or not isinstance(args[0], str | bytes | os.PathLike):
        return
    raw = os.fsdecode(args[0])
    if not os.path.isabs(raw):
        raw = os.path.join(os.getcwd(), raw)
    path = Path(os.path.normpath(raw))
    if GUARDED_ZONE is not None and path.is_relative_to(GUARDED_ZONE):
        if not path.is_relative_to(_ROOT):
            raise PermissionError(f"a test opened {path}, outside the repository {_ROOT}")


sys.addaudithook(_refuse_sibling_paths)


# -- the order modules run in under pytest-xdist (tests/schedule.py) ------------------------
# scripts/test.sh runs ``-n 2 --dist loadfile --no-loadscope-reorder``: each worker takes
# whole modules from one queue, and this puts the longest modules (by tests/module_times.json)
# at its head, so the two workers end together. A serial run keeps the file order.


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # an xdist worker (its config says dist "no": the controller schedules); every worker
    # orders its collection the same way, so their collections still agree
    if os.environ.get("PYTEST_XDIST_WORKER"):
        schedule.order_items(items)


# -- modules that share one session fixture run as one unit (tests/schedule.SHARED_UNITS) --
# Under ``--dist loadfile`` every module is its own unit of work, so two modules sharing a
# session fixture may run on two workers and build it twice. This scheduler is xdist's
# loadfile one with the units of tests/schedule.py: a SHARED_UNITS entry's modules go to
# one worker together (every other module is its own unit, as before). ``--dist loadgroup``
# would not do: it makes every test without an ``xdist_group`` mark a unit of its own (a
# cluster module's tests spread over both workers, each building the cluster).


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # noqa: PLC0415 - only under xdist

    class SharedUnitScheduling(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return schedule.unit_of(nodeid)

    return SharedUnitScheduling(config, log)


# -- the multi-machine topology, one per worker (tests/lb/test_multi.py, tests/multi) -------


@pytest.fixture(scope="session")
def multi_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A :class:`tests.lb.conftest.SharedMulti`: one ``simulations.multi.Multi`` topology
    (PostgreSQL, mutual TLS, three nodes, two coordinators, HAProxy with TLS 1.3 for the
    clients) for every module that asks, built on first use; see tests/lb/conftest.py."""
    from tests.lb.conftest import SharedMulti  # noqa: PLC0415 - only where it is used

    shared = SharedMulti(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.close()
