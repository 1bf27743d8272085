"""Test DAG: the dbt Cloud provider's own DbtCloudRunJobOperator (waiting, deferrable, and not waiting
with a DbtCloudJobRunSensor after it), unchanged, against the fake dbt Cloud the tests start (the
dbt_cloud_default connection comes from the environment). Each job id tells the fake its plan."""

from __future__ import annotations

import pendulum
from airflow.providers.dbt.cloud.operators.dbt import DbtCloudRunJobOperator
from airflow.providers.dbt.cloud.sensors.dbt import DbtCloudJobRunSensor
from airflow.sdk import dag

NIGHTLY_JOB = 301
HOURLY_JOB = 302
AD_HOC_JOB = 303
BROKEN_JOB = 304
FAILING_JOB = 305


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_dbt_cloud():
    DbtCloudRunJobOperator(task_id="nightly_build", job_id=NIGHTLY_JOB, check_interval=1)
    DbtCloudRunJobOperator(task_id="hourly_deferrable", job_id=HOURLY_JOB, check_interval=1, deferrable=True)
    start = DbtCloudRunJobOperator(task_id="start_ad_hoc", job_id=AD_HOC_JOB, wait_for_termination=False)
    wait = DbtCloudJobRunSensor(
        task_id="wait_ad_hoc",
        run_id="{{ ti.xcom_pull(task_ids='start_ad_hoc', key='job_run_id') }}",
        poke_interval=1,
        timeout=120,
    )
    start >> wait
    DbtCloudRunJobOperator(task_id="broken_artifacts", job_id=BROKEN_JOB, check_interval=1)
    DbtCloudRunJobOperator(task_id="failing_job", job_id=FAILING_JOB, check_interval=1)


cost_dbt_cloud()
