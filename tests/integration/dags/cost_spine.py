"""Test DAG: a CPU-heavy task, a mapped task, a task that fails and one that succeeds on its retry."""

from __future__ import annotations

import datetime as dt
import time

import pendulum
from airflow.sdk import dag, task

CPU_SECONDS = 1.5


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_spine():
    @task
    def cpu_heavy() -> int:
        # burn CPU until the process has used CPU_SECONDS of it
        start, n = time.process_time(), 0
        while time.process_time() - start < CPU_SECONDS:
            n += sum(i * i for i in range(10_000))
        return n % 97

    @task
    def fan_out(value: int) -> list[int]:
        return [value, value + 1, value + 2]

    @task
    def mapped(item: int) -> int:
        return item * 2

    @task(retries=0)
    def always_fails() -> None:
        raise RuntimeError("this task fails on purpose")

    @task(retries=1, retry_delay=dt.timedelta(seconds=0))
    def retries_once(ti=None) -> str:
        if ti.try_number < 2:
            raise RuntimeError("first try fails on purpose")
        return "second try succeeded"

    mapped.expand(item=fan_out(cpu_heavy()))
    always_fails()
    retries_once()


cost_spine()
