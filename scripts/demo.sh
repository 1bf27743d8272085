#!/usr/bin/env bash
# The embedded demo: runs the example DAGs that need no cloud account with `airflow dags test`,
# on an SQLite ledger, and prints what each task cost. OpenLineage events go to a local file, or to
# Marquez when OPENLINEAGE_URL is set (e.g. OPENLINEAGE_URL=http://localhost:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# example_dbt_local runs dbt from its own environment, .tools/dbt (its pins fight Airflow's)
if [ ! -x .tools/dbt/bin/dbt ]; then
  source scripts/lib.sh
  echo "demo: installing dbt into .tools/dbt"
  UV="$UV_BIN" .venv/bin/python -m tests.support.dbt_tool >/dev/null
fi

demo_home="${DEMO_HOME:-$PWD/.demo}"
rm -rf "$demo_home"
mkdir -p "$demo_home"
demo_home="$(cd "$demo_home" && pwd)"
export AIRFLOW_HOME="$demo_home/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=airflow_cost_provider.openlineage.get_cost_run_facets
export AIRFLOW__COST_PROVIDER__LEDGER_CONN="sqlite:///$demo_home/cost_ledger.db"
# the SQLite file example_local_sql works in, given as an environment connection
export AIRFLOW_CONN_LOCAL_SQLITE="{\"conn_type\": \"sqlite\", \"host\": \"$demo_home/local_warehouse.db\"}"
if [ -n "${OPENLINEAGE_URL:-}" ]; then
  events="sent to Marquez at $OPENLINEAGE_URL"
else
  export AIRFLOW__OPENLINEAGE__TRANSPORT="{\"type\": \"file\", \"log_file_path\": \"$demo_home/openlineage-events.jsonl\", \"append\": true}"
  events="$demo_home/openlineage-events.jsonl"
fi

echo "demo: preparing Airflow in $AIRFLOW_HOME"
"$PWD/.venv/bin/airflow" db migrate >"$demo_home/airflow-db-migrate.log" 2>&1

for dag_id in $("$PWD/.venv/bin/python" scripts/demo_dags.py); do
  echo "demo: airflow dags test $dag_id"
  if ! "$PWD/.venv/bin/airflow" dags test "$dag_id" >"$demo_home/$dag_id.log" 2>&1; then
    echo "demo: $dag_id did not succeed; see $demo_home/$dag_id.log" >&2
    exit 1
  fi
done

# The reports run exactly as the commands printed at the end, which work from any folder and shell.
cost_cli="$PWD/.venv/bin/airflow-cost"
ledger="$AIRFLOW__COST_PROVIDER__LEDGER_CONN"
show() {
  echo
  echo "\$ airflow-cost $*"
  "$cost_cli" "$@"
}
show report --ledger "$ledger" --by task --wide
show report --ledger "$ledger" --by source
echo
echo "(example_storage_sample imports synthetic billing exports it writes itself: made-up buckets, not a bill)"
show report storage --ledger "$ledger" --by usage-class
echo
echo "(example_reconcile_sample bills today's worker time in a made-up bill, about a quarter of two instances, and reconciles it)"
show report coverage --ledger "$ledger" --by resource --since "$(date -u +%Y-%m-%d)"

cat <<END

See these reports again, from any folder and in a new shell:
  $cost_cli report --ledger $ledger --by task
  $cost_cli report --ledger $ledger --by dag,day
  $cost_cli report storage --ledger $ledger --by resource
  $cost_cli report coverage --ledger $ledger --by resource
  $cost_cli report --help
Export them as a FOCUS 1.2 file for FinOps tools:
  $cost_cli export --format focus --ledger $ledger --output $demo_home/costs-focus.csv
Or put airflow-cost on your PATH first: source $PWD/.venv/bin/activate

OpenLineage events, each task run's with the costProvider_cost facet: $events
Logs: $demo_home/<dag_id>.log for each DAG run; Airflow's own in $AIRFLOW_HOME/logs
END

# The Costs page lives in an Airflow API server: name it with AIRFLOW_API_URL, or one answering on
# localhost:${AIRFLOW_PORT:-8080} (docker compose's) is found. The demo never starts one.
api_url="${AIRFLOW_API_URL:-http://localhost:${AIRFLOW_PORT:-8080}}"
api_url="${api_url%/}"
if "$PWD/.venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/api/v2/monitor/health", timeout=3)' "$api_url" 2>/dev/null; then
  cat <<END

The Costs page of the Airflow API server at $api_url (it shows that server's ledger,
its [cost_provider] ledger_conn): $api_url/plugin/costs in Airflow's UI, or $api_url/cost/ alone
END
else
  cat <<END

The Costs page needs an Airflow API server (none answers at $api_url; AIRFLOW_API_URL names
another). To see this demo's ledger there, start one in a new shell, then open
http://localhost:8080/plugin/costs (Airflow's UI, "Costs" in its navigation) or http://localhost:8080/cost/:
  AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER=$AIRFLOW__CORE__DAGS_FOLDER \\
  AIRFLOW__COST_PROVIDER__LEDGER_CONN=$ledger \\
  AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True $PWD/.venv/bin/airflow api-server --port 8080
END
fi
