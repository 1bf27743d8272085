"""Test DAG: one task whose worker compute crosses a tiny budget, and a guard in front of it."""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task

from airflow_cost_provider.operators.budgets import BudgetGuardOperator


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["team:finops"])
def cost_budget_alerts():
    @task
    def crunch() -> int:
        start, n = time.process_time(), 0
        while time.process_time() - start < 0.2:
            n += sum(i * i for i in range(10_000))
        return n % 97

    crunch()


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_budget_guard():
    @task
    def spend() -> str:
        return "ran: the budget was not spent yet"

    BudgetGuardOperator(task_id="guard", budgets=["guarded"]) >> spend()


cost_budget_alerts()
cost_budget_guard()
