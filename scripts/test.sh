#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow studies in their short form.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CUSTODY_SLOW_SHORT=1
echo "==> lint: ruff, mypy (strict on mpc/)"
.venv/bin/ruff check .
.venv/bin/mypy mpc hsm api custody
# signer_nodes lives in signer-nodes/ (a hyphen): give mypy a correctly named link to it.
link_dir=$(mktemp -d) && ln -s "$PWD/signer-nodes" "$link_dir/signer_nodes"
MYPYPATH="$link_dir" .venv/bin/mypy -p signer_nodes
rm -rf "$link_dir"
echo "==> tests"
exec .venv/bin/python -m pytest -q "$@"
