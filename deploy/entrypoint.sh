#!/bin/sh
# The compose services' entrypoint (docs/DEPLOY.md), run as uid 10001 in the image:
#   entrypoint.sh init | enrol | node N | coordinator [DIR] | lb
# (coordinator DIR: its data directory ROOT/DIR, default "coordinator"; coordinator-2 runs
# on its own, ROOT/coordinator-2: its own sealed key and TLS client certificate, issue 14)
# The same commands `custody up` (custody/cluster.py) and simulations/multi.py run, with the
# compose host names, TLS everywhere and no --dev flag.
set -eu
ROOT=${CUSTODY_DEPLOY_ROOT:-/srv}
SECRETS=${CUSTODY_SECRETS_DIR:-/run/secrets}
GENESIS=${CUSTODY_GENESIS:-/governance/v1.gov}
API_PORT=${CUSTODY_API_PORT:-7100}
# where a service listens (compose: every interface of its own container, its own port)
LISTEN_HOST=${CUSTODY_LISTEN_HOST:-0.0.0.0}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
umask 077

# PostgreSQL: the URL is built here from the password secret (never in the environment of
# the compose file, never in the image); hex passwords need no URL quoting
if [ -r "$SECRETS/pg_password" ]; then
  CUSTODY_DATABASE_URL="postgresql+psycopg://custody:$(cat "$SECRETS/pg_password")@${CUSTODY_PG_HOST:-postgres}:5432/custody"
  export CUSTODY_DATABASE_URL
fi

role=${1:?usage: entrypoint.sh init|enrol|node N|coordinator|lb}
case "$role" in
  init|enrol)
    exec "$PYTHON" "$HERE/provision.py" "$role"
    ;;
  node)
    i=${2:?usage: entrypoint.sh node N}
    d="$ROOT/node-$i"
    pin="$SECRETS/node_${i}_pin"
    "$PYTHON" "$HERE/provision.py" wait-governance
    # the genesis is installed once; later versions come through the coordinator
    if [ ! -e "$d/.genesis-installed" ]; then
      "$PYTHON" -m signer_nodes trust --data-dir "$d" --governance "$GENESIS" --pin-file "$pin"
      touch "$d/.genesis-installed"
    fi
    exec "$PYTHON" -m signer_nodes run --data-dir "$d" --host "$LISTEN_HOST" --port $((API_PORT + i)) --pin-file "$pin"
    ;;
  coordinator)
    d="$ROOT/${2:-coordinator}"
    "$PYTHON" "$HERE/provision.py" wait-governance
    if [ ! -e "$d/.genesis-installed" ]; then
      "$PYTHON" -m api trust --data-dir "$d" --governance "$GENESIS"
      touch "$d/.genesis-installed"
    fi
    exec "$PYTHON" -m api serve --data-dir "$d" --host "$LISTEN_HOST" --port "${CUSTODY_LISTEN_PORT:-$API_PORT}"
    ;;
  lb)
    # Debian's haproxy, the configuration simulations/haproxy.py renders (compose_config)
    exec haproxy -db -f "$HERE/haproxy.cfg"
    ;;
  *)
    echo "entrypoint.sh: unknown role $role (init, enrol, node N, coordinator, lb)" >&2
    exit 2
    ;;
esac
