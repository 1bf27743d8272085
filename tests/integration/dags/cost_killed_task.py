"""Test DAG for a task process killed mid-task: its first try writes its pid where the test finds it
and waits to be killed (SIGKILL: no listener runs, no cost is reported); Airflow fails it and runs the
second try, which finishes at once. A sibling task finishes normally."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["many-writers"],
)
def cost_killed_task():
    @task(retries=1, retry_delay=dt.timedelta(seconds=1))
    def killed_once() -> str:
        context = get_current_context()
        if context["ti"].try_number == 1:
            pid_file = Path(os.environ["AIRFLOW_HOME"]) / f"killed-{context['run_id']}.pid"
            pid_file.write_text(str(os.getpid()))
            time.sleep(300)  # the test kills this process long before
        return "second try"

    @task
    def finishes() -> int:
        return sum(range(1000))

    killed_once()
    finishes()


cost_killed_task()
