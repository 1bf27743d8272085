"""Test DAG: the Databricks provider's SQL operator and hook, unchanged, against the fake warehouse the
tests start (connections dbx_pro, dbx_serverless and dbx_odd come from the environment).

`SQLExecuteQueryOperator` cannot take a databricks connection: the connection type resolves to the
REST `DatabricksHook`, which is no DB-API hook. Code outside the operator uses `DatabricksSqlHook`."""

from __future__ import annotations

import pendulum
from airflow.providers.databricks.operators.databricks_sql import DatabricksSqlOperator
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_databricks_sql():
    dbx_operator = DatabricksSqlOperator(
        task_id="dbx_operator",
        databricks_conn_id="dbx_pro",
        sql=["SELECT 42", "INSERT INTO sales.orders VALUES (1, 9.5)"],
        query_tags={"team": "finance"},
    )

    @task
    def dbx_hook() -> int:
        from airflow.providers.common.sql.hooks.handlers import fetch_all_handler
        from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook

        rows = DatabricksSqlHook("dbx_serverless").run("SELECT 7", handler=fetch_all_handler)
        return rows[0][0]

    @task
    def dbx_odd_size() -> int:
        from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook

        return DatabricksSqlHook("dbx_odd").get_first("SELECT 3")[0]

    dbx_operator >> dbx_hook() >> dbx_odd_size()


cost_databricks_sql()
