#!/usr/bin/env bash
# Set up a fresh machine: system packages (SoftHSM2), a virtualenv in .venv, the project.
# Idempotent; safe to run again. Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "==> installing softhsm2 (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2 >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing the project and its test tools into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "==> ready: $(.venv/bin/python --version), softhsm2 $(softhsm2-util --version)"
