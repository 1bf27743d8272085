"""Budget alerts in the ledger: recorded once per (budget, period, threshold, channel), delivered, and
retried until sent.

The ledger's unique key makes an alert fire once however many evaluations see the same crossing
(every task end in the scope, the scheduled DAG, many workers at once). Before delivering, an
evaluation claims the row by raising its attempt count where it still holds the count it read, so of
two evaluations only one delivers. A failed or unfinished delivery stays `failed` or `pending` and a
later evaluation retries it once its back-off has passed (1, 2, 4, ... minutes, at most an hour
apart), so a webhook that is down does not slow every task end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from airflow_cost_provider.budgets import message, notify
from airflow_cost_provider.budgets.message import Crossing
from airflow_cost_provider.capture.safety import report_failure
from airflow_cost_provider.ledger.schema import NANOS_PER_UNIT, budget_alerts

log = logging.getLogger("airflow_cost_provider")

PENDING, SENT, FAILED = "pending", "sent", "failed"
MAX_BACKOFF_MINUTES = 60
MIN_DELIVERY_SECONDS = 0.05  # less time than this left: the next evaluation delivers it
KEEP_SECONDS = 0.1  # kept from a delivery's bound to write its outcome before the deadline
THRESHOLD_LENGTH = 100  # cost_budget_alerts.threshold
LOG_CHANNEL = "log"  # a budget without notify targets: its alerts go to the task log only


@dataclasses.dataclass(frozen=True)
class AlertOutcome:
    """What one evaluation did with one alert: sent, failed (with the kept error), or left pending
    (not due yet, no time left, or delivered by another evaluation)."""

    budget: str
    period_start: dt.date
    threshold: str
    channel: str
    status: str
    attempts: int
    error: str | None = None


def evaluate_and_alert(
    engine: Engine, budgets: Sequence[Any], now: dt.datetime, deadline: float, task_try: Any = None
) -> list[AlertOutcome]:
    """Evaluate the budgets at `now` and record and deliver what they crossed, until the monotonic
    `deadline`. `task_try`: the try whose end triggered it (only its run is judged by the run anomaly
    rule). A budget that cannot be evaluated is logged and skipped. Never raises."""
    from airflow_cost_provider.budgets.evaluate import evaluate, evaluate_all

    run = (task_try.dag_id, task_try.run_id) if task_try is not None else None
    try:
        statuses = evaluate_all(engine, budgets, now, run=run)  # all budgets in a few round trips
    except Exception:
        statuses = []  # find the budget that fails, and evaluate the others one by one
        for budget in budgets:
            if time.monotonic() >= deadline:
                report_failure("evaluating budgets", TimeoutError("no time left for the remaining budgets"))
                break
            try:
                statuses.append(evaluate(engine, budget, now, run=run))
            except Exception as error:
                report_failure(f"evaluating budget {budget.name!r}", error)
    return record_and_deliver(engine, statuses, now, deadline, task_try)


def record_and_deliver(
    engine: Engine, statuses: Iterable[Any], now: dt.datetime, deadline: float, task_try: Any = None
) -> list[AlertOutcome]:
    """For each crossed threshold of each BudgetStatus and each of its budget's notify targets: record
    the alert once, deliver what is due within the monotonic `deadline`, and keep how it went.
    `task_try` is the try whose end triggered the evaluation (for the links), if any. Never raises."""
    outcomes: list[AlertOutcome] = []
    for status in statuses:
        try:
            outcomes += _alert_budget(engine, status, now, deadline, task_try)
        except Exception as error:
            report_failure(f"recording the alerts of budget {status.budget.name!r}", error)
    return outcomes


def crossings(status: Any) -> list[Crossing]:
    """What `status` alerts on: each crossed threshold and each anomaly, under its ledger key."""
    return [Crossing(_threshold_key(t.key), t.kind, t.message) for t in status.triggers]


def due(row: Any, now: dt.datetime) -> bool:
    """Whether an unsent alert may be tried now: at once when never tried, then 1, 2, 4, ... minutes
    (at most MAX_BACKOFF_MINUTES) after each attempt, counted from when it was recorded."""
    if row["status"] == SENT:
        return False
    waited = sum(min(2**attempt, MAX_BACKOFF_MINUTES) for attempt in range(row["attempts"]))
    return now >= row["created_at"] + dt.timedelta(minutes=waited)


# --------------------------------------------------------------------------------- one budget


def _alert_budget(
    engine: Engine, status: Any, now: dt.datetime, deadline: float, task_try: Any
) -> list[AlertOutcome]:
    budget = status.budget
    # no notify target: the alert is still kept, and written to the evaluating task's log
    targets = {notify.channel(target): target for target in budget.notify} or {LOG_CHANNEL: None}
    found = crossings(status)
    if not found and task_try is not None:
        return []  # a task end with nothing crossed costs no read; the scheduled run retries the rest
    period_start = message.day_of(status.period_start)
    rows = {(row["threshold"], row["channel"]): row for row in _read(engine, budget.name, period_start)}
    for crossing in found:
        alert = None
        for channel in targets:
            if (crossing.key, channel) in rows:
                continue
            alert = alert or message.compose(status, crossing, now, task_try)
            row = _record(engine, status, crossing, channel, alert, now)
            if row is not None:
                rows[(crossing.key, channel)] = row
    outcomes = []
    for row in sorted(rows.values(), key=lambda r: r["id"]):
        if row["channel"] not in targets or not due(row, now):
            continue  # a target no longer in the budget file; or sent, or retried later
        target = targets[row["channel"]]
        outcomes.append(_deliver(engine, row, target, deadline))
    return outcomes


def _read(engine: Engine, budget: str, period_start: dt.date) -> list[dict[str, Any]]:
    query = sa.select(budget_alerts).where(
        budget_alerts.c.budget == budget, budget_alerts.c.period_start == period_start
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _record(
    engine: Engine, status: Any, crossing: Crossing, channel: str, alert: dict[str, Any], now: dt.datetime
) -> dict[str, Any] | None:
    """Insert the alert as pending; None when another evaluation recorded it first."""
    currency = status.budget.currency
    forecast = message.amount_in(status.forecast, currency)
    row = {
        "budget": status.budget.name,
        "period_start": message.day_of(status.period_start),
        "period_end": message.day_of(status.period_end),
        "threshold": crossing.key,
        "kind": crossing.kind,
        "channel": channel,
        "status": PENDING,
        "attempts": 0,
        "last_error": None,
        "spent_nanos": _nanos(message.amount_in(status.spent, currency) or Decimal(0)),
        "forecast_nanos": None if forecast is None else _nanos(forecast),
        "currency": currency,
        "payload": alert,
        "created_at": now,
        "sent_at": None,
    }
    try:
        with engine.begin() as conn:
            row["id"] = conn.execute(budget_alerts.insert().values(**row)).inserted_primary_key[0]
    except IntegrityError:
        return None  # the unique key: recorded by a concurrent evaluation, which delivers it
    return row


def _deliver(engine: Engine, row: dict[str, Any], target: Any | None, deadline: float) -> AlertOutcome:
    outcome = functools.partial(
        AlertOutcome, row["budget"], row["period_start"], row["threshold"], row["channel"]
    )
    remaining = deadline - time.monotonic() - KEEP_SECONDS
    if remaining < MIN_DELIVERY_SECONDS:
        return outcome(row["status"], row["attempts"], "no time left: the next evaluation delivers it")
    attempts = row["attempts"] + 1
    if not _claim(engine, row["id"], row["attempts"]):
        return outcome(row["status"], row["attempts"], "being delivered by another evaluation")
    error = None
    try:
        if target is None:
            log.warning("cost provider: budget alert (no notify target):\n%s", row["payload"].get("text"))
        else:
            notify.deliver(target, row["payload"], min(notify.NOTIFY_TIMEOUT_SECONDS, remaining))
    except notify.DeliveryError as failure:
        error = str(failure)
    except Exception as failure:  # a bug of ours: still kept on the alert, never raised
        error = notify.redacted(f"{type(failure).__name__}: {failure}", [])
    status = SENT if error is None else FAILED
    _finish(engine, row["id"], status, error)
    if error is None:
        log.info(
            "cost provider: budget %r crossed %s: alert sent to %s",
            row["budget"],
            row["threshold"],
            row["channel"],
        )
    else:
        report_failure(
            "delivering a budget alert",
            notify.DeliveryError(
                f"budget {row['budget']!r} {row['threshold']} to {row['channel']} "
                f"(attempt {attempts}, retried at a later evaluation): {error}"
            ),
        )
    return outcome(status, attempts, error)


def _claim(engine: Engine, alert_id: int, seen_attempts: int) -> bool:
    claim = (
        budget_alerts.update()
        .where(
            budget_alerts.c.id == alert_id,
            budget_alerts.c.attempts == seen_attempts,
            budget_alerts.c.status != SENT,
        )
        .values(attempts=seen_attempts + 1)
    )
    with engine.begin() as conn:
        return conn.execute(claim).rowcount == 1


def _finish(engine: Engine, alert_id: int, status: str, error: str | None) -> None:
    sent_at = dt.datetime.now(dt.timezone.utc) if status == SENT else None
    with engine.begin() as conn:
        conn.execute(
            budget_alerts.update()
            .where(budget_alerts.c.id == alert_id)
            .values(status=status, last_error=error, sent_at=sent_at)
        )


# ------------------------------------------------------------------------------------------ keys


def _threshold_key(key: str) -> str:
    """The key as the ledger's 100-character column holds it: a longer one (an anomaly of a run with
    a long run id) keeps its start and a digest of the whole."""
    if len(key) <= THRESHOLD_LENGTH:
        return key
    return f"{key[: THRESHOLD_LENGTH - 9]}#{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _nanos(amount: Decimal) -> int:
    return int((amount * NANOS_PER_UNIT).to_integral_value())
