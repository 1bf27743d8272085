"""Athena: wait for the day's web access logs in S3, register the partition, count requests by status.

Cost: the query text of every Athena query the tasks start is tagged with a sqlcommenter comment (the
task's identity and OpenLineage run id) and its QueryExecutionId kept. When the task ends the
queries' statistics are read in one BatchGetQueryExecution call. Athena bills the data a query
scans, rounded up to the megabyte with a 10 MB minimum per query, at a price per TB; `data_scanned`
is those billed bytes, method `list_price`. DDL such as ADD PARTITION, failed queries and reused
results are not billed. Find the queries in the workgroup's history (ListQueryExecutions, or the
console's Recent queries) by the `airflow_dag_id` comment at the end of their text.

Connection: `aws_default`. Set the bucket names to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.athena import AthenaOperator
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk import dag

RESULTS = "s3://my-athena-query-results/airflow/"

DAILY_STATUS_COUNTS = """
INSERT INTO analytics.daily_status_counts
SELECT dt, status, COUNT(*) AS requests, SUM(bytes_sent) AS bytes_sent
FROM raw.access_logs
WHERE dt = '{{ ds }}'
GROUP BY dt, status
"""


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "amazon", "athena"],
)
def example_athena():
    wait_for_access_logs = S3KeySensor(
        task_id="wait_for_access_logs",
        bucket_key="s3://my-data-lake/raw/access_logs/dt={{ ds }}/_SUCCESS",
        aws_conn_id="aws_default",
        mode="reschedule",
        poke_interval=300,
        timeout=6 * 60 * 60,
    )

    add_partition = AthenaOperator(
        task_id="add_partition",
        query="ALTER TABLE access_logs ADD IF NOT EXISTS PARTITION (dt = '{{ ds }}')",
        database="raw",
        output_location=RESULTS,
        workgroup="primary",
        aws_conn_id="aws_default",
    )

    count_requests_by_status = AthenaOperator(
        task_id="count_requests_by_status",
        query=DAILY_STATUS_COUNTS,
        database="analytics",
        output_location=RESULTS,
        workgroup="primary",
        aws_conn_id="aws_default",
    )

    wait_for_access_logs >> add_partition >> count_requests_by_status


example_athena()
