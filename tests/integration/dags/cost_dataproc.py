"""Test DAG: the Google provider's own DataprocSubmitJobOperator, DataprocCreateBatchOperator and
DataprocHook, unchanged, against the fake Dataproc REST API the tests start (its URL comes from
COST_TEST_DATAPROC_URL, the google_cloud_default connection from the environment). Each workload's main
file names the outcome the fake gives it."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.google.cloud.operators.dataproc import (
    DataprocCreateBatchOperator,
    DataprocSubmitJobOperator,
)
from airflow.sdk import dag, task

if os.environ.get("COST_TEST_DATAPROC_URL"):
    from tests.support.fake_dataproc import route_dataproc_hook_to

    route_dataproc_hook_to(os.environ["COST_TEST_DATAPROC_URL"])

PROJECT = "shop-analytics"
REGION = "us-central1"
CLUSTERS = {
    "etl-cluster": {
        "clusterUuid": "2f6b1c1e-etl",
        "config": {
            "masterConfig": {
                "numInstances": 1,
                "machineTypeUri": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/us-central1-f/machineTypes/n2-standard-4",
            },
            "workerConfig": {"numInstances": 2, "machineTypeUri": "n2-standard-8"},
            "secondaryWorkerConfig": {"numInstances": 2, "machineTypeUri": "n2-standard-4"},
        },
        "status": {"state": "RUNNING"},
    },
    "gpu-cluster": {
        "clusterUuid": "9a0d-gpu",
        "config": {
            "masterConfig": {"numInstances": 1, "machineTypeUri": "n1-standard-4"},
            "workerConfig": {"numInstances": 2, "machineTypeUri": "a2-highgpu-1g"},
        },
        "status": {"state": "RUNNING"},
    },
}


def pyspark_job(cluster: str, main: str, **extra) -> dict:
    return {"placement": {"cluster_name": cluster}, "pyspark_job": {"main_python_file_uri": main}, **extra}


def pyspark_batch(main: str, **extra) -> dict:
    return {"pyspark_batch": {"main_python_file_uri": main}, **extra}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_dataproc():
    etl = DataprocSubmitJobOperator(
        task_id="submit_job",
        project_id=PROJECT,
        region=REGION,
        job=pyspark_job(
            "etl-cluster", "gs://shop/etl.py", labels={"team": "growth", "airflow_task_id": "mine"}
        ),
    )
    gpu = DataprocSubmitJobOperator(
        task_id="submit_job_async",
        project_id=PROJECT,
        region=REGION,
        job=pyspark_job("gpu-cluster", "gs://shop/train.py"),
        asynchronous=True,
    )
    features = DataprocCreateBatchOperator(
        task_id="create_batch",
        project_id=PROJECT,
        region=REGION,
        batch_id="daily-features-1",
        batch=pyspark_batch("gs://shop/features.py", labels={"team": "ds"}),
    )
    premium = DataprocCreateBatchOperator(
        task_id="create_batch_premium",
        project_id=PROJECT,
        region=REGION,
        batch=pyspark_batch(
            "gs://shop/premium.py",
            runtime_config={
                "properties": {
                    "spark.dataproc.driver.compute.tier": "premium",
                    "spark.dataproc.executor.compute.tier": "premium",
                }
            },
        ),
    )

    @task
    def lookup_fails() -> str:
        from airflow.providers.google.cloud.hooks.dataproc import DataprocHook

        job = DataprocHook().submit_job(
            job=pyspark_job("etl-cluster", "gs://shop/flaky.py"), project_id=PROJECT, region=REGION
        )
        return job.reference.job_id

    @task
    def lookup_times_out() -> str:
        from airflow.providers.google.cloud.hooks.dataproc import DataprocHook

        operation = DataprocHook().create_batch(
            batch=pyspark_batch("gs://shop/slow.py"),
            batch_id="slow-batch-1",
            project_id=PROJECT,
            region=REGION,
        )
        return operation.metadata.batch

    etl >> gpu >> features >> premium >> lookup_fails() >> lookup_times_out()


cost_dataproc()
