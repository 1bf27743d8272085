"""Test DAG: Dremio's REST API through the HTTP provider's hook and operator, unchanged, against the fake
Dremio the tests start (connections dremio_cloud, dremio_software and dremio_unsized come from the
environment; the software connection holds no credentials, the operator sends them itself)."""

from __future__ import annotations

import json
import time

import pendulum
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import dag, task

PROJECT = "6d2146a0-c2d5-41bd-8ca0-ca9694ada992"
TOKEN = "test-pat-not-a-secret-0001"


def wait_for(conn_id: str, job_path: str) -> str:
    from airflow.providers.http.hooks.http import HttpHook

    poll = HttpHook(method="GET", http_conn_id=conn_id)
    for _ in range(50):
        state = poll.run(job_path).json()["jobState"]
        if state in ("COMPLETED", "FAILED", "CANCELED"):
            return state
        time.sleep(0.05)
    raise TimeoutError(job_path)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_dremio():
    @task
    def cloud_queries_waited() -> list[str]:
        from airflow.providers.http.hooks.http import HttpHook

        submit = HttpHook(method="POST", http_conn_id="dremio_cloud")
        headers = {"Content-Type": "application/json"}
        first = submit.run(
            f"v0/projects/{PROJECT}/sql",
            json.dumps({"sql": "SELECT 1500, 'slow' AS pace FROM sales.orders;"}),
            headers=headers,
        ).json()["id"]
        second = submit.run(
            f"/v0/projects/{PROJECT}/sql", json={"sql": "SELECT 900 FROM sales.returns WHERE FAIL_ME"}
        ).json()["id"]
        states = [wait_for("dremio_cloud", f"v0/projects/{PROJECT}/job/{job}") for job in (first, second)]
        assert states == ["COMPLETED", "FAILED"], states
        return [first, second]

    software_operator = HttpOperator(
        task_id="software_operator",
        http_conn_id="dremio_software",
        endpoint="api/v3/sql",
        method="POST",
        data=json.dumps({"sql": "SELECT 2400 FROM lake.events", "context": ["lake"]}),
        headers={"Content-Type": "application/json", "Authorization": f"_dremio{TOKEN}"},
        response_filter=lambda response: response.json()["id"],
    )

    @task
    def unsized_queries() -> None:
        from airflow.providers.http.hooks.http import HttpHook

        submit = HttpHook(method="POST", http_conn_id="dremio_unsized")
        submit.run("api/v3/sql", json={"sql": "SELECT 300 FROM lake.events"})
        submit.run("api/v3/sql", json={"sql": "SELECT 1 FROM lake.stream NEVER_ENDS"})
        # not a query: the HTTP hook's other calls are left alone
        HttpHook(method="GET", http_conn_id="dremio_unsized").run(
            "api/v3/catalog", extra_options={"check_response": False}
        )

    @task
    def faulty_lookups() -> None:
        from airflow.providers.http.hooks.http import HttpHook

        submit = HttpHook(method="POST", http_conn_id="dremio_cloud")
        submit.run(f"v0/projects/{PROJECT}/sql", json={"sql": "SELECT 10 FROM sales.orders LOOKUP_FAILS"})
        submit.run(f"v0/projects/{PROJECT}/sql", json={"sql": "SELECT 20 FROM sales.orders LOOKUP_SLOW"})

    cloud_queries_waited() >> software_operator >> unsized_queries() >> faulty_lookups()


cost_dremio()
