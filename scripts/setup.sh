#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: uv, the locked Python environment, and (for the
# tests) every provider extra and the PostgreSQL and MariaDB server packages. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test_servers=0
[ "${1:-}" = "--test-servers" ] && with_test_servers=1

source scripts/lib.sh
if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet --user "uv>=0.5" 2>/dev/null || python3 -m pip install --quiet "uv>=0.5"
fi

# The tests start their own PostgreSQL and MariaDB servers; mysqlclient (the MySQL provider's driver)
# builds against MariaDB's client headers.
if [ "$with_test_servers" = 1 ]; then
  missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
  dpkg -s libmariadb-dev >/dev/null 2>&1 || missing+=(libmariadb-dev)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # every provider extra: the tests drive each provider's own hooks and operators
  uv sync --frozen --quiet --all-extras
else
  uv sync --frozen --quiet --inexact
fi
