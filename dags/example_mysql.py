"""MySQL: refresh the day's customer order summary from the shop's orders, then check it.

Cost: every statement runs through the MySQL hook, so it carries a sqlcommenter comment with the
task's identity and OpenLineage run id, and its execution on the cursor is timed. A statement costs
the database instance's hourly rate x its execution time: `instance_time` in instance-seconds,
method `runtime_rate`. Name the instance in [cost_provider] connection_pricing, e.g.
{"mysql_default": {"instance_type": "db.r6g.large"}} (the price book has Amazon RDS for MySQL
rates); without it the statements are listed as unpriced, with that hint. Find them in
`performance_schema.events_statements_history_long` or the slow query log by the `airflow_dag_id`
comment.

Connection: `mysql_default`.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLExecuteQueryOperator
from airflow.sdk import dag

REFRESH_SUMMARY = [
    """
    CREATE TABLE IF NOT EXISTS customer_daily_orders (
        order_date DATE NOT NULL,
        customer_id BIGINT NOT NULL,
        orders INT NOT NULL,
        amount DECIMAL(14, 2) NOT NULL,
        PRIMARY KEY (order_date, customer_id)
    )
    """,
    "DELETE FROM customer_daily_orders WHERE order_date = '{{ ds }}'",
    """
    INSERT INTO customer_daily_orders (order_date, customer_id, orders, amount)
    SELECT DATE(created_at), customer_id, COUNT(*), SUM(total_amount)
    FROM orders
    WHERE created_at >= '{{ ds }}' AND created_at < '{{ macros.ds_add(ds, 1) }}'
      AND status <> 'cancelled'
    GROUP BY DATE(created_at), customer_id
    """,
]


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "mysql"],
)
def example_mysql():
    refresh_customer_daily_orders = SQLExecuteQueryOperator(
        task_id="refresh_customer_daily_orders", conn_id="mysql_default", sql=REFRESH_SUMMARY
    )
    check_customer_daily_orders = SQLCheckOperator(
        task_id="check_customer_daily_orders",
        conn_id="mysql_default",
        sql="SELECT COUNT(*) FROM customer_daily_orders WHERE order_date = '{{ ds }}'",
    )

    refresh_customer_daily_orders >> check_customer_daily_orders


example_mysql()
