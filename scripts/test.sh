#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then real `airflow dags test` runs and a real PostgreSQL
# server started by the suite. Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test-servers
source scripts/lib.sh
# Two test processes (TEST_PROCESSES, or -n N / -n 0 among the arguments): most of the suite's time is
# `airflow dags test` subprocesses and servers; each process starts its own servers and Airflow home,
# and a test file stays in one process, so its module fixtures are shared as before.
uv run --frozen pytest -n "${TEST_PROCESSES:-2}" --dist loadfile "$@"
