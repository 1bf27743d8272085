#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: uv (see scripts/lib.sh), the locked Python
# environment in .venv, and (for the tests) every provider extra and the Debian packages the test
# suite needs. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test_servers=0
[ "${1:-}" = "--test-servers" ] && with_test_servers=1

source scripts/lib.sh

if [ "$with_test_servers" = 1 ]; then
  # The tests start their own PostgreSQL, MariaDB and Redis servers; mysqlclient (the MySQL
  # provider's driver) compiles against MariaDB's client headers and the interpreter's own headers.
  missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  dpkg -s libmariadb-dev >/dev/null 2>&1 || missing+=(libmariadb-dev)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc)
  # the Costs page test drives a headless Chromium through Selenium and Debian's chromedriver
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if ! python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    # only Debian's own interpreter lacks its headers; they are in python3-dev
    missing+=(python3-dev)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    _as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # every provider extra: the tests drive each provider's own hooks and operators
  uv sync --frozen --quiet --all-extras
  # focus-validator checks the FOCUS export; it needs Python >= 3.12 and its own environment
  # (.tools/focus-validator), made here from the machine's Python so the test does not wait for it
  if [ ! -x .tools/focus-validator/bin/focus-validator ]; then
    echo "setup: installing focus-validator into .tools/focus-validator"
    UV="$UV_BIN" .venv/bin/python -c 'from tests.support.focus_validator import validator_binary; validator_binary()' \
      || echo "setup: focus-validator not installed (it needs a python3.12 or python3.13); its test will fail" >&2
  fi
  # dbt (dbt-core, dbt-duckdb, dbt-postgres) for the dbt tests: its own environment (.tools/dbt), as
  # its pins fight Airflow's; the provider only reads the artifacts dbt writes
  if [ ! -x .tools/dbt/bin/dbt ]; then
    echo "setup: installing dbt into .tools/dbt"
    UV="$UV_BIN" .venv/bin/python -m tests.support.dbt_tool >/dev/null \
      || echo "setup: dbt not installed; the dbt tests will fail" >&2
  fi
else
  uv sync --frozen --quiet --inexact
fi
