"""Test DAG: the Trino provider's hook and the common SQL operator, unchanged, against the fake
coordinator the tests start (connections trino_shop, trino_lake and trino_archive come from the
environment)."""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_trino():
    trino_operator = SQLExecuteQueryOperator(
        task_id="trino_operator",
        conn_id="trino_shop",
        sql=["SELECT 5", "INSERT INTO memory.default.orders VALUES (1), (2)"],
    )

    @task
    def trino_unread() -> None:
        from airflow.providers.trino.hooks.trino import TrinoHook

        # no handler: the hook closes the cursor before the rows are read, which cancels the query
        TrinoHook(trino_conn_id="trino_shop").run("SELECT 7")

    trino_by_bytes = SQLExecuteQueryOperator(task_id="trino_by_bytes", conn_id="trino_lake", sql="SELECT 9")
    trino_by_bytes_unpriced = SQLExecuteQueryOperator(
        task_id="trino_by_bytes_unpriced", conn_id="trino_archive", sql="SELECT 11"
    )

    trino_operator >> trino_unread() >> trino_by_bytes >> trino_by_bytes_unpriced


cost_trino()
