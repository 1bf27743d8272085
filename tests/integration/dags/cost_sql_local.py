"""Test DAG: the Postgres and MySQL providers' own operator and hooks, unchanged, against the real
servers the tests start (connections pg_shop and mysql_shop come from the environment)."""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task

PG_STATEMENTS = [
    "DROP TABLE IF EXISTS orders",
    "CREATE TABLE orders (id INTEGER, amount NUMERIC(10, 2))",
    "INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 1000) AS g",
]
MYSQL_STATEMENTS = [
    "DROP TABLE IF EXISTS orders",
    "CREATE TABLE orders (id INTEGER, amount DECIMAL(10, 2))",
    "INSERT INTO orders VALUES (1, 9.50), (2, 20.00)",
]


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_sql_local():
    pg_operator = SQLExecuteQueryOperator(task_id="pg_operator", conn_id="pg_shop", sql=PG_STATEMENTS)

    @task
    def pg_hook() -> int:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="pg_shop")
        hook.run("UPDATE orders SET amount = amount * 2 -- double every amount;")
        return hook.get_first("SELECT count(*) FROM orders;")[0]

    mysql_operator = SQLExecuteQueryOperator(
        task_id="mysql_operator", conn_id="mysql_shop", sql=MYSQL_STATEMENTS
    )

    pg_operator >> pg_hook() >> mysql_operator


cost_sql_local()
