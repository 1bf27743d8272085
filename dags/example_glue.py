"""AWS Glue: crawl the day's raw order files, then clean and deduplicate them with a Spark job.

Cost: the Glue job run GlueJobOperator starts is tagged with the task's identity and its run id
kept. When the task ends GetJobRun gives the run's DPU-seconds (or, for a fixed-size run, its
workers' DPUs x execution time: G.1X is 1 DPU per worker, G.2X 2, ...). Glue bills per second with a
one-minute minimum per run, at the standard or Flex price per DPU-hour of the run's execution class:
`dpu_time` in DPU-seconds, method `list_price`, the JobRunId as `externalId`. The crawler's run is
billed by Glue too (per DPU-hour) but is not captured. Find the job run in the Glue console's run
history, or with `aws glue get-job-runs --job-name clean_orders`.

Connection: `aws_default`. Set the bucket, role and database names to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.operators.glue_crawler import GlueCrawlerOperator
from airflow.sdk import dag

GLUE_ROLE = "AWSGlueServiceRole-analytics"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "amazon", "glue"],
)
def example_glue():
    crawl_raw_orders = GlueCrawlerOperator(
        task_id="crawl_raw_orders",
        aws_conn_id="aws_default",
        config={
            "Name": "raw_orders",
            "Role": GLUE_ROLE,
            "DatabaseName": "raw",
            "Targets": {"S3Targets": [{"Path": "s3://my-data-lake/raw/orders/"}]},
            "RecrawlPolicy": {"RecrawlBehavior": "CRAWL_NEW_FOLDERS_ONLY"},
            "SchemaChangePolicy": {"UpdateBehavior": "LOG", "DeleteBehavior": "LOG"},
        },
    )

    clean_orders = GlueJobOperator(
        task_id="clean_orders",
        job_name="clean_orders",
        script_location="s3://my-glue-scripts/clean_orders.py",
        iam_role_name=GLUE_ROLE,
        aws_conn_id="aws_default",
        create_job_kwargs={
            "GlueVersion": "5.0",
            "WorkerType": "G.1X",
            "NumberOfWorkers": 2,
            "ExecutionClass": "STANDARD",
        },
        script_args={
            "--run_date": "{{ ds }}",
            "--source_table": "raw.orders",
            "--target_path": "s3://my-data-lake/clean/orders/",
        },
        wait_for_completion=True,
    )

    crawl_raw_orders >> clean_orders


example_glue()
