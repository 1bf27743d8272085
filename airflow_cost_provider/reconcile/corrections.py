"""Estimate correction: how far list-price estimates were off, learnt from the reconciled bill, applied
to new estimates of the sources a user opts in (`[cost_provider] correct_estimates`) before their
bill arrives.

`airflow-cost reconcile` keeps, per source, resource and currency, the factor reconciled / estimated
over the lines reconciled in the last CORRECTION_DAYS days up to its period's end (the estimates
before any correction, so factors never compound), and one per source and currency across its
resources. A new line of an opted-in source is multiplied by its resource's factor, else its
source's; it stays `estimated`, keeps its method, and records the factor and the amount before it.
A factor needs MIN_LINES reconciled lines: a few lines say little about a discount.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal

import sqlalchemy as sa

from airflow_cost_provider.pricing.model import CostLine

CORRECTION_DAYS = 30
MIN_LINES = 5
ALL_RESOURCES = ""  # the factor of a source across its resources
_NANO = Decimal("1e-9")
_FACTOR_PLACES = Decimal("1e-6")


@dataclass(frozen=True)
class Factor:
    source: str
    resource: str  # ALL_RESOURCES: the whole source
    currency: str
    factor: Decimal
    lines: int
    since: dt.date
    until: dt.date

    def describe(self) -> str:
        scope = self.source if self.resource == ALL_RESOURCES else f"{self.source} {self.resource}"
        return f"x{self.factor} ({scope}, {self.lines} lines reconciled {self.since} to {self.until})"


Factors = dict[tuple[str, str, str], Factor]


def _uncorrected(lines: sa.Table) -> sa.ColumnElement:
    return sa.func.coalesce(lines.c.uncorrected_nanos, lines.c.amount_nanos)


def compute(conn: sa.Connection, until: dt.date, days: int = CORRECTION_DAYS) -> list[Factor]:
    """The factors from the lines reconciled in the `days` days before `until`: per source, resource
    and currency, and per source and currency. Two grouped queries over the window's tries."""
    from airflow_cost_provider.ledger.schema import lines, task_runs, usage

    since = until - dt.timedelta(days=days)
    lo = dt.datetime.combine(since, dt.time(), dt.timezone.utc)
    hi = dt.datetime.combine(until, dt.time(), dt.timezone.utc)
    estimated, reconciled = _uncorrected(lines), lines.c.reconciled_nanos
    same_currency = sa.or_(
        lines.c.reconciled_currency.is_(None), lines.c.reconciled_currency == lines.c.currency
    )
    window = (
        sa.select(
            lines.c.source,
            sa.func.coalesce(usage.c.resource, ALL_RESOURCES).label("resource"),
            lines.c.currency,
            estimated.label("estimated"),
            reconciled.label("reconciled"),
        )
        .select_from(
            lines.join(task_runs, lines.c.task_run_id == task_runs.c.id).join(
                usage, lines.c.usage_id == usage.c.id
            )
        )
        .where(
            task_runs.c.end_time >= lo,
            task_runs.c.end_time < hi,
            reconciled.is_not(None),
            lines.c.amount_nanos.is_not(None),
            same_currency,
        )
        .subquery()
    )
    found: list[Factor] = []
    for per_resource in (True, False):
        keys = (
            [window.c.source, window.c.resource, window.c.currency]
            if per_resource
            else [window.c.source, window.c.currency]
        )
        query = sa.select(
            *keys,
            sa.func.count().label("n"),
            sa.func.sum(window.c.estimated).label("estimated"),
            sa.func.sum(window.c.reconciled).label("reconciled"),
        ).group_by(*keys)
        for row in conn.execute(query):
            resource = row.resource if per_resource else ALL_RESOURCES
            if per_resource and resource == ALL_RESOURCES:
                continue  # lines without a resource count towards their source's factor only
            if int(row.n) < MIN_LINES or not row.estimated or int(row.estimated) <= 0:
                continue
            factor = (Decimal(int(row.reconciled)) / Decimal(int(row.estimated))).quantize(
                _FACTOR_PLACES, ROUND_HALF_EVEN
            )
            found.append(Factor(row.source, resource, row.currency, factor, int(row.n), since, until))
    return found


def replace_all(conn: sa.Connection, factors: list[Factor], now: dt.datetime) -> None:
    """The ledger's factors become these (in the caller's transaction)."""
    from airflow_cost_provider.ledger.schema import estimate_factors

    conn.execute(sa.delete(estimate_factors))
    if factors:
        conn.execute(
            sa.insert(estimate_factors),
            [
                {
                    "source": f.source,
                    "resource": f.resource,
                    "currency": f.currency,
                    "factor": str(f.factor),
                    "lines": f.lines,
                    "since": f.since,
                    "until": f.until,
                    "computed_at": now,
                }
                for f in factors
            ],
        )


def load(engine: sa.Engine, sources: frozenset[str] | None) -> Factors:
    """The kept factors of these sources (None: every source), keyed (source, resource, currency)."""
    from airflow_cost_provider.ledger.schema import estimate_factors

    query = sa.select(estimate_factors)
    if sources is not None:
        query = query.where(estimate_factors.c.source.in_(sorted(sources)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {
        (row.source, row.resource, row.currency): Factor(
            row.source, row.resource, row.currency, Decimal(row.factor), row.lines, row.since, row.until
        )
        for row in rows
    }


def factor_for(line: CostLine, factors: Factors) -> Factor | None:
    source, currency = line.usage.source, line.currency
    resource = line.usage.resource
    if resource:
        found = factors.get((source, resource, currency))
        if found is not None:
            return found
    return factors.get((source, ALL_RESOURCES, currency))


def corrected(line: CostLine, factors: Factors) -> CostLine:
    """The line multiplied by its factor, rounded to the nano-unit; the line itself when none applies."""
    if line.correction_factor is not None or line.status != "estimated":
        return line
    found = factor_for(line, factors)
    if found is None or found.factor == 1:
        return line
    amount = (line.amount * found.factor).quantize(_NANO, ROUND_HALF_EVEN)
    return replace(line, amount=amount, correction_factor=found.factor, uncorrected_amount=line.amount)
