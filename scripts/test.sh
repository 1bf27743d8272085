#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then real `airflow dags test` runs and a real PostgreSQL
# server started by the suite. Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test-servers
source scripts/lib.sh
uv run --frozen pytest "$@"
