"""Snowflake: load the day's order files from a stage, merge them into the orders table, check revenue.

Cost: each statement is tagged twice: every session the Snowflake hook opens carries the task's
identity as a JSON `QUERY_TAG`, and every statement a sqlcommenter comment. The ids of the task's
queries are kept; when the task ends one look-up in INFORMATION_SCHEMA.QUERY_HISTORY reads each
query's warehouse size and execution time. A query costs the warehouse's credits per hour for its
size (X-Small 1, Small 2, Medium 4, ...) x its execution time, in `credits`, priced at the account's
edition ([cost_provider] connection_pricing, e.g. {"snowflake_default": {"edition": "enterprise"}}).
Statements sent through the SQL API (SnowflakeSqlApiOperator) carry the tag in the request's
`query_tag`. Cloud-services credits are billed per day above 10% of warehouse credits and are not
split across queries. Find the queries with
`SELECT * FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY()) WHERE QUERY_TAG LIKE '%airflow_dag_id%'`.

Connection: `snowflake_default` (account, user, key or password, warehouse, database, role).
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLExecuteQueryOperator
from airflow.providers.snowflake.operators.snowflake import SnowflakeSqlApiOperator
from airflow.sdk import dag

COPY_ORDERS = """
COPY INTO raw.orders
FROM @raw.orders_stage/{{ ds }}/
FILE_FORMAT = (TYPE = PARQUET)
MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE
"""

MERGE_ORDERS = """
MERGE INTO analytics.orders AS target
USING (SELECT * FROM raw.orders WHERE order_date = '{{ ds }}') AS source
  ON target.order_id = source.order_id
WHEN MATCHED THEN UPDATE SET status = source.status, amount = source.amount
WHEN NOT MATCHED THEN INSERT (order_id, customer_id, order_date, status, amount)
  VALUES (source.order_id, source.customer_id, source.order_date, source.status, source.amount);
DELETE FROM analytics.daily_revenue WHERE order_date = '{{ ds }}';
INSERT INTO analytics.daily_revenue
SELECT order_date, COUNT(*), SUM(amount) FROM analytics.orders
WHERE order_date = '{{ ds }}' AND status <> 'cancelled' GROUP BY order_date;
"""


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "snowflake"],
)
def example_snowflake():
    copy_raw_orders = SQLExecuteQueryOperator(
        task_id="copy_raw_orders", conn_id="snowflake_default", sql=COPY_ORDERS
    )

    merge_orders = SnowflakeSqlApiOperator(
        task_id="merge_orders",
        snowflake_conn_id="snowflake_default",
        sql=MERGE_ORDERS,
        statement_count=3,
    )

    check_daily_revenue = SQLCheckOperator(
        task_id="check_daily_revenue",
        conn_id="snowflake_default",
        sql="SELECT COUNT(*) FROM analytics.daily_revenue WHERE order_date = '{{ ds }}'",
    )

    copy_raw_orders >> merge_orders >> check_daily_revenue


example_snowflake()
