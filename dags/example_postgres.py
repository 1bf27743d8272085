"""PostgreSQL: load the day's orders into a staging table, upsert daily revenue, check it.

Cost: every statement runs through the Postgres hook, so it carries a sqlcommenter comment with the
task's identity and OpenLineage run id, and its execution on the cursor is timed. A statement costs
the database instance's hourly rate x its execution time: `instance_time` in instance-seconds,
method `runtime_rate`. Name the instance in [cost_provider] connection_pricing, e.g.
{"postgres_default": {"instance_type": "db.r6g.large"}} (the price book has Amazon RDS, Cloud SQL
and Azure Flexible Server rates); without it the statements are listed as unpriced, with that hint.
Find them in `pg_stat_statements` or the server log (log_min_duration_statement) by the
`airflow_dag_id` comment.

Connection: `postgres_default`. The docker-compose set-up points it at a small database of its own,
so this DAG runs there as is.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLExecuteQueryOperator
from airflow.sdk import dag

CREATE_TABLES = [
    "CREATE SCHEMA IF NOT EXISTS shop",
    """
    CREATE TABLE IF NOT EXISTS shop.orders (
        order_id bigint PRIMARY KEY,
        order_date date NOT NULL,
        region text NOT NULL,
        amount numeric(12, 2) NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS shop.daily_revenue (
        order_date date NOT NULL,
        region text NOT NULL,
        orders bigint NOT NULL,
        revenue numeric(14, 2) NOT NULL,
        PRIMARY KEY (order_date, region)
    )
    """,
]

# Stands in for the day's extract from the order system.
LOAD_ORDERS = [
    "DELETE FROM shop.orders WHERE order_date = '{{ ds }}'",
    """
    INSERT INTO shop.orders
    SELECT to_char(DATE '{{ ds }}', 'YYYYMMDD')::bigint * 100000 + g,
           DATE '{{ ds }}',
           (ARRAY['eu', 'us', 'apac'])[1 + g % 3],
           round((random() * 200)::numeric, 2)
    FROM generate_series(1, 50000) AS g
    """,
]

UPSERT_DAILY_REVENUE = """
INSERT INTO shop.daily_revenue
SELECT order_date, region, count(*), sum(amount)
FROM shop.orders
WHERE order_date = '{{ ds }}'
GROUP BY order_date, region
ON CONFLICT (order_date, region)
DO UPDATE SET orders = EXCLUDED.orders, revenue = EXCLUDED.revenue
"""


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "postgres"],
)
def example_postgres():
    create_tables = SQLExecuteQueryOperator(
        task_id="create_tables", conn_id="postgres_default", sql=CREATE_TABLES
    )
    load_orders = SQLExecuteQueryOperator(task_id="load_orders", conn_id="postgres_default", sql=LOAD_ORDERS)
    upsert_daily_revenue = SQLExecuteQueryOperator(
        task_id="upsert_daily_revenue", conn_id="postgres_default", sql=UPSERT_DAILY_REVENUE
    )
    check_daily_revenue = SQLCheckOperator(
        task_id="check_daily_revenue",
        conn_id="postgres_default",
        sql="SELECT sum(orders) = 50000 FROM shop.daily_revenue WHERE order_date = '{{ ds }}'",
    )

    create_tables >> load_orders >> upsert_daily_revenue >> check_daily_revenue


example_postgres()
