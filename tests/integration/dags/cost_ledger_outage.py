"""Test DAG for a ledger outage in the middle of a run: `stop_ledger` stops the ledger's database and
`start_ledger` starts it again, with the commands given as JSON lists in LEDGER_STOP_COMMAND and
LEDGER_START_COMMAND. Every task must succeed, and every try must reach the ledger."""

from __future__ import annotations

import json
import os
import subprocess

import pendulum
from airflow.sdk import dag, task


def _run(variable: str) -> None:
    subprocess.run(json.loads(os.environ[variable]), check=True, capture_output=True, timeout=60, cwd="/")


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_ledger_outage():
    @task
    def before() -> str:
        return "ok"

    @task
    def stop_ledger() -> None:
        if os.environ.get("LEDGER_STOP_COMMAND"):
            _run("LEDGER_STOP_COMMAND")

    @task
    def during() -> str:
        return "ok"

    @task
    def start_ledger() -> None:
        if os.environ.get("LEDGER_START_COMMAND"):
            _run("LEDGER_START_COMMAND")

    @task
    def after() -> str:
        return "ok"

    before() >> stop_ledger() >> during() >> start_ledger() >> after()


cost_ledger_outage()
