#!/usr/bin/env bash
# The embedded demo: runs the example DAGs that need no cloud account with `airflow dags test`,
# on an SQLite ledger, and prints what each task cost. OpenLineage events go to a local file, or to
# Marquez when OPENLINEAGE_URL is set (e.g. OPENLINEAGE_URL=http://localhost:5000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib.sh

demo_home="${DEMO_HOME:-$PWD/.demo}"
rm -rf "$demo_home"
mkdir -p "$demo_home"
export AIRFLOW_HOME="$demo_home/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=airflow_cost_provider.openlineage.get_cost_run_facets
export AIRFLOW__COST_PROVIDER__LEDGER_CONN="sqlite:///$demo_home/cost_ledger.db"
# the SQLite file example_local_sql works in, given as an environment connection
export AIRFLOW_CONN_LOCAL_SQLITE="{\"conn_type\": \"sqlite\", \"host\": \"$demo_home/local_warehouse.db\"}"
if [ -n "${OPENLINEAGE_URL:-}" ]; then
  events="Marquez at $OPENLINEAGE_URL"
else
  export AIRFLOW__OPENLINEAGE__TRANSPORT="{\"type\": \"file\", \"log_file_path\": \"$demo_home/openlineage-events.jsonl\", \"append\": true}"
  events="$demo_home/openlineage-events.jsonl"
fi

echo "demo: preparing Airflow in $AIRFLOW_HOME"
uv run --frozen airflow db migrate >"$demo_home/airflow-db-migrate.log" 2>&1

for dag_id in $(uv run --frozen python scripts/demo_dags.py); do
  echo "demo: airflow dags test $dag_id"
  if ! uv run --frozen airflow dags test "$dag_id" >"$demo_home/$dag_id.log" 2>&1; then
    echo "demo: $dag_id did not succeed; see $demo_home/$dag_id.log" >&2
    exit 1
  fi
done

echo
echo "Cost per task ($AIRFLOW__COST_PROVIDER__LEDGER_CONN):"
uv run --frozen airflow-cost report --by task
echo
echo "Cost per source:"
uv run --frozen airflow-cost report --by source
echo
echo "Storage cost per usage class (example_storage_sample):"
uv run --frozen airflow-cost report storage --by usage-class
echo
echo "OpenLineage events with the costProvider_cost facet: $events"
