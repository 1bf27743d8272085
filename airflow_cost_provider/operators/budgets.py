"""Budgets in a DAG: a guard to put first that stops a run when its budget is spent, and the scheduled
evaluation that alerts on forecasts and on costs no task end sees (imported storage costs).

Both read the budgets file (`budgets_path=`, else `[cost_provider] budgets_path`) when they run, not
when the DAG is parsed, and the ledger (`ledger_conn=`, else `[cost_provider] ledger_conn`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator

log = logging.getLogger(__name__)

# The scheduled evaluation's whole delivery round; each delivery has its own, shorter bound.
EVALUATION_TIMEOUT_SECONDS = 300.0


def _budgets_file(budgets_path: str | None) -> str | None:
    from airflow_cost_provider import conf

    return budgets_path or conf.budgets_path() or None


def _engine(ledger_conn: str | None):
    from airflow_cost_provider import conf
    from airflow_cost_provider.ledger.store import get_engine, resolve_url

    return get_engine(resolve_url(ledger_conn or conf.ledger_conn(), conf.default_ledger_url()))


def _status_record(status: Any) -> dict[str, Any]:
    """A BudgetStatus as log- and XCom-friendly text (money as exact decimal strings)."""
    from airflow_cost_provider.budgets import message

    budget = status.budget
    spent = message.amount_in(status.spent, budget.currency) or Decimal(0)
    percent = status.percent if status.percent is not None else spent * 100 / budget.amount
    return {
        "budget": budget.name,
        "scope": budget.scope.describe(),
        "period": budget.period,
        "period_start": message.day_of(status.period_start).isoformat(),
        "period_end": message.day_of(status.period_end).isoformat(),
        "spent": message.plain(spent),
        "forecast": message.plain(message.amount_in(status.forecast, budget.currency)),
        "amount": message.plain(budget.amount),
        "currency": budget.currency,
        "percent": message.percent_text(percent),
        "crossed": [crossing.key for crossing in _crossings(status)],
    }


def _crossings(status: Any) -> list[Any]:
    from airflow_cost_provider.budgets.alerts import crossings

    return crossings(status)


class BudgetGuardOperator(BaseOperator):
    """Put it first in a DAG: when one of `budgets` has `enforce: skip` or `enforce: fail` and its
    period's actual spend has reached its amount, the run stops here.

    `enforce: skip` raises AirflowSkipException (the tasks after it are skipped, the run is not a
    failure); `enforce: fail` raises AirflowFailException (no retries). The message names the budget,
    what it spent and its amount. A named budget without `enforce` is only reported in the log.

    :param budgets: names of budgets in the budgets file.
    :param budgets_path: the budgets file (default `[cost_provider] budgets_path`).
    :param ledger_conn: the ledger's URL or connection id (default `[cost_provider] ledger_conn`).
    """

    template_fields: Sequence[str] = ("budgets",)
    ui_color = "#fdf1d6"

    def __init__(
        self,
        *,
        budgets: Sequence[str],
        budgets_path: str | None = None,
        ledger_conn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(budgets, str) or not budgets:
            raise ValueError(
                "BudgetGuardOperator(budgets=...) takes a list of budget names, e.g. ['marketing']"
            )
        self.budgets = list(budgets)
        self.budgets_path = budgets_path
        self.ledger_conn = ledger_conn

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from airflow_cost_provider.budgets.evaluate import evaluate
        from airflow_cost_provider.budgets.model import load_budgets_cached

        path = _budgets_file(self.budgets_path)
        if not path:
            raise ValueError(
                "BudgetGuardOperator: no budgets file: set [cost_provider] budgets_path or pass budgets_path="
            )
        by_name = {budget.name: budget for budget in load_budgets_cached(path)}
        unknown = [name for name in self.budgets if name not in by_name]
        if unknown:
            raise ValueError(
                f"BudgetGuardOperator: {path} has no budget named {', '.join(map(repr, unknown))}; it has "
                f"{', '.join(map(repr, by_name)) or 'none'}"
            )
        engine = _engine(self.ledger_conn)
        now = dt.datetime.now(dt.timezone.utc)
        records, spent_out = [], []
        for name in self.budgets:
            budget = by_name[name]
            status = evaluate(engine, budget, now)
            record = _status_record(status)
            records.append(record)
            log.info(
                "budget %r (%s): spent %s of %s %s (%s%%) in its %s period from %s; enforce: %s",
                name,
                record["scope"],
                record["spent"],
                record["amount"],
                budget.currency,
                record["percent"],
                budget.period,
                record["period_start"],
                budget.enforce or "off",
            )
            if budget.enforce and Decimal(record["spent"]) >= budget.amount:
                spent_out.append((budget, record))
        if spent_out:
            stop = "; ".join(self._spent_message(budget, record) for budget, record in spent_out)
            if any(budget.enforce == "fail" for budget, _ in spent_out):
                raise AirflowFailException(stop)
            raise AirflowSkipException(stop)
        return records

    @staticmethod
    def _spent_message(budget: Any, record: dict[str, Any]) -> str:
        last_day = dt.date.fromisoformat(record["period_end"]) - dt.timedelta(days=1)
        return (
            f"budget {budget.name!r} is spent: {record['spent']} {budget.currency} of "
            f"{record['amount']} {budget.currency} ({record['percent']}%) in its {budget.period} period "
            f"{record['period_start']} to {last_day} ({budget.timezone}); enforce: {budget.enforce}"
        )


class EvaluateBudgetsOperator(BaseOperator):
    """Evaluate budgets now and deliver their alerts: thresholds crossed, forecasts, anomalies, and
    retries of deliveries that failed. Run it on a schedule (see dags/example_cost_budgets.py): task
    ends only evaluate the budgets of the try that ended, and imported storage costs have none.

    Returns one record per budget (name, period, spent, forecast, amount, percent, thresholds
    crossed) with what happened to its alerts. A budget that cannot be evaluated fails the task after
    the others are done; a failed delivery does not (it is retried at the next evaluation).

    :param budgets: names of the budgets to evaluate (default: every budget in the file).
    :param budgets_path: the budgets file (default `[cost_provider] budgets_path`; without one the
        task says so and succeeds).
    :param ledger_conn: the ledger's URL or connection id (default `[cost_provider] ledger_conn`).
    :param timeout: seconds for the whole delivery round (each delivery also has its own bound).
    """

    template_fields: Sequence[str] = ("budgets",)
    ui_color = "#fdf1d6"

    def __init__(
        self,
        *,
        budgets: Sequence[str] | None = None,
        budgets_path: str | None = None,
        ledger_conn: str | None = None,
        timeout: float = EVALUATION_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(budgets, str):
            raise ValueError("EvaluateBudgetsOperator(budgets=...) takes a list of budget names")
        self.budgets = list(budgets) if budgets is not None else None
        self.budgets_path = budgets_path
        self.ledger_conn = ledger_conn
        self.timeout = timeout

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from airflow_cost_provider.budgets.alerts import record_and_deliver
        from airflow_cost_provider.budgets.evaluate import evaluate
        from airflow_cost_provider.budgets.model import load_budgets_cached

        path = _budgets_file(self.budgets_path)
        if not path:
            log.info("no budgets to evaluate: [cost_provider] budgets_path is not set")
            return []
        budgets = load_budgets_cached(path)
        if self.budgets is not None:
            unknown = sorted(set(self.budgets) - {budget.name for budget in budgets})
            if unknown:
                raise ValueError(f"EvaluateBudgetsOperator: {path} has no budget named {', '.join(unknown)}")
            budgets = [budget for budget in budgets if budget.name in self.budgets]
        engine = _engine(self.ledger_conn)
        now = dt.datetime.now(dt.timezone.utc)
        deadline = time.monotonic() + self.timeout
        statuses, failed = [], []
        for budget in budgets:
            try:
                statuses.append(evaluate(engine, budget, now))
            except Exception as error:
                log.error("budget %r cannot be evaluated: %s: %s", budget.name, type(error).__name__, error)
                failed.append(budget.name)
        outcomes = record_and_deliver(engine, statuses, now, deadline)
        records = []
        for status in statuses:
            record = _status_record(status)
            record["alerts"] = [
                {"threshold": o.threshold, "channel": o.channel, "status": o.status, "error": o.error}
                for o in outcomes
                if o.budget == status.budget.name
            ]
            records.append(record)
            log.info(
                "budget %r (%s): spent %s of %s %s (%s%%), forecast %s; crossed: %s; alerts: %s",
                record["budget"],
                record["scope"],
                record["spent"],
                record["amount"],
                record["currency"],
                record["percent"],
                record["forecast"] or "none yet",
                ", ".join(record["crossed"]) or "none",
                ", ".join(f"{a['threshold']} to {a['channel']} {a['status']}" for a in record["alerts"])
                or "none due",
            )
        if failed:
            raise RuntimeError(
                f"budgets that could not be evaluated: {', '.join(failed)} (see the log above)"
            )
        return records
