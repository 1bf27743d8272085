"""Test DAG: a task that records usage and leaves a job's statistics to fetch, defers, and resumes in
a new task process; its cost must include what it used on both sides of the deferral."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pendulum
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, dag

from airflow_cost_provider.capture.session import current_session
from airflow_cost_provider.pricing.model import Usage


class DeferringJobOperator(BaseOperator):
    def execute(self, context):
        from tests.support.deferral_probe import ProbeJob, resolve_probe_jobs

        session = current_session()
        session.record(
            Usage("athena", "data_scanned", Decimal(10**12), "byte", external_id="before-deferral")
        )
        session.defer(resolve_probe_jobs, ProbeJob("job-started-before-deferral", 2**40))
        self.defer(trigger=TimeDeltaTrigger(dt.timedelta(seconds=1)), method_name="resume")

    def resume(self, context, event=None):
        current_session().record(
            Usage("athena", "data_scanned", Decimal(2 * 10**12), "byte", external_id="after-deferral")
        )
        return "resumed"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_deferral():
    DeferringJobOperator(task_id="deferring_job")


cost_deferral()
