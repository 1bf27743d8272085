"""Test DAG: the Amazon provider's own AthenaOperator and AthenaHook, unchanged, against the moto
server the tests start (connection aws_default comes from the environment)."""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.athena import AthenaOperator
from airflow.sdk import dag, task

RESULTS = "s3://athena-results/cost/"
CREATE_TABLE = (
    "CREATE EXTERNAL TABLE IF NOT EXISTS orders (id int, day string, amount double) "
    "LOCATION 's3://shop-data/orders/'"
)
DAILY_ORDERS = "SELECT day, sum(amount) FROM orders WHERE day = '{{ ds }}' GROUP BY day"
BACKFILL_QUERIES = {
    "full_scan": "SELECT * FROM orders_history /* every partition */",
    "failing": "SELECT broken_column FROM orders_history",
    "cancelled": "SELECT * FROM orders_archive",
}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_athena():
    create_table = AthenaOperator(
        task_id="create_table", query=CREATE_TABLE, database="shop", output_location=RESULTS, sleep_time=1
    )
    daily_orders = AthenaOperator(
        task_id="daily_orders", query=DAILY_ORDERS, database="shop", output_location=RESULTS, sleep_time=1
    )

    @task
    def backfill() -> dict[str, str]:
        from airflow.providers.amazon.aws.hooks.athena import AthenaHook

        hook = AthenaHook(aws_conn_id="aws_default", log_query=False)
        ids = {
            name: hook.run_query(query, {"Database": "shop"}, {"OutputLocation": RESULTS})
            for name, query in BACKFILL_QUERIES.items()
        }
        hook.stop_query(ids["cancelled"])
        states = {name: hook.poll_query_status(qid, sleep_time=1) for name, qid in ids.items()}
        assert states == {"full_scan": "SUCCEEDED", "failing": "FAILED", "cancelled": "CANCELLED"}, states
        return ids

    create_table >> daily_orders >> backfill()


cost_athena()
