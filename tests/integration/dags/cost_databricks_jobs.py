"""Test DAG: the Databricks provider's own DatabricksSubmitRunOperator and DatabricksRunNowOperator
(normal and deferrable) and DatabricksHook, unchanged, against the fake workspace the tests start (the
databricks_default connection comes from the environment). Each run's name tells the fake its plan."""

from __future__ import annotations

import pendulum
from airflow.providers.databricks.operators.databricks import (
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from airflow.sdk import dag, task

NOTEBOOK = {"notebook_path": "/Repos/shop/features"}
INGEST_CLUSTER = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "m5.xlarge",
    "num_workers": 2,
    "custom_tags": {"team": "growth", "airflow_task_id": "mine"},
}
TRAIN_CLUSTER = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "i3.xlarge",
    "driver_node_type_id": "m5.2xlarge",
    "autoscale": {"min_workers": 2, "max_workers": 6},
}
SCORING_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.xlarge", "num_workers": 1}
# jobs defined in the workspace, started with run-now
ETL_JOB_ID = 101
MEMORY_JOB_ID = 102
ALL_PURPOSE_CLUSTER = "0101-090000-shared01"
JOBS = {
    ETL_JOB_ID: {
        "name": "shop_etl",
        "job_clusters": [
            {
                "job_cluster_key": "etl_cluster",
                "new_cluster": {
                    "spark_version": "15.4.x-scala2.12",
                    "node_type_id": "m5.2xlarge",
                    "num_workers": 3,
                },
            }
        ],
        "tasks": [
            {"task_key": "extract", "job_cluster_key": "etl_cluster", "notebook_task": NOTEBOOK},
            {"task_key": "load", "job_cluster_key": "etl_cluster", "notebook_task": NOTEBOOK},
            {"task_key": "report", "existing_cluster_id": ALL_PURPOSE_CLUSTER, "notebook_task": NOTEBOOK},
            {
                "task_key": "notify",
                "environment_key": "default",
                "spark_python_task": {"python_file": "n.py"},
            },
        ],
    },
    MEMORY_JOB_ID: {
        "name": "memory_heavy",
        "tasks": [
            {
                "task_key": "crunch",
                "new_cluster": {
                    "spark_version": "15.4.x-scala2.12",
                    "node_type_id": "r5.xlarge",
                    "num_workers": 2,
                },
                "notebook_task": NOTEBOOK,
            }
        ],
    },
}
CLUSTERS = {
    ALL_PURPOSE_CLUSTER: {
        "cluster_name": "shared analytics",
        "node_type_id": "m5.xlarge",
        "driver_node_type_id": "m5.xlarge",
        "num_workers": 4,
        "state": "RUNNING",
    }
}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_databricks_jobs():
    features = DatabricksSubmitRunOperator(
        task_id="submit_run",
        run_name="nightly_features",
        tasks=[
            {"task_key": "ingest", "new_cluster": INGEST_CLUSTER, "notebook_task": NOTEBOOK},
            {
                "task_key": "train",
                "depends_on": [{"task_key": "ingest"}],
                "new_cluster": TRAIN_CLUSTER,
                "notebook_task": NOTEBOOK,
            },
        ],
        polling_period_seconds=1,
    )
    scoring = DatabricksSubmitRunOperator(
        task_id="submit_run_deferrable",
        run_name="deferred_scoring",
        new_cluster=SCORING_CLUSTER,
        notebook_task=NOTEBOOK,
        deferrable=True,
        polling_period_seconds=1,
    )
    etl = DatabricksRunNowOperator(task_id="run_now", job_id=ETL_JOB_ID, polling_period_seconds=1)
    memory = DatabricksRunNowOperator(
        task_id="run_now_deferrable", job_id=MEMORY_JOB_ID, deferrable=True, polling_period_seconds=1
    )

    @task
    def lookup_fails() -> int:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        # no run_name: the run is named after the task; nothing here waits for it
        return DatabricksHook().submit_run(
            {"tasks": [{"task_key": "once", "new_cluster": SCORING_CLUSTER, "notebook_task": NOTEBOOK}]}
        )

    @task
    def lookup_times_out() -> int:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        return DatabricksHook().submit_run(
            {
                "run_name": "slow_lookup",
                "tasks": [{"task_key": "once", "new_cluster": SCORING_CLUSTER, "notebook_task": NOTEBOOK}],
            }
        )

    features >> scoring >> etl >> memory >> lookup_fails() >> lookup_times_out()


cost_databricks_jobs()
