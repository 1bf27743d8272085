"""dbt through Astronomer Cosmos: the cost_demo project (dags/dbt/cost_demo: a seed, views, a table,
an incremental model, data tests) on DuckDB, as two DAGs, no cloud account needed.

- `example_dbt_cosmos` (ExecutionMode.LOCAL): a task per seed and model, each running
  `dbt build --select <node>` (the model and its tests, TestBehavior.BUILD).
- `example_dbt_cosmos_watcher` (ExecutionMode.WATCHER): one producer task runs `dbt build` for the
  whole project; a sensor per seed and model reports its node's outcome.

Cost: Cosmos runs dbt in a temporary copy of the project, removed when the task's operator returns;
the cost listener reads dbt's `run_results.json` and `manifest.json` there as soon as dbt exits, and
records one line per node that ran, with its unique id, relation, materialization and status, in the
try of the task that ran dbt: each LOCAL task gets its own nodes, the WATCHER producer gets every
node, the sensors none (nothing is counted twice). DuckDB runs inside dbt's process, so its lines are
unpriced with that reason (never zero) and what they cost is the task's worker compute; on PostgreSQL,
BigQuery, Snowflake, ... they are priced as in a bash task (README, "dbt: cost per model"). Every
statement dbt sends ends in a comment naming the node and the task try
(macros/cost_provider_query_comment.sql).

dbt lives in its own environment (its pins fight Airflow's): Cosmos runs `.tools/dbt/bin/dbt` of this
checkout (or the `dbt` that DBT_BIN names) as a subprocess. The DAGs parse without running dbt
(LoadMode.CUSTOM: Cosmos reads the project's files). Each DAG keeps its DuckDB file in $AIRFLOW_HOME.
`DBT_TARGET=postgres` (with the DBT_POSTGRES_* variables of profiles.yml) builds on PostgreSQL instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

PROJECT = Path(__file__).resolve().parent / "dbt" / "cost_demo"
DBT = os.environ.get("DBT_BIN") or str(Path(__file__).resolve().parents[1] / ".tools" / "dbt" / "bin" / "dbt")
HOME = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
# dbt runs offline: no usage statistics, no version check
OFFLINE = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1", "DBT_VERSION_CHECK": "false"}


def cosmos_dag(dag_id: str, mode: ExecutionMode, tests: TestBehavior, **operator_args) -> DbtDag:
    return DbtDag(
        dag_id=dag_id,
        project_config=ProjectConfig(PROJECT),
        profile_config=ProfileConfig(
            profile_name="cost_demo",
            target_name=os.environ.get("DBT_TARGET", "duckdb"),
            profiles_yml_filepath=PROJECT / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=mode, invocation_mode=InvocationMode.SUBPROCESS, dbt_executable_path=DBT
        ),
        render_config=RenderConfig(load_method=LoadMode.CUSTOM, test_behavior=tests),
        operator_args={
            "install_deps": False,
            "env": {**OFFLINE, "DBT_DUCKDB_PATH": str(HOME / f"{dag_id}.duckdb")},
            **operator_args,
        },
        schedule="@daily",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        doc_md=__doc__,
        tags=["cost-provider", "example", "dbt", "cosmos"],
    )


example_dbt_cosmos = cosmos_dag("example_dbt_cosmos", ExecutionMode.LOCAL, TestBehavior.BUILD)
# Cosmos starts the first sensors beside the producer (trigger rule "always") so they follow the build
# live; `airflow dags test` runs one task at a time, and a sensor started before the producer would
# wait for it for ever. Here they start once the producer is done (drop this under a scheduler).
example_dbt_cosmos_watcher = cosmos_dag(
    "example_dbt_cosmos_watcher", ExecutionMode.WATCHER, TestBehavior.AFTER_EACH, trigger_rule="all_done"
)
