"""Retention: drop the usage detail of old task tries, keep what reports by day and budgets read.

`prune(engine, before)` deletes the cost_usage and cost_lines rows of the tries that ended before
`before`, a batch of tries per transaction. The tries' rows (identity, times, state, attribution),
their tags and labels, cost_daily_totals and cost_daily_label_totals stay: the totals were summed
exactly from those lines when each try was written, so every budget's spend, forecast and day
anomaly reads the same after a prune. What budgets still read from lines is never pruned: a date within a budget's current period
or its history window is refused (see `budget_limit`), and the tries of each DAG's latest runs that
a run-anomaly rule compares against are kept whatever their age.

Housekeeping on the way: cost_budget_settled rows not refreshed for a week (a scope no budget has
any more) and billing API responses older than a week (never served past their cache_ttl).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_cost_provider.ledger.schema import (
    billing_api_cache,
    budget_settled,
    lines,
    prunes,
    task_runs,
    usage,
)

UTC = dt.timezone.utc
# Housekeeping: a settled-spend row every evaluation of its scope refreshes daily; a week untouched
# means no budget reads it. Billing API responses are served for hours (cache_ttl), not weeks.
STALE_AFTER = dt.timedelta(days=7)
# A run-anomaly rule compares a run with its DAG's last N runs before it: keep N + 2 runs per DAG
# (the run judged, and the oldest one the rule may find incomplete).
RUNS_KEPT_BEYOND_RULE = 2


class PruneRefused(ValueError):
    """A date that would prune what something still reads, or that is not in the past."""


@dataclass(frozen=True)
class BudgetLimit:
    """The earliest UTC day a budget reads cost lines from, and why."""

    day: dt.date
    budget: str
    why: str


@dataclass(frozen=True)
class Batch:
    number: int
    tries: int
    lines: int
    usage_rows: int


@dataclass
class PruneOutcome:
    before: dt.date
    dry_run: bool
    batches: list[Batch] = field(default_factory=list)
    kept_for_run_rules: int = 0  # tries ended before the date kept because a run rule reads them
    settled_rows: int = 0
    cache_rows: int = 0

    @property
    def tries(self) -> int:
        return sum(batch.tries for batch in self.batches)

    @property
    def lines(self) -> int:
        return sum(batch.lines for batch in self.batches)

    @property
    def usage_rows(self) -> int:
        return sum(batch.usage_rows for batch in self.batches)


class BatchFailed(RuntimeError):
    """A batch's transaction failed: it left nothing, the batches before it are done."""

    def __init__(self, outcome: PruneOutcome, number: int, error: BaseException) -> None:
        super().__init__(f"batch {number} failed: {type(error).__name__}: {' '.join(str(error).split())}")
        self.outcome = outcome
        self.error = error


def budget_limit(budgets: Iterable, now: dt.datetime) -> BudgetLimit | None:
    """The earliest day any budget reads cost lines from: its current period (from the UTC day it
    starts in: a period in another time zone reads the hours at its edges from lines) or the history
    its forecast and day anomalies take medians of. Storage budgets read no task tries."""
    today = now.astimezone(UTC).date()
    earliest: BudgetLimit | None = None
    for budget in budgets:
        if not budget.scope.counts_tasks:
            continue
        start, _ = budget.bounds(now)
        limits = [
            BudgetLimit(
                start.astimezone(UTC).date(),
                budget.name,
                f"its current period starts {start:%Y-%m-%d %H:%M %Z}",
            )
        ]
        reach = max(
            [
                budget.forecast_days,
                *((rule.last_days or 0) + 1 for rule in budget.thresholds if rule.daily_mad is not None),
            ]
        )
        limits.append(
            BudgetLimit(
                today - dt.timedelta(days=reach), budget.name, f"it reads the last {reach} days of history"
            )
        )
        for limit in limits:
            if earliest is None or limit.day < earliest.day:
                earliest = limit
    return earliest


def check_date(before: dt.date, budgets: Iterable, now: dt.datetime) -> None:
    """Refuse a date in the future, or one later than what a budget reads from lines."""
    today = now.astimezone(UTC).date()
    if before > today:
        raise PruneRefused(f"--before {before} is in the future (today is {today} UTC): give a past date")
    limit = budget_limit(budgets, now)
    if limit is not None and before > limit.day:
        raise PruneRefused(
            f"--before {before} would prune cost lines budget {limit.budget!r} reads ({limit.why}): "
            f"use --before {limit.day} or earlier"
        )


def runs_kept_per_dag(budgets: Iterable) -> int:
    """How many latest runs per DAG a run-anomaly rule of any budget compares against (0: none)."""
    counts = [
        rule.last_runs or 0
        for budget in budgets
        for rule in budget.thresholds
        if rule.run_cost_vs_median is not None
    ]
    return max(counts) + RUNS_KEPT_BEYOND_RULE if counts else 0


def latest_runs(conn: Connection, per_dag: int) -> set[tuple[str, str]]:
    """(dag_id, run_id) of each DAG's `per_dag` latest runs, by their last try's end."""
    if per_dag <= 0:
        return set()
    last_end = sa.func.max(task_runs.c.end_time).label("last_end")
    rows = conn.execute(
        sa.select(task_runs.c.dag_id, task_runs.c.run_id, last_end)
        .group_by(task_runs.c.dag_id, task_runs.c.run_id)
        .order_by(task_runs.c.dag_id, last_end.desc(), task_runs.c.run_id)
    )
    kept: set[tuple[str, str]] = set()
    dag, taken = None, 0
    for row in rows:
        if row.dag_id != dag:
            dag, taken = row.dag_id, 0
        if taken < per_dag:
            kept.add((row.dag_id, row.run_id))
            taken += 1
    return kept


def _candidates(conn: Connection, before: dt.datetime, after_id: int, limit: int) -> list:
    """Tries that ended before `before` and still have usage detail, after `after_id`, by id."""
    has_detail = sa.exists().where(usage.c.task_run_id == task_runs.c.id)
    return list(
        conn.execute(
            sa.select(task_runs.c.id, task_runs.c.dag_id, task_runs.c.run_id)
            .where(task_runs.c.end_time < before, task_runs.c.id > after_id, has_detail)
            .order_by(task_runs.c.id)
            .limit(limit)
        )
    )


def _count(conn: Connection, table: sa.Table, ids: list[int]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).where(table.c.task_run_id.in_(ids))).scalar_one())


def prune(
    engine: Engine,
    before: dt.date,
    *,
    budgets: Iterable = (),
    now: dt.datetime | None = None,
    batch_size: int,
    dry_run: bool = False,
) -> PruneOutcome:
    """Drop the usage detail of the tries that ended before `before` (midnight UTC), `batch_size`
    tries per transaction. Raises PruneRefused for a date budgets need, BatchFailed when a batch's
    transaction fails (the batches before it stay done). A dry run counts and deletes nothing."""
    now = now or dt.datetime.now(UTC)
    budgets = list(budgets)
    check_date(before, budgets, now)
    cutoff = dt.datetime(before.year, before.month, before.day, tzinfo=UTC)
    outcome = PruneOutcome(before=before, dry_run=dry_run)
    with engine.connect() as conn:
        kept_runs = latest_runs(conn, runs_kept_per_dag(budgets))
    run_id = None
    if not dry_run:
        with engine.begin() as conn:
            run_id = conn.execute(
                sa.insert(prunes).values(
                    before_day=before, started_at=now, batches=0, tries=0, lines=0, usage_rows=0
                )
            ).inserted_primary_key[0]
    after_id, number = 0, 0
    while True:
        with engine.connect() as conn:
            found = _candidates(conn, cutoff, after_id, batch_size)
        if not found:
            break
        after_id = found[-1].id
        ids = [row.id for row in found if (row.dag_id, row.run_id) not in kept_runs]
        outcome.kept_for_run_rules += len(found) - len(ids)
        if not ids:
            continue
        number += 1
        try:
            batch = _prune_batch(engine, ids, number, run_id, dry_run)
        except Exception as error:
            raise BatchFailed(outcome, number, error) from error
        outcome.batches.append(batch)
    if not dry_run:
        with engine.begin() as conn:
            stale = now - STALE_AFTER
            outcome.settled_rows = conn.execute(
                sa.delete(budget_settled).where(budget_settled.c.updated_at < stale)
            ).rowcount
            outcome.cache_rows = conn.execute(
                sa.delete(billing_api_cache).where(billing_api_cache.c.fetched_at < stale)
            ).rowcount
            conn.execute(
                sa.update(prunes).where(prunes.c.id == run_id).values(finished_at=dt.datetime.now(UTC))
            )
    return outcome


def _prune_batch(engine: Engine, ids: list[int], number: int, run_id: int | None, dry_run: bool) -> Batch:
    """One transaction: the lines, then the usage of these tries, and the run's counts."""
    with engine.begin() as conn:
        batch = Batch(number, len(ids), _count(conn, lines, ids), _count(conn, usage, ids))
        if dry_run:
            return batch
        conn.execute(sa.delete(lines).where(lines.c.task_run_id.in_(ids)))
        conn.execute(sa.delete(usage).where(usage.c.task_run_id.in_(ids)))
        conn.execute(
            sa.update(prunes)
            .where(prunes.c.id == run_id)
            .values(
                batches=prunes.c.batches + 1,
                tries=prunes.c.tries + batch.tries,
                lines=prunes.c.lines + batch.lines,
                usage_rows=prunes.c.usage_rows + batch.usage_rows,
            )
        )
    return batch


def pruned_before(conn: Connection) -> dt.date | None:
    """The latest date a prune ran up to, if any (a ledger without prunes: None)."""
    day = conn.execute(sa.select(sa.func.max(prunes.c.before_day))).scalar()
    if day is None or isinstance(day, dt.date):
        return day
    return dt.date.fromisoformat(str(day)[:10])
