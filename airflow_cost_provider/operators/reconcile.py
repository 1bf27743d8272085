"""ReconcileBillingOperator: a scheduled `airflow-cost reconcile` of the run's billing days.

Runs after the billing import of the same days: each run reconciles its billing day and the days
before it that the import reads again (restated bills), replacing what earlier runs wrote for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_cost_provider.billing import window
from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)
_FIGURES = ("billed", "attributed", "unattributed", "untouched")


class ReconcileBillingOperator(BaseOperator):
    """Split the imported bill of the run's billing days over the task tries that used it.

    :param reimport_days: days before the billing day to reconcile again (default `[cost_provider]
        storage_reimport_days`, 5: the days the billing import reads again).
    :param since: the first billing day to reconcile (YYYY-MM-DD), instead of the run's days; with
        `until` (excluded).
    :param until: the billing day to stop before.
    :param last_days: reconcile the last N billing days up to today (UTC) instead of the run's days:
        for manual runs, and to catch up.
    :param billing_resources: rules as `[cost_provider] billing_resources` takes them (default: that
        option).
    :param mode: `keep`, `spread` or a source -> mode dict (default `[cost_provider] reconcile_mode`).
    :param ledger_conn: the ledger's URL or connection id (default `[cost_provider] ledger_conn`).
    :param bigquery_jobs: `PROJECT:LOCATION` items whose jobs' slot-ms per reservation and day are read
        from INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT to split BigQuery reservations' bills (default:
        each job's own statistics, on the day it started).
    :param gcp_conn_id: the Google Cloud connection for `bigquery_jobs` (default `google_cloud_default`;
        a task without `bigquery_jobs` names no connection).
    :return: (XCom) the period and, per currency, billed, attributed, unattributed and untouched.
    """

    template_fields: Sequence[str] = ("billing_resources", "since", "until")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        reimport_days: int | None = None,
        since: str | None = None,
        until: str | None = None,
        last_days: int | None = None,
        billing_resources: list[dict[str, Any]] | None = None,
        mode: str | dict[str, str] | None = None,
        ledger_conn: str | None = None,
        bigquery_jobs: list[str] | None = None,
        gcp_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bigquery_jobs:
            from airflow_cost_provider.billing.bigquery_reservations import parse_projects

            parse_projects(bigquery_jobs)  # fails at parse time on a malformed item
        self.bigquery_jobs = bigquery_jobs
        self.gcp_conn_id = gcp_conn_id
        self.reimport_days = reimport_days
        self.since = since
        self.until = until
        self.last_days = last_days
        self.billing_resources = billing_resources
        self.mode = mode
        self.ledger_conn = ledger_conn

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_cost_provider import conf
        from airflow_cost_provider.ledger.store import get_engine, resolve_url
        from airflow_cost_provider.reconcile import store
        from airflow_cost_provider.reconcile.coverage import coverage
        from airflow_cost_provider.reconcile.engine import Window, run
        from airflow_cost_provider.reconcile.rules import parse_modes, parse_rules

        rules = (
            conf.billing_resources()
            if self.billing_resources is None
            else parse_rules(self.billing_resources)
        )
        modes = conf.reconcile_mode() if self.mode is None else parse_modes(self.mode)
        if self.since and self.until:
            days = DateWindow(dt.date.fromisoformat(self.since), dt.date.fromisoformat(self.until))
        elif self.last_days:
            tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
            days = DateWindow(tomorrow - dt.timedelta(days=self.last_days), tomorrow)
        else:
            days = window.import_window(
                window.billing_period(context),
                reimport_days=conf.storage_reimport_days()
                if self.reimport_days is None
                else self.reimport_days,
            )
        engine = get_engine(resolve_url(self.ledger_conn or conf.ledger_conn(), conf.default_ledger_url()))
        job_slots = None
        if self.bigquery_jobs:
            from airflow_cost_provider.billing.bigquery_reservations import parse_projects, read_job_slots

            job_slots = read_job_slots(
                days,
                parse_projects(self.bigquery_jobs),
                gcp_conn_id=self.gcp_conn_id or "google_cloud_default",
            )
        result = run(engine, Window(days.start, days.end), rules, modes, job_slots)
        try:
            if result.billed_rows:
                store.write(engine, result)
        finally:
            result.close()
        log.info(
            "reconciled %s billing rows of %s in %s pools with %s cost lines",
            result.billed_rows,
            days,
            result.pools,
            result.lines,
        )
        totals: dict[str, dict[str, Decimal]] = {}
        for row in coverage(engine, days.start, days.end, "provider"):
            sums = totals.setdefault(row.currency, dict.fromkeys(_FIGURES, Decimal(0)))
            for name in _FIGURES:
                sums[name] += getattr(row, name)
            log.info(
                "%s: billed %s %s, attributed %s, unattributed %s, untouched %s",
                row.key,
                row.billed,
                row.currency,
                row.attributed,
                row.unattributed,
                row.untouched,
            )
        return {
            "since": days.start.isoformat(),
            "until": days.end.isoformat(),
            "totals": {currency: {k: str(v) for k, v in sums.items()} for currency, sums in totals.items()},
        }
