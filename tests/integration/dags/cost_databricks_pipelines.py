"""Test DAG: updates of Lakeflow Declarative Pipelines (Delta Live Tables) started through the
Databricks provider, unchanged: a `pipeline_task` run with DatabricksSubmitRunOperator, a workspace job
holding a pipeline task with DatabricksRunNowOperator, and DatabricksHook.submit_run on a pipeline that
does not exist, against the fake workspace the tests start."""

from __future__ import annotations

import pendulum
from airflow.providers.databricks.operators.databricks import (
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from airflow.sdk import dag, task

CLASSIC_PIPELINE = "a3b1c2d4-1111-4000-8000-000000000001"
SERVERLESS_PIPELINE = "b4c2d3e5-2222-4000-8000-000000000002"
MISSING_PIPELINE = "c5d3e4f6-3333-4000-8000-000000000003"
PIPELINES = {
    CLASSIC_PIPELINE: {
        "name": "orders_pipeline",
        "edition": "PRO",
        "clusters": [
            {"label": "default", "node_type_id": "i3.xlarge", "num_workers": 2},
            {"label": "maintenance", "node_type_id": "m5.xlarge", "num_workers": 1},
        ],
        "photon": False,
        "serverless": False,
        "continuous": False,
        "development": False,
        "catalog": "main",
        "target": "orders",
    },
    SERVERLESS_PIPELINE: {
        "name": "events_pipeline",
        "serverless": True,
        "continuous": False,
        "catalog": "main",
    },
}
PIPELINE_JOB_ID = 201
PUBLISH_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.xlarge", "num_workers": 1}
JOBS = {
    PIPELINE_JOB_ID: {
        "name": "events_refresh",
        "tasks": [
            {"task_key": "refresh_events", "pipeline_task": {"pipeline_id": SERVERLESS_PIPELINE}},
            {
                "task_key": "publish",
                "depends_on": [{"task_key": "refresh_events"}],
                "new_cluster": PUBLISH_CLUSTER,
                "notebook_task": {"notebook_path": "/Repos/shop/publish"},
            },
        ],
    }
}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_databricks_pipelines():
    orders = DatabricksSubmitRunOperator(
        task_id="submit_pipeline_task",
        run_name="refresh_orders",
        pipeline_task={"pipeline_id": CLASSIC_PIPELINE, "full_refresh": True},
        polling_period_seconds=1,
    )
    events = DatabricksRunNowOperator(
        task_id="run_now_pipeline_job", job_id=PIPELINE_JOB_ID, polling_period_seconds=1
    )

    @task
    def missing_pipeline() -> int:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        return DatabricksHook().submit_run(
            {"run_name": "missing_pipeline", "pipeline_task": {"pipeline_id": MISSING_PIPELINE}}
        )

    orders >> events >> missing_pipeline()


cost_databricks_pipelines()
