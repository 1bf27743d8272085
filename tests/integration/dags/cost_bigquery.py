"""Test DAG: the Google provider's own BigQueryInsertJobOperator and BigQueryHook, unchanged, against
the fake BigQuery the tests start (BIGQUERY_EMULATOR_HOST and the google_cloud_default connection come
from the environment). Each query names the outcome the fake gives it."""

from __future__ import annotations

import pendulum
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.sdk import dag, task

ON_DEMAND_PROJECT = "shop-on-demand"
EDITION_PROJECT = "shop-enterprise"

SUMMARY_SQL = "SELECT region, SUM(amount) AS total FROM shop.orders GROUP BY region;"
CACHED_SQL = "SELECT COUNT(*) FROM shop.orders_cached"
EVENTS_SQL = "SELECT customer_id, COUNT(*) AS n FROM shop.events GROUP BY customer_id -- per customer"
EDITION_SQL = "SELECT * FROM shop.clickstream WHERE day = CURRENT_DATE()"
FAILING_SQL = "SELECT 1 / 0 FROM shop.payments"
LONG_SQL = "CALL shop.rebuild_all_partitions()"


def query(sql: str) -> dict:
    return {"query": {"query": sql, "useLegacySql": False}}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_bigquery():
    summary = BigQueryInsertJobOperator(
        task_id="insert_job_operator",
        project_id=ON_DEMAND_PROJECT,
        location="US",
        # the user's own labels stay, and win over the task's on a clash
        configuration={**query(SUMMARY_SQL), "labels": {"team": "finance", "airflow_task_id": "mine"}},
    )
    cached = BigQueryInsertJobOperator(
        task_id="cached_query", project_id=ON_DEMAND_PROJECT, location="US", configuration=query(CACHED_SQL)
    )
    edition = BigQueryInsertJobOperator(
        task_id="edition_query", project_id=EDITION_PROJECT, location="EU", configuration=query(EDITION_SQL)
    )

    @task
    def hook_nowait() -> str:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        job = BigQueryHook().insert_job(
            configuration=query(EVENTS_SQL), project_id=ON_DEMAND_PROJECT, nowait=True
        )
        job.result()
        return job.job_id

    @task
    def failing_job() -> str:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.api_core.exceptions import BadRequest

        try:
            BigQueryHook().insert_job(configuration=query(FAILING_SQL), project_id=ON_DEMAND_PROJECT)
        except BadRequest as error:
            return f"failed as expected: {error.code}"
        raise AssertionError("the fake was meant to fail this job")

    @task
    def left_running() -> str:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        return (
            BigQueryHook()
            .insert_job(configuration=query(LONG_SQL), project_id=ON_DEMAND_PROJECT, nowait=True)
            .job_id
        )

    summary >> cached >> edition >> hook_nowait() >> failing_job() >> left_running()


cost_bigquery()
