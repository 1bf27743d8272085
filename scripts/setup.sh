#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: uv, the locked Python environment, and (for the
# tests) the PostgreSQL server binaries. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test_servers=0
[ "${1:-}" = "--test-servers" ] && with_test_servers=1

source scripts/lib.sh
if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet --user "uv>=0.5" 2>/dev/null || python3 -m pip install --quiet "uv>=0.5"
fi

if [ "$with_test_servers" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "setup: installing the PostgreSQL server (Debian package postgresql)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
fi

uv sync --frozen --quiet
