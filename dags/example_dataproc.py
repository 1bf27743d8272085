"""Dataproc Serverless: wait for the day's clickstream export in GCS, sessionize it with a PySpark batch.

Cost: the batch carries the task's identity as Dataproc labels and its id is kept. When the task ends
the batch's `runtimeInfo.approximateUsage` gives its DCU-seconds and shuffle storage, priced at the
standard or premium tier's price per DCU-hour and per GB-month: `dcu_time` and `shuffle_storage`,
method `list_price`. A job on a Dataproc cluster (DataprocSubmitJobOperator) is priced instead as its
share of the cluster while it ran: the cluster's vCPU-hours (the Dataproc fee) plus its Compute
Engine instances, method `allocated`. Find the batch with
`gcloud dataproc batches list --filter="labels.airflow_dag_id:*"`, or in the billing export by the
same labels.

Connection: `google_cloud_default`. Set PROJECT_ID, the region and the bucket names to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.google.cloud.operators.dataproc import DataprocCreateBatchOperator
from airflow.providers.google.cloud.sensors.gcs import GCSObjectExistenceSensor
from airflow.sdk import dag

PROJECT_ID = "my-analytics-project"
REGION = "us-central1"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "google", "dataproc"],
)
def example_dataproc():
    wait_for_clickstream = GCSObjectExistenceSensor(
        task_id="wait_for_clickstream",
        bucket="my-data-lake",
        object="raw/clickstream/dt={{ ds }}/_SUCCESS",
        google_cloud_conn_id="google_cloud_default",
        mode="reschedule",
        poke_interval=300,
        timeout=6 * 60 * 60,
    )

    sessionize_clickstream = DataprocCreateBatchOperator(
        task_id="sessionize_clickstream",
        project_id=PROJECT_ID,
        region=REGION,
        batch_id="sessionize-{{ ds_nodash }}",
        gcp_conn_id="google_cloud_default",
        batch={
            "pyspark_batch": {
                "main_python_file_uri": "gs://my-spark-jobs/sessionize.py",
                "args": [
                    "--input=gs://my-data-lake/raw/clickstream/dt={{ ds }}/",
                    "--output=gs://my-data-lake/clean/sessions/dt={{ ds }}/",
                ],
            },
            "runtime_config": {"version": "2.2"},
            "labels": {"team": "analytics"},
        },
    )

    wait_for_clickstream >> sessionize_clickstream


example_dataproc()
