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
echo "==> tests"
exec .venv/bin/python -m pytest -q "$@"
