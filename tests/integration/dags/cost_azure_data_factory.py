"""Test DAG: the Microsoft Azure provider's own AzureDataFactoryRunPipelineOperator and
AzureDataFactoryHook, unchanged, against the fake Azure the tests start (reached through HTTPS_PROXY;
the azure_data_factory_default connection comes from the environment). Each pipeline's name tells the
fake its activity runs."""

from __future__ import annotations

import pendulum
from airflow.providers.microsoft.azure.operators.data_factory import AzureDataFactoryRunPipelineOperator
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_azure_data_factory():
    copy_orders = AzureDataFactoryRunPipelineOperator(
        task_id="run_pipeline",
        pipeline_name="copy_orders",
        resource_group_name="rg-data",
        factory_name="shop-factory",
        parameters={"day": "2026-01-02"},
        check_interval=1,
    )

    def start(pipeline: str) -> str:
        from airflow.providers.microsoft.azure.hooks.data_factory import AzureDataFactoryHook

        # nothing here waits for the run: the cost capture reads it when the task ends
        return (
            AzureDataFactoryHook().run_pipeline(pipeline, resource_group_name=None, factory_name=None).run_id
        )

    @task
    def lookup_fails() -> str:
        return start("flaky_pipeline")

    @task
    def lookup_times_out() -> str:
        return start("slow_pipeline")

    copy_orders >> lookup_fails() >> lookup_times_out()


cost_azure_data_factory()
