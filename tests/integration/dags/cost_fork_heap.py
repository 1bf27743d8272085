"""Test DAG: tasks that note whether the heap is frozen while their code runs (it must not be); one
succeeds, one fails, so the OpenLineage listener forks for START, COMPLETE and FAIL."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from tests.support.fork_probe import note


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_fork_heap():
    @task
    def succeeds() -> None:
        note("task", task_id="succeeds")

    @task(retries=0, trigger_rule="all_done")
    def fails() -> None:
        note("task", task_id="fails")
        raise RuntimeError("this task fails on purpose")

    succeeds() >> fails()


cost_fork_heap()
