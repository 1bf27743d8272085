"""Test DAG for fault injection: with COST_FAULTS=1 in the environment, the cost provider's capture,
pricing and ledger steps raise for one task each. Every task must still succeed."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag, task

if os.environ.get("COST_FAULTS") == "1":
    from airflow_cost_provider import tracker
    from airflow_cost_provider.capture import session as capture_session
    from airflow_cost_provider.capture import worker
    from airflow_cost_provider.ledger import store as ledger_store

    def _fail_for(task_id, original, task_of):
        def injected(*args, **kwargs):
            if task_of(*args, **kwargs) == task_id:
                raise RuntimeError(f"injected fault for {task_id}")
            return original(*args, **kwargs)

        return injected

    def _current_task(*_args, **_kwargs):
        session = capture_session.current_session()
        return session.task_try.task_id if session else None

    worker.usage_between = _fail_for("capture_fault", worker.usage_between, _current_task)
    tracker.estimate_all = _fail_for("pricing_fault", tracker.estimate_all, _current_task)
    ledger_store.store = _fail_for(
        "ledger_fault", ledger_store.store, lambda _engine, result: result.task_try.task_id
    )


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_faults():
    @task
    def capture_fault() -> str:
        return "ok"

    @task
    def pricing_fault() -> str:
        return "ok"

    @task
    def ledger_fault() -> str:
        return "ok"

    @task
    def healthy() -> str:
        return "ok"

    capture_fault() >> pricing_fault() >> ledger_fault() >> healthy()


cost_faults()
