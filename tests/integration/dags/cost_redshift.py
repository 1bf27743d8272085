"""Test DAG: the Amazon provider's own RedshiftDataOperator and RedshiftDataHook, unchanged, against
the moto server the tests start (connection aws_default comes from the environment)."""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator
from airflow.sdk import dag, task

FAILING_SQL = "DELETE FROM sales WHERE region = 'nowhere'"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_redshift():
    provisioned_load = RedshiftDataOperator(
        task_id="provisioned_load",
        cluster_identifier="analytics",
        database="dev",
        db_user="etl",
        sql="INSERT INTO sales SELECT * FROM staging_sales",
        poll_interval=1,
    )
    serverless_count = RedshiftDataOperator(
        task_id="serverless_count",
        workgroup_name="etl-wg",
        database="dev",
        sql="SELECT count(*) FROM sales",
        statement_name="nightly_count",
        poll_interval=1,
    )
    legacy_rollup = RedshiftDataOperator(
        task_id="legacy_rollup",
        cluster_identifier="legacy",
        database="dev",
        db_user="etl",
        sql="SELECT region, sum(amount) FROM sales GROUP BY region",
        poll_interval=1,
    )

    @task
    def failing_statement() -> str:
        from airflow.providers.amazon.aws.hooks.redshift_data import (
            RedshiftDataHook,
            RedshiftDataQueryFailedError,
        )

        hook = RedshiftDataHook(aws_conn_id="aws_default")
        try:
            hook.execute_query(
                sql=FAILING_SQL,
                cluster_identifier="analytics",
                database="dev",
                db_user="etl",
                poll_interval=1,
            )
        except RedshiftDataQueryFailedError:
            return "failed as planned"
        raise AssertionError("the statement was planned to fail")

    provisioned_load >> serverless_count >> legacy_rollup >> failing_statement()


cost_redshift()
