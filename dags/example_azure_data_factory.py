"""Azure Data Factory: copy the day's sales extract into the lake, then run the pipeline that models it.

Cost: the pipeline run id of each task is kept (it is the line's `externalId`). When the task ends
the run's activity runs are read (queryActivityruns), each with the billing reference Data Factory
records for it: orchestration is billed per activity run, data movement (Copy) in DIU-hours, and
pipeline activities per hour of execution. The task's lines are `activity_runs`, `diu_time`
(DIU-hours) and `pipeline_activity_time` (hours), method `list_price`; other meters (external
activities, data flows, self-hosted integration runtimes) are listed as unpriced with the meter named.
Find the runs in ADF Studio's Monitor > Pipeline runs, or with
`az datafactory pipeline-run query-by-factory`.

Connection: `azure_data_factory_default` (a service principal or managed identity with the
resource group and factory as defaults). Set the names to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.microsoft.azure.operators.data_factory import AzureDataFactoryRunPipelineOperator
from airflow.sdk import dag

RESOURCE_GROUP = "rg-analytics"
FACTORY = "adf-analytics"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "microsoft-azure", "azure-data-factory"],
)
def example_azure_data_factory():
    copy_sales_to_lake = AzureDataFactoryRunPipelineOperator(
        task_id="copy_sales_to_lake",
        azure_data_factory_conn_id="azure_data_factory_default",
        resource_group_name=RESOURCE_GROUP,
        factory_name=FACTORY,
        pipeline_name="copy_sales_to_lake",
        parameters={"run_date": "{{ ds }}"},
        wait_for_termination=True,
    )

    model_sales = AzureDataFactoryRunPipelineOperator(
        task_id="model_sales",
        azure_data_factory_conn_id="azure_data_factory_default",
        resource_group_name=RESOURCE_GROUP,
        factory_name=FACTORY,
        pipeline_name="model_sales",
        parameters={"run_date": "{{ ds }}"},
        wait_for_termination=True,
    )

    copy_sales_to_lake >> model_sales


example_azure_data_factory()
