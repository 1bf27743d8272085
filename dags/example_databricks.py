"""Databricks: ingest the day's orders with a notebook job, then build daily revenue on a SQL warehouse.

Cost, job run: the run's cluster carries the task's identity in its custom tags (they reach the
`system.billing.usage` table and the cloud bill) and the run id is kept. When the task ends
`jobs/runs/get` gives the cluster's node types and how long it ran: its DBUs are the driver's and
workers' DBU per hour x that time, priced at the Jobs Compute list price per DBU (`dbu`, method
`list_price`); the cloud VMs under it are `instance_time`, priced once you add your VM prices.

Cost, SQL: each statement of DatabricksSqlOperator carries the task's identity as Databricks query
tags and a sqlcommenter comment. When the task ends the Query History API gives each statement's
duration and warehouse; a statement costs the warehouse's DBU per hour for its size x its duration,
priced at the warehouse type's DBU price (SQL Classic, Pro or Serverless). This is an estimate: a
warehouse is billed for its uptime, which concurrent queries share. Find the statements with
`SELECT * FROM system.query.history WHERE query_tags['airflow_dag_id'] IS NOT NULL`.

Connection: `databricks_default` (workspace host and a token). Set the notebook path and the
warehouse name to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.providers.databricks.operators.databricks_sql import DatabricksSqlOperator
from airflow.sdk import dag

DAILY_REVENUE = [
    "DELETE FROM analytics.daily_revenue WHERE order_date = '{{ ds }}'",
    """
    INSERT INTO analytics.daily_revenue
    SELECT order_date, country, COUNT(*) AS orders, SUM(amount) AS revenue
    FROM analytics.orders
    WHERE order_date = '{{ ds }}'
    GROUP BY order_date, country
    """,
]


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "databricks"],
)
def example_databricks():
    ingest_orders = DatabricksSubmitRunOperator(
        task_id="ingest_orders",
        databricks_conn_id="databricks_default",
        run_name="ingest_orders_{{ ds }}",
        tasks=[
            {
                "task_key": "ingest_orders",
                "notebook_task": {
                    "notebook_path": "/Workspace/Shared/pipelines/ingest_orders",
                    "base_parameters": {"run_date": "{{ ds }}"},
                },
                "new_cluster": {
                    "spark_version": "15.4.x-scala2.12",
                    "node_type_id": "i3.xlarge",
                    "num_workers": 2,
                    "custom_tags": {"team": "analytics"},
                },
            }
        ],
    )

    build_daily_revenue = DatabricksSqlOperator(
        task_id="build_daily_revenue",
        databricks_conn_id="databricks_default",
        sql_endpoint_name="analytics-warehouse",
        sql=DAILY_REVENUE,
    )

    ingest_orders >> build_daily_revenue


example_databricks()
