#!/usr/bin/env bash
# Set up (scripts/setup.sh), start a local 3-node cluster and run the signing demo on it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/custody demo "$@"
