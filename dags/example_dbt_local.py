"""dbt on DuckDB: a BashOperator runs `dbt build` on the small project in dags/dbt/cost_demo (a seed,
views, a table, an incremental model, data tests), no cloud account needed.

Cost: at the task's end the cost listener reads the run's `run_results.json` and `manifest.json`
and records one line per model, seed and test, with its unique id, relation, materialization and
status. DuckDB runs inside dbt's process, so its statements have no price of their own: they are
listed under `unpriced` with that reason, never as zero, and what they cost is the task's worker
compute (dbt's process is a child the task waits for). On PostgreSQL, BigQuery, Snowflake, ... the
same lines are priced as those sources' statements are (README, "dbt: cost per model"). Every
statement dbt sends ends in a sqlcommenter comment naming the node and this task try
(macros/cost_provider_query_comment.sql).

Reuse: the first run builds everything; later runs build only what changed since the last run
(`--select state:modified+ --state`, offline) and the nodes they leave out are recorded as reused:
`airflow-cost report savings` shows what that saved once their builds have a price.

dbt lives in its own environment (its pins fight Airflow's): `.tools/dbt` of this checkout, made by
scripts/setup.sh --test-servers and by scripts/demo.sh, or the `dbt` that DBT_BIN names. The DuckDB
file, dbt's target folder and the state of the last run are kept under $AIRFLOW_HOME/dbt_cost_demo.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag

PROJECT = Path(__file__).resolve().parent / "dbt" / "cost_demo"
DBT = os.environ.get("DBT_BIN") or str(Path(__file__).resolve().parents[1] / ".tools" / "dbt" / "bin" / "dbt")
WORK = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "dbt_cost_demo"


def dbt_build_command() -> str:
    project, work, dbt = (shlex.quote(str(p)) for p in (PROJECT, WORK, DBT))
    return f"""
set -euo pipefail
mkdir -p {work}/state
export DBT_DUCKDB_PATH={work}/warehouse.duckdb
selection=""
# after a first build, only what changed since the last run: the rest is reused
if [ -f {work}/state/manifest.json ]; then selection="--select state:modified+ --state {work}/state"; fi
{dbt} build --project-dir {project} --profiles-dir {project} --target-path {work}/target --log-path {work}/logs $selection
cp {work}/target/manifest.json {work}/state/manifest.json
"""


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "local", "dbt"],
)
def example_dbt_local():
    BashOperator(
        task_id="dbt_build",
        bash_command=dbt_build_command(),
        # dbt runs offline: no usage statistics, no version check
        env={"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1", "DBT_VERSION_CHECK": "false"},
        append_env=True,
    )


example_dbt_local()
