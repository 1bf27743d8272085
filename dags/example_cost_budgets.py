"""Budgets: every hour, evaluate the cost budgets of `[cost_provider] budgets_path` and deliver their alerts.

Each task end already checks the budgets its own cost counts towards. This scheduled evaluation
adds what no task end sees: forecasts as a period goes on, anomalies, storage costs imported from
billing data, and a second try for alerts whose delivery failed (a webhook or mail server that was
down). Alerts go to the webhooks and Airflow notifiers each budget names, once per budget, period
and threshold; each one is kept in the ledger with its delivery status.

Needs no cloud account: it reads the cost ledger only. Without a budgets file it says so and
succeeds. See the README's Budgets section for the file and what an alert looks like.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_cost_provider.operators.budgets import EvaluateBudgetsOperator


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["cost-provider", "example", "budgets", "local"],
    doc_md=__doc__,
)
def example_cost_budgets():
    EvaluateBudgetsOperator(task_id="evaluate_budgets")


example_cost_budgets()
