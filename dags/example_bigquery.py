"""BigQuery: daily active users and purchases from the GA4 sample export, checked before anyone reads it.

Cost: every BigQuery job the tasks start (the query job and the check query) is labelled with the
task's identity (job labels `airflow_dag_id`, `airflow_task_id`, `airflow_run_id`, `airflow_try_number`,
`openlineage_run_id`, ...) and its GoogleSQL text carries a sqlcommenter comment. Each job's own
statistics give its usage: an on-demand project is priced per TiB billed (`bytes_billed`, from
`totalBytesBilled`, which already includes BigQuery's 10 MB minimum per table), a project on an
edition per slot-hour (`slot_time`, from `totalSlotMs`); say which in [cost_provider]
bigquery_pricing. Method `list_price`; the job id is the line's `externalId`. Creating the dataset
runs no job and costs nothing. Find the jobs in BigQuery's own history with
`SELECT * FROM region-us.INFORMATION_SCHEMA.JOBS, UNNEST(labels) l WHERE l.key = 'airflow_dag_id'`.

Connection: `google_cloud_default`. Set PROJECT_ID to a project you can run jobs in.
"""

from __future__ import annotations

import pendulum
from airflow.providers.google.cloud.operators.bigquery import (
    BigQueryCheckOperator,
    BigQueryCreateEmptyDatasetOperator,
    BigQueryInsertJobOperator,
)
from airflow.sdk import dag

PROJECT_ID = "my-analytics-project"
DATASET = "product_analytics"
LOCATION = "US"
SOURCE = "bigquery-public-data.ga4_obfuscated_sample_ecommerce.events_*"
TARGET = f"{PROJECT_ID}.{DATASET}.daily_active_users"

DAILY_ACTIVE_USERS = f"""
SELECT
  PARSE_DATE('%Y%m%d', event_date) AS event_date,
  COUNT(DISTINCT user_pseudo_id) AS active_users,
  COUNTIF(event_name = 'purchase') AS purchases,
  SUM(ecommerce.purchase_revenue_in_usd) AS revenue_usd
FROM `{SOURCE}`
WHERE _TABLE_SUFFIX BETWEEN '20210101' AND '20210131'
GROUP BY event_date
"""


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "google", "bigquery"],
)
def example_bigquery():
    create_dataset = BigQueryCreateEmptyDatasetOperator(
        task_id="create_dataset",
        project_id=PROJECT_ID,
        dataset_id=DATASET,
        location=LOCATION,
        if_exists="ignore",
        gcp_conn_id="google_cloud_default",
    )

    build_daily_active_users = BigQueryInsertJobOperator(
        task_id="build_daily_active_users",
        project_id=PROJECT_ID,
        location=LOCATION,
        gcp_conn_id="google_cloud_default",
        configuration={
            "query": {
                "query": DAILY_ACTIVE_USERS,
                "useLegacySql": False,
                "destinationTable": {
                    "projectId": PROJECT_ID,
                    "datasetId": DATASET,
                    "tableId": "daily_active_users",
                },
                "writeDisposition": "WRITE_TRUNCATE",
                "timePartitioning": {"type": "DAY", "field": "event_date"},
            }
        },
    )

    check_daily_active_users = BigQueryCheckOperator(
        task_id="check_daily_active_users",
        sql=f"SELECT COUNT(*) = 31 AND MIN(active_users) > 0 FROM `{TARGET}`",
        use_legacy_sql=False,
        location=LOCATION,
        gcp_conn_id="google_cloud_default",
    )

    create_dataset >> build_daily_active_users >> check_daily_active_users


example_bigquery()
