#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow studies in their short form;
# then the coordinator's database-touching tests a second time on PostgreSQL (below).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CUSTODY_SLOW_SHORT=1
echo "==> lint: ruff (check, format), mypy (every service package; strict on mpc/; see pyproject.toml)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "==> tests (two workers, one per core; a module's tests stay on one worker)"
# -n 2 --dist loadfile (pytest-xdist): the serial run kept one core idle through every
# in-process test (docs/PERFORMANCE.md "Test suite time"); each worker has its own temp
# dirs, PostgreSQL server and SoftHSM2 binding (the provisioned cluster templates are one
# per run, tests/e2e/conftest.py). --no-loadscope-reorder: the modules are queued longest
# first by tests/module_times.json (tests/schedule.py), not most tests first, so the two
# workers end together instead of one finishing the cluster modules alone.
XDIST=(-n 2 --dist loadfile --no-loadscope-reorder --durations=40)  # the 40 slowest, for review
if [ "$#" -gt 0 ]; then  # a chosen selection: that, once, on SQLite
  exec .venv/bin/python -m pytest -q "${XDIST[@]}" "$@"
fi
.venv/bin/python -m pytest -q "${XDIST[@]}"

# The PostgreSQL pass: the whole of tests/api again, every coordinator those tests build on
# a fresh database of its own on a real PostgreSQL server the tests start (tests/pg.py;
# CUSTODY_TEST_DATABASE=postgresql): the in-process ones (tests/api/conftest.py make_api),
# the served processes (coordinator_env) and the node clusters' coordinators, whose copied
# SQLite rows go to a database made from a per-worker template (tests/pg.py
# cluster_database_env). What opens SQLite itself has its PostgreSQL twin there (the audit
# tampering through psycopg, the held write lock as a table lock); no test is deselected.
# tests/api/test_migrations.py and test_postgres.py run on both backends in either pass.
PG_SELECTION=(tests/api)
if [ "${CUSTODY_REQUIRE_POSTGRES:-0}" = 1 ] || command -v initdb >/dev/null 2>&1 \
  || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "==> tests: the coordinator on PostgreSQL (CUSTODY_TEST_DATABASE=postgresql)"
  CUSTODY_TEST_DATABASE=postgresql exec .venv/bin/python -m pytest -q "${XDIST[@]}" "${PG_SELECTION[@]}"
fi
echo "==> PostgreSQL is not installed: its pass is skipped (CI installs it: .ci/run)"
