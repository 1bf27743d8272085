"""Test DAG: the Amazon provider's own GlueJobOperator (normal and deferrable) and GlueJobHook,
unchanged, against the moto server the tests start (connection aws_default comes from the
environment). Polling intervals are short so the DAG runs in seconds."""

from __future__ import annotations

import importlib.util

import pendulum
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.sdk import dag, task

ROLE = "arn:aws:iam::123456789012:role/glue-etl"
SCRIPTS = "s3://etl-scripts"

if importlib.util.find_spec("aiobotocore") is not None:
    DeferrableGlueJobOperator = GlueJobOperator
else:  # the provider's trigger polls with aiobotocore; see tests/support/fake_glue.py
    from tests.support.fake_glue import GlueJobOperatorWithoutAiobotocore as DeferrableGlueJobOperator


def glue_job(task_id: str, job_name: str, *, operator=GlueJobOperator, **kwargs) -> GlueJobOperator:
    return operator(
        task_id=task_id,
        job_name=job_name,
        script_location=f"{SCRIPTS}/{job_name}.py",
        iam_role_arn=ROLE,
        job_poll_interval=0.2,
        **kwargs,
    )


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_glue():
    orders = glue_job(
        "orders_etl",
        "orders_etl",
        create_job_kwargs={"GlueVersion": "4.0", "WorkerType": "G.1X", "NumberOfWorkers": 10},
        script_args={"--day": "{{ ds }}", "--airflow_dag_id": "set-by-the-user"},
    )
    sessions = glue_job(
        "sessions_flex",
        "sessions_flex",
        create_job_kwargs={
            "GlueVersion": "4.0",
            "ExecutionClass": "FLEX",
            "WorkerType": "G.1X",
            "NumberOfWorkers": 2,
        },
        run_job_kwargs={"WorkerType": "G.2X", "NumberOfWorkers": 5},
    )
    deferred = glue_job(
        "deferred_orders",
        "deferred_orders",
        operator=DeferrableGlueJobOperator,
        create_job_kwargs={"GlueVersion": "4.0", "WorkerType": "G.1X", "NumberOfWorkers": 4},
        deferrable=True,
        waiter_delay=1,
        waiter_max_attempts=10,
    )

    @task
    def shell_cleanup() -> str:
        """User code on the hook: a Python shell job the test created, sized by MaxCapacity."""
        from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

        hook = GlueJobHook(job_name="shell_cleanup", aws_conn_id="aws_default", job_poll_interval=0.2)
        run_id = hook.initialize_job({"--older_than_days": "30"})["JobRunId"]
        state = hook.job_completion("shell_cleanup", run_id)["JobRunState"]
        assert state == "SUCCEEDED", state
        return run_id

    # runs the task does not wait for: their statistics are read only when the task ends, and the
    # test makes that look-up fail (HTTP 500) or hang
    unread = glue_job(
        "unread_run",
        "flaky_job",
        create_job_kwargs={"GlueVersion": "4.0", "WorkerType": "G.1X", "NumberOfWorkers": 2},
        wait_for_completion=False,
    )
    stalled = glue_job(
        "stalled_read",
        "slow_job",
        create_job_kwargs={"GlueVersion": "4.0", "WorkerType": "G.1X", "NumberOfWorkers": 2},
        wait_for_completion=False,
    )

    orders >> sessions >> deferred >> shell_cleanup() >> unread >> stalled


cost_glue()
