"""Test DAG: the Amazon provider's own EmrAddStepsOperator, EmrServerlessStartJobOperator,
EmrContainerOperator and EMR hooks, unchanged, against the moto server the tests start. The test
creates the cluster, the application and the virtual cluster and passes their ids in the environment.
Polling intervals are short so the DAG runs in seconds."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrContainerOperator,
    EmrServerlessStartJobOperator,
)
from airflow.sdk import chain, dag, task

ROLE = "arn:aws:iam::123456789012:role/emr-jobs"
CLUSTER_NAME = "shared-analytics"
APPLICATION_ID = os.environ.get("COST_EMR_APPLICATION_ID", "00f0000000000000")
VIRTUAL_CLUSTER_ID = os.environ.get("COST_EMR_VIRTUAL_CLUSTER_ID", "0000000000000000000000000")


def spark_step(name: str) -> dict:
    return {
        "Name": name,
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", f"s3://etl-scripts/{name}.py"],
        },
    }


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_emr():
    steps = EmrAddStepsOperator(
        task_id="aggregate_steps",
        job_flow_name=CLUSTER_NAME,
        steps=[spark_step("aggregate_orders"), spark_step("aggregate_refunds")],
        wait_for_completion=True,
        waiter_delay=1,
        waiter_max_attempts=5,
    )
    running_step = EmrAddStepsOperator(
        task_id="backfill_step",
        job_flow_name=CLUSTER_NAME,
        cluster_states=["RUNNING", "WAITING"],
        steps=[spark_step("backfill_clicks")],
        wait_for_completion=False,
    )
    serverless = EmrServerlessStartJobOperator(
        task_id="sessionize",
        application_id=APPLICATION_ID,
        execution_role_arn=ROLE,
        job_driver={"sparkSubmit": {"entryPoint": "s3://etl-scripts/sessionize.py"}},
        name="daily_sessionize",
        config={"tags": {"team": "web-analytics"}},
        waiter_delay=1,
        waiter_max_attempts=5,
    )

    @task
    def serverless_from_hook() -> str:
        """User code on the hook's client: EMR Serverless has no hook method to start a job run."""
        from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

        hook = EmrServerlessHook(aws_conn_id="aws_default")
        response = hook.conn.start_job_run(
            applicationId=APPLICATION_ID,
            executionRoleArn=ROLE,
            jobDriver={"sparkSubmit": {"entryPoint": "s3://etl-scripts/dedupe.py"}},
            name="hourly_dedupe",
        )
        return response["jobRunId"]

    unread_serverless = EmrServerlessStartJobOperator(
        task_id="unread_serverless",
        application_id=APPLICATION_ID,
        execution_role_arn=ROLE,
        job_driver={"sparkSubmit": {"entryPoint": "s3://etl-scripts/flaky.py"}},
        name="flaky_export",
        wait_for_completion=False,
        waiter_delay=1,
        waiter_max_attempts=5,
    )
    on_eks = EmrContainerOperator(
        task_id="features_on_eks",
        virtual_cluster_id=VIRTUAL_CLUSTER_ID,
        execution_role_arn=ROLE,
        release_label="emr-7.2.0-latest",
        name="nightly_features",
        job_driver={
            "sparkSubmitJobDriver": {
                "entryPoint": "s3://etl-scripts/features.py",
                "sparkSubmitParameters": (
                    "--conf spark.executor.instances=4 --conf spark.executor.cores=2 "
                    "--conf spark.executor.memory=8g --conf spark.driver.cores=1"
                ),
            }
        },
        configuration_overrides={
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": {
                        "spark.driver.memory": "2g",
                        "spark.driver.memoryOverhead": "1g",
                        "spark.executor.memoryOverhead": "1g",
                        "spark.executor.instances": "99",
                    },
                }
            ]
        },
        tags={"team": "ml"},
        poll_interval=1,
        max_polling_attempts=5,
    )
    eks_running = EmrContainerOperator(
        task_id="eks_not_waited_for",
        virtual_cluster_id=VIRTUAL_CLUSTER_ID,
        execution_role_arn=ROLE,
        release_label="emr-7.2.0-latest",
        name="long_training",
        job_driver={"sparkSubmitJobDriver": {"entryPoint": "s3://etl-scripts/train.py"}},
        wait_for_completion=False,
    )

    # a step that fails: the operator's wait raises, the task fails, and its cluster time is still kept
    failing_step = EmrAddStepsOperator(
        task_id="failing_step",
        job_flow_name=CLUSTER_NAME,
        cluster_states=["RUNNING", "WAITING"],
        steps=[spark_step("repair_partitions")],
        wait_for_completion=True,
        waiter_delay=1,
        waiter_max_attempts=5,
    )

    @task(trigger_rule="all_done")
    def after_the_failed_step() -> None:
        """The DAG's last task: the run succeeds when nothing but the step above failed."""

    chain(
        steps,
        running_step,
        serverless,
        serverless_from_hook(),
        unread_serverless,
        on_eks,
        eks_running,
        failing_step,
        after_the_failed_step(),
    )


cost_emr()
