"""dbt Cloud: run the nightly dbt Cloud job and wait for it; start the hourly job without waiting and let a
sensor wait for it.

Cost: when a task ends, the run it started (or, for the sensor, the run it saw finish) is read through
the dbt Cloud API on the task's own connection: the run with its steps, then each dbt step's
`run_results.json` and `manifest.json`. Every model, seed, snapshot and test that ran is a line, as for a
local dbt run: on BigQuery the bytes each job billed, priced per TiB (`bytes_billed`, method
`list_price`); on Snowflake, Databricks or Redshift the query id, unpriced until the query history gives
its usage. dbt Cloud itself bills successful models built: the run is one `models_built` line (tests,
seeds and snapshots are not counted), priced at the Starter plan's price per model (override it with
yours). Every line keeps the dbt Cloud run, job, project, environment and account ids.

Connection: `dbt_cloud_default` (the account id as login, an API token as password, your access URL's
host as host when it is not cloud.getdbt.com). Set the job ids to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.dbt.cloud.operators.dbt import DbtCloudRunJobOperator
from airflow.providers.dbt.cloud.sensors.dbt import DbtCloudJobRunSensor
from airflow.sdk import dag

NIGHTLY_JOB_ID = 70403
HOURLY_JOB_ID = 70404


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "dbt-cloud"],
)
def example_dbt_cloud():
    DbtCloudRunJobOperator(
        task_id="nightly_build",
        dbt_cloud_conn_id="dbt_cloud_default",
        job_id=NIGHTLY_JOB_ID,
        check_interval=30,
        timeout=3 * 3600,
    )
    start_hourly = DbtCloudRunJobOperator(
        task_id="start_hourly",
        dbt_cloud_conn_id="dbt_cloud_default",
        job_id=HOURLY_JOB_ID,
        wait_for_termination=False,
    )
    wait_hourly = DbtCloudJobRunSensor(
        task_id="wait_hourly",
        dbt_cloud_conn_id="dbt_cloud_default",
        run_id="{{ ti.xcom_pull(task_ids='start_hourly', key='job_run_id') }}",
        poke_interval=30,
        timeout=3600,
    )
    start_hourly >> wait_hourly


example_dbt_cloud()
