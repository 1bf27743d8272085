"""Test DAG: BigQuery queries over BigLake tables (Cloud Storage data behind a BigQuery connection), run
with the Google provider's own operator, unchanged, against the fake BigQuery the tests start."""

from __future__ import annotations

import pendulum
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.sdk import dag

ON_DEMAND_PROJECT = "lake-on-demand"
EDITION_PROJECT = "lake-enterprise"
ORDERS_SQL = (
    "SELECT country, SUM(amount) FROM lake_ds.orders_biglake WHERE day = '2026-01-02' GROUP BY country"
)
IMAGES_SQL = "SELECT uri, content_type FROM lake_ds.product_images_objects WHERE size > 0"
EVENTS_SQL = "SELECT COUNT(*) FROM lake_ds.events_iceberg"


def query(sql: str) -> dict:
    return {"query": {"query": sql, "useLegacySql": False}}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_biglake():
    orders = BigQueryInsertJobOperator(
        task_id="biglake_orders", project_id=ON_DEMAND_PROJECT, location="US", configuration=query(ORDERS_SQL)
    )
    images = BigQueryInsertJobOperator(
        task_id="biglake_object_table",
        project_id=ON_DEMAND_PROJECT,
        location="US",
        configuration=query(IMAGES_SQL),
    )
    events = BigQueryInsertJobOperator(
        task_id="biglake_on_edition",
        project_id=EDITION_PROJECT,
        location="EU",
        configuration=query(EVENTS_SQL),
    )
    orders >> images >> events


cost_biglake()
