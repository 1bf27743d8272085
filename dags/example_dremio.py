"""Dremio: rebuild the day's revenue with Dremio's REST API, through the HTTP provider.

Airflow has no Dremio provider: a DAG sends SQL with `HttpOperator` or `HttpHook` to
`POST /api/v3/sql` (Dremio Software) or `POST /v0/projects/{project_id}/sql` (Dremio Cloud), which
answers with a job id, and reads `GET .../job/{id}` until the job ends.

Cost: the SQL of every query carries the task's identity as a sqlcommenter comment, which Dremio keeps
with the job (`sys.jobs_recent.query`, `sys.project.history.jobs.query`). When the task ends, each job it
submitted is read once from the job API (none when the task itself already read the job finished): the
time it held its engine (from the engine slot being granted to its end) x the engine size's DCUs per
hour gives its DCUs, priced per DCU (method `runtime_rate`). Set the engine's size with
`[cost_provider] connection_pricing`, e.g. `{"dremio_default": {"engine_size": "Medium"}}` (Dremio
Cloud) or `{"dremio_default": {"dcu_per_hour": "32"}}` (Dremio Software, 1 DCU = 1 vCPU-hour), and
your price per DCU as a `dremio/dcu` entry of your price book. A job still running when its task ends
is kept, unpriced, with its id and the reason.

Connection: `dremio_default`, an HTTP connection to your Dremio (host and port, and the header
`{"Authorization": "Bearer <personal access token>"}` in its extra). Set `PROJECT` to your Dremio
Cloud project, or the endpoints to `api/v3/...` for Dremio Software.
"""

from __future__ import annotations

import json
import time

import pendulum
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import dag, task

PROJECT = "00000000-0000-0000-0000-000000000000"
CONN_ID = "dremio_default"
HEADERS = {"Content-Type": "application/json"}


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "http", "dremio"],
)
def example_dremio():
    delete_day = HttpOperator(
        task_id="delete_day",
        http_conn_id=CONN_ID,
        method="POST",
        endpoint=f"v0/projects/{PROJECT}/sql",
        headers=HEADERS,
        data=json.dumps(
            {"sql": "DELETE FROM lake.analytics.daily_revenue WHERE order_date = DATE '{{ ds }}'"}
        ),
        response_filter=lambda response: response.json()["id"],
    )

    @task
    def build_daily_revenue(ds: str | None = None) -> str:
        from airflow.providers.http.hooks.http import HttpHook

        sql = (
            "INSERT INTO lake.analytics.daily_revenue "
            "SELECT order_date, country, COUNT(*) AS orders, SUM(amount) AS revenue "
            f"FROM lake.raw.orders WHERE order_date = DATE '{ds}' GROUP BY order_date, country"
        )
        job_id = (
            HttpHook(method="POST", http_conn_id=CONN_ID)
            .run(f"v0/projects/{PROJECT}/sql", json.dumps({"sql": sql}), headers=HEADERS)
            .json()["id"]
        )
        poll = HttpHook(method="GET", http_conn_id=CONN_ID)
        while True:  # the task's own reads: the last one gives the job's engine time, no extra call
            job = poll.run(f"v0/projects/{PROJECT}/job/{job_id}").json()
            if job["jobState"] in ("COMPLETED", "FAILED", "CANCELED"):
                break
            time.sleep(5)
        if job["jobState"] != "COMPLETED":
            raise RuntimeError(f"Dremio job {job_id} {job['jobState']}: {job.get('errorMessage')}")
        return job_id

    delete_day >> build_daily_revenue()


example_dremio()
