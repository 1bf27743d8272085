"""Trino: summarise the day's orders from the TPC-H catalog into an Iceberg table, then check it.

Cost: every statement runs through the Trino hook, so it carries the task's identity as Trino client
tags (kept in `system.runtime.queries` and in the event listener's QueryCompletedEvent) and as a
sqlcommenter comment. Each query's CPU time, physical input bytes and elapsed time come from the
coordinator's own statistics. A self-hosted cluster has no list price, so a query is priced as its
CPU time at the `trino/cpu_time` rate per vCPU-hour (set your own in a price book): `cpu_time`,
method `runtime_rate`. A managed service billed per data read can be priced per byte instead
([cost_provider] connection_pricing {"trino_default": {"billing_metric": "physical_input"}} and a
`trino/physical_input` price). Find the queries with
`SELECT * FROM system.runtime.queries WHERE query LIKE '%airflow_dag_id%'`.

Connection: `trino_default`.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLExecuteQueryOperator
from airflow.sdk import dag

SUMMARISE_ORDERS = [
    """
    CREATE TABLE IF NOT EXISTS iceberg.analytics.daily_order_summary (
        order_date date,
        order_priority varchar,
        orders bigint,
        revenue double
    )
    """,
    "DELETE FROM iceberg.analytics.daily_order_summary WHERE order_date = DATE '{{ ds }}'",
    """
    INSERT INTO iceberg.analytics.daily_order_summary
    SELECT DATE '{{ ds }}', orderpriority, count(*), sum(totalprice)
    FROM tpch.sf1.orders
    WHERE orderdate = DATE '{{ ds }}' - INTERVAL '30' YEAR
    GROUP BY orderpriority
    """,
]


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "trino"],
)
def example_trino():
    summarise_orders = SQLExecuteQueryOperator(
        task_id="summarise_orders", conn_id="trino_default", sql=SUMMARISE_ORDERS
    )
    check_order_summary = SQLCheckOperator(
        task_id="check_order_summary",
        conn_id="trino_default",
        sql="SELECT count(*) FROM iceberg.analytics.daily_order_summary WHERE order_date = DATE '{{ ds }}'",
    )

    summarise_orders >> check_order_summary


example_trino()
