"""Test DAG: one task running many small statements through PostgresHook (connection pg_shop from the
environment), more than [cost_provider] max_lines_per_task."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

STATEMENTS = 300


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_many_statements():
    @task
    def loop_of_queries() -> int:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="pg_shop")
        hook.run([f"SELECT {n}" for n in range(STATEMENTS)])
        return STATEMENTS

    loop_of_queries()


cost_many_statements()
