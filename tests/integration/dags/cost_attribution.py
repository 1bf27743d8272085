"""Test DAG: attribution of cost. An owner, DAG tags naming the team, cost labels in the DAG's params,
and a task whose own params name another team and labels."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["team:marketing", "pii"],
    params={"cost_labels": {"product": "crm"}},
    default_args={"owner": "ana"},
)
def cost_attribution():
    @task
    def extract() -> None:
        # what every statement and job of this try is tagged with, for the test to read
        from airflow_cost_provider.capture.session import current_session

        path = os.environ.get("COST_ATTRIBUTION_COMMENT")
        if path:
            with open(path, "w") as out:
                out.write(current_session().sql_comment)

    @task(owner="bob", params={"cost_team": "finance", "cost_labels": {"product": "erp", "env": "prod"}})
    def load() -> None:
        sum(i * i for i in range(100_000))

    extract() >> load()


cost_attribution()
