"""Test DAG: the Microsoft Azure provider's own AzureSynapseRunPipelineOperator and
AzureSynapseRunSparkBatchOperator, unchanged, against the fake Synapse workspace the tests start (reached
through HTTPS_PROXY). The connections come from the environment: azure_synapse_pipelines names the
workspace by its Synapse Studio URL (as the pipeline run link needs), azure_synapse_default by its
development endpoint (as the Spark client needs)."""

from __future__ import annotations

import pendulum
from airflow.providers.microsoft.azure.operators.synapse import (
    AzureSynapseRunPipelineOperator,
    AzureSynapseRunSparkBatchOperator,
)
from airflow.sdk import dag
from azure.synapse.spark.models import SparkBatchJobOptions

WORKSPACE = "shopws"
ENDPOINT = f"https://{WORKSPACE}.dev.azuresynapse.net"
SPARK_POOL = "smallpool"


def spark_job(name: str, **extra) -> SparkBatchJobOptions:
    return SparkBatchJobOptions(
        name=name,
        file=f"abfss://jobs@shoplake.dfs.core.windows.net/{name}.py",
        driver_memory="28g",
        driver_cores=4,
        executor_memory="28g",
        executor_cores=4,
        executor_count=3,
        **extra,
    )


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_synapse():
    pipeline = AzureSynapseRunPipelineOperator(
        task_id="run_pipeline",
        pipeline_name="load_sales",
        azure_synapse_conn_id="azure_synapse_pipelines",
        azure_synapse_workspace_dev_endpoint=ENDPOINT,
        check_interval=1,
    )
    sessions = AzureSynapseRunSparkBatchOperator(
        task_id="spark_batch",
        spark_pool=SPARK_POOL,
        payload=spark_job("daily_sessions", tags={"team": "web", "airflow_task_id": "mine"}),
        check_interval=1,
    )
    flaky = AzureSynapseRunSparkBatchOperator(
        task_id="spark_lookup_fails",
        spark_pool=SPARK_POOL,
        payload=spark_job("flaky_sessions"),
        check_interval=1,
    )
    pipeline >> sessions >> flaky


cost_synapse()
