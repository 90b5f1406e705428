#!/usr/bin/env bash
# Set up (scripts/setup.sh), then `custody demo`: it starts a local cluster (coordinator, 3 nodes
# and the payment service, as `custody up --with-payments`) unless one runs, signs with every
# scheme, shows the demo policy, then payments flowing end to end (README: Two commands).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/custody demo "$@"
