"""Azure Synapse: enrich the day's telemetry with a Spark batch job, then publish it with a pipeline.

Cost, Spark: the batch job carries the task's identity in its Livy tags and its id is kept. When the
task ends the batch gives the vCores it asked for (driver cores + executor cores x executors) and how
long it ran: `vcore_time` in vCore-seconds, priced per vCore-hour of the memory-optimized node family,
method `list_price`.

Cost, pipeline: the pipeline run's activity runs are read when the task ends, as for Data Factory:
`activity_runs`, `diu_time` (DIU-hours of Copy activities) and `pipeline_activity_time` (hours).
Serverless SQL pools, queried through an MSSQL/ODBC connection, are priced per TB of data processed.
Find the runs in Synapse Studio's Monitor hub (Apache Spark applications, Pipeline runs).

Connections: `azure_synapse_default` (Spark: workspace endpoint and subscription) and
`azure_synapse_connection` (pipelines). Set the names to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.microsoft.azure.operators.synapse import (
    AzureSynapseRunPipelineOperator,
    AzureSynapseRunSparkBatchOperator,
)
from airflow.sdk import dag
from azure.synapse.spark.models import SparkBatchJobOptions

WORKSPACE_ENDPOINT = "https://analytics-ws.dev.azuresynapse.net"
LAKE = "abfss://lake@analyticslake.dfs.core.windows.net"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "microsoft-azure", "synapse"],
)
def example_synapse():
    enrich_telemetry = AzureSynapseRunSparkBatchOperator(
        task_id="enrich_telemetry",
        azure_synapse_conn_id="azure_synapse_default",
        spark_pool="analyticspool",
        payload=SparkBatchJobOptions(
            name="enrich_telemetry",
            file=f"{LAKE}/jobs/enrich_telemetry.py",
            arguments=["--run-date", "{{ ds }}"],
            driver_memory="28g",
            driver_cores=4,
            executor_memory="28g",
            executor_cores=4,
            executor_count=2,
        ),
    )

    publish_telemetry = AzureSynapseRunPipelineOperator(
        task_id="publish_telemetry",
        azure_synapse_conn_id="azure_synapse_connection",
        azure_synapse_workspace_dev_endpoint=WORKSPACE_ENDPOINT,
        pipeline_name="publish_telemetry",
        parameters={"run_date": "{{ ds }}"},
    )

    enrich_telemetry >> publish_telemetry


example_synapse()
