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

# The PostgreSQL pass: every coordinator these tests build gets a fresh database on a real
# PostgreSQL server the tests start (tests/pg.py; CUSTODY_TEST_DATABASE=postgresql). The
# selection is the part of tests/api whose coordinators are built in-process and read and
# write its database (requests, idempotency, credentials, webhooks outbox, policy shadow,
# outcomes, SDK errors); the rest of tests/api drives nodes or processes over HTTP and adds
# nothing database-specific, and tests/api/test_migrations.py and test_postgres.py ran on
# PostgreSQL in the first pass already. The full tests/api passes on PostgreSQL too:
# CUSTODY_TEST_DATABASE=postgresql .venv/bin/python -m pytest tests/api (docs/OPERATIONS.md:
# ~7 min on either backend here; this selection ~2 min, what the second pass adds).
PG_SELECTION=(
  tests/api/test_sign_requests.py tests/api/test_credentials.py tests/api/test_webhooks.py
  tests/api/test_policy_dryrun.py tests/api/test_auth_problems.py tests/api/test_http_semantics.py
  tests/api/test_sdk_errors.py tests/api/coordinator/test_outcomes.py
  # these three run a node cluster whose coordinator keeps its SQLite file (tests/e2e)
  --deselect tests/api/test_http_semantics.py::test_two_nodes_down_fails_and_the_same_key_signs_once_they_are_back
  --deselect tests/api/test_http_semantics.py::test_the_coordinator_sweeps_expired_idempotency_records
  --deselect tests/api/test_http_semantics.py::test_labels_at_creation_and_in_the_cli
)
if [ "${CUSTODY_REQUIRE_POSTGRES:-0}" = 1 ] || command -v initdb >/dev/null 2>&1 \
  || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "==> tests: the coordinator on PostgreSQL (CUSTODY_TEST_DATABASE=postgresql)"
  CUSTODY_TEST_DATABASE=postgresql exec .venv/bin/python -m pytest -q "${XDIST[@]}" "${PG_SELECTION[@]}"
fi
echo "==> PostgreSQL is not installed: its pass is skipped (CI installs it: .ci/run)"
