"""Local SQL: a small orders -> daily revenue pipeline on an SQLite file, no cloud account needed.

Cost: every statement runs through a DB-API hook, so the cost listener tags it with a sqlcommenter
comment (the task's identity and OpenLineage run id) and times its execution on the cursor. Database
statements are priced as the database instance's rate x their execution time, from
[cost_provider] connection_pricing and a price-book entry for the instance. The shipped price book
has instance rates for PostgreSQL and MySQL but none for SQLite, so these statements show up under
`unpriced` with the reason, never as zero. The task processes themselves are priced as worker
compute: CPU seconds per vCPU-hour and peak memory x wall time per GiB-hour (method `runtime_rate`).

Connection: `local_sqlite`, whose host (or schema) is the database file, e.g.
AIRFLOW_CONN_LOCAL_SQLITE='{"conn_type": "sqlite", "host": "/tmp/local_warehouse.db"}' or
AIRFLOW_CONN_LOCAL_SQLITE='sqlite:////tmp/local_warehouse.db'. Give it as an environment variable:
the OpenLineage listener reads it again from a forked process.
"""

from __future__ import annotations

import sqlite3

import pendulum
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import dag, task

ORDER_COUNT = 20_000


class LocalSqliteHook(DbApiHook):
    """A DB-API hook on Python's own sqlite3, so the example needs no extra provider package."""

    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "local_sqlite"
    conn_type = "sqlite"
    hook_name = "Local SQLite"
    _placeholder = "?"

    def database_path(self) -> str:
        connection = self.connection
        return connection.host or connection.schema or ":memory:"

    def get_conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.database_path(), timeout=30)


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "local", "sqlite"],
)
def example_local_sql():
    @task
    def load_raw_orders() -> int:
        hook = LocalSqliteHook()
        hook.run(
            [
                "DROP TABLE IF EXISTS raw_orders",
                "CREATE TABLE raw_orders (order_id INTEGER PRIMARY KEY, order_date TEXT, region TEXT, "
                "amount NUMERIC)",
                # synthetic orders spread over a week and three regions
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
                f"{ORDER_COUNT}) "
                "INSERT INTO raw_orders SELECT i, date('2026-01-01', '+' || (i % 7) || ' days'), "
                "CASE i % 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' ELSE 'apac' END, "
                "round((i * 37 % 10000) / 100.0, 2) FROM n",
            ]
        )
        return hook.get_first("SELECT count(*) FROM raw_orders")[0]

    @task
    def build_daily_revenue(loaded_orders: int) -> int:
        hook = LocalSqliteHook()
        hook.run(
            [
                "DROP TABLE IF EXISTS daily_revenue",
                "CREATE TABLE daily_revenue AS SELECT order_date, region, count(*) AS orders, "
                "sum(amount) AS revenue FROM raw_orders GROUP BY order_date, region",
            ]
        )
        return hook.get_first("SELECT count(*) FROM daily_revenue")[0]

    @task
    def check_daily_revenue(revenue_rows: int) -> float:
        hook = LocalSqliteHook()
        orders, revenue = hook.get_first("SELECT sum(orders), sum(revenue) FROM daily_revenue")
        if revenue_rows != 21 or orders != ORDER_COUNT:
            raise ValueError(f"daily_revenue has {revenue_rows} rows for {orders} orders")
        return float(revenue)

    check_daily_revenue(build_daily_revenue(load_raw_orders()))


example_local_sql()
