"""Amazon EMR Serverless: start a Spark application, sessionize the day's clickstream, then delete it.

Cost: the StartJobRun call is tagged with the task's identity and the job run id kept. When the task
ends GetJobRun gives the resources EMR Serverless billed for the run (`billedResourceUtilization`,
which applies the one-minute minimum per worker): `vcpu_time` in vCPU-hours, `memory_time` and
`storage_time` in GB-hours, each priced at its list price, method `metered` (the usage is the
service's own billing figure). The application's create and delete calls cost nothing themselves.
Find the run with `aws emr-serverless get-job-run --application-id ... --job-run-id ...` or in EMR
Studio.

Connection: `aws_default`. Set the role, bucket and script paths to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.emr import (
    EmrServerlessCreateApplicationOperator,
    EmrServerlessDeleteApplicationOperator,
    EmrServerlessStartJobOperator,
)
from airflow.sdk import dag

EXECUTION_ROLE_ARN = "arn:aws:iam::123456789012:role/emr-serverless-job-role"
APPLICATION_ID = "{{ ti.xcom_pull(task_ids='create_spark_application') }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "amazon", "emr-serverless"],
)
def example_emr_serverless():
    create_spark_application = EmrServerlessCreateApplicationOperator(
        task_id="create_spark_application",
        release_label="emr-7.5.0",
        job_type="SPARK",
        aws_conn_id="aws_default",
        config={"name": "sessionize-clickstream"},
    )

    sessionize_clickstream = EmrServerlessStartJobOperator(
        task_id="sessionize_clickstream",
        application_id=APPLICATION_ID,
        execution_role_arn=EXECUTION_ROLE_ARN,
        name="sessionize-{{ ds }}",
        aws_conn_id="aws_default",
        job_driver={
            "sparkSubmit": {
                "entryPoint": "s3://my-spark-jobs/sessionize.py",
                "entryPointArguments": [
                    "--input",
                    "s3://my-data-lake/raw/clickstream/dt={{ ds }}/",
                    "--output",
                    "s3://my-data-lake/clean/sessions/dt={{ ds }}/",
                ],
                "sparkSubmitParameters": "--conf spark.executor.cores=2 --conf spark.executor.memory=4g",
            }
        },
        configuration_overrides={
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://my-spark-logs/emr/"}}
        },
    )

    delete_spark_application = EmrServerlessDeleteApplicationOperator(
        task_id="delete_spark_application",
        application_id=APPLICATION_ID,
        aws_conn_id="aws_default",
        trigger_rule="all_done",
    )

    create_spark_application >> sessionize_clickstream >> delete_spark_application


example_emr_serverless()
