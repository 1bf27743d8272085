#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then real `airflow dags test` runs and a real PostgreSQL
# server started by the suite. Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test-servers
export PATH="$HOME/.local/bin:$PATH" UV_PYTHON_DOWNLOADS=never
exec uv run --frozen pytest "$@"
