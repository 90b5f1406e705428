#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow studies in their short form.
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
# dirs, session templates, PostgreSQL server and SoftHSM2 binding
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
