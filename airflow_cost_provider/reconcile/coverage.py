"""Coverage and accuracy, read from what `reconcile` wrote: the queries the CLI (and API) share.

Coverage: per group and currency, the bill of the resources Airflow uses (pools with lines, rule
pools, tagged tries, and those resources on idle days), what went to task tries, what stayed idle or
unattributed, and apart from them the bill of resources no task touched. attributed + unattributed
= billed, exactly, because every pool row says so.

Accuracy: per source and currency, reconciled / estimated over the lines reconciled in the period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.report import NONE

GROUPINGS = ("provider", "service", "resource", "day", "source")


@dataclass(frozen=True)
class CoverageRow:
    key: str | dt.date
    currency: str
    billed: Decimal  # of the resources Airflow uses
    attributed: Decimal
    unattributed: Decimal  # idle included
    untouched: Decimal  # resources no task used: not in billed

    @property
    def coverage(self) -> Decimal | None:
        if not self.billed:
            return None
        return (self.attributed / self.billed).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class AccuracyRow:
    source: str
    currency: str
    lines: int
    estimated: Decimal
    reconciled: Decimal

    @property
    def ratio(self) -> Decimal | None:
        if not self.estimated:
            return None
        return (self.reconciled / self.estimated).quantize(Decimal("0.0001"))


def _money(nanos) -> Decimal:
    return Decimal(int(nanos or 0)).scaleb(-9)


def coverage(engine: sa.Engine, since: dt.date, until: dt.date, by: str = "provider") -> list[CoverageRow]:
    from airflow_cost_provider.ledger.schema import reconciliations as r

    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}: choose from {', '.join(GROUPINGS)}")
    column = {
        "provider": r.c.provider,
        "service": r.c.service,
        "resource": r.c.pool,
        "day": r.c.day,
        # a pool of a resource no task used has no source: shown as reports show a missing group
        "source": sa.func.coalesce(r.c.source, NONE),
    }[by]
    untouched = r.c.pool_kind == "untouched"
    query = (
        sa.select(
            column.label("key"),
            r.c.currency,
            sa.func.sum(sa.case((untouched, 0), else_=r.c.billed_nanos)).label("billed"),
            sa.func.sum(r.c.attributed_nanos).label("attributed"),
            sa.func.sum(sa.case((untouched, 0), else_=r.c.unattributed_nanos)).label("unattributed"),
            sa.func.sum(sa.case((untouched, r.c.billed_nanos), else_=0)).label("untouched"),
        )
        .where(r.c.day >= since, r.c.day < until)
        .group_by(column, r.c.currency)
        .order_by(column, r.c.currency)
    )
    with engine.connect() as conn:
        return [
            CoverageRow(
                key=row.key,
                currency=row.currency,
                billed=_money(row.billed),
                attributed=_money(row.attributed),
                unattributed=_money(row.unattributed),
                untouched=_money(row.untouched),
            )
            for row in conn.execute(query)
        ]


def accuracy(engine: sa.Engine, since: dt.date, until: dt.date) -> list[AccuracyRow]:
    """Reconciled / estimated per source, over the priced lines reconciled against the period's bill."""
    from airflow_cost_provider.ledger.schema import line_reconciliations, lines, reconciliations

    reconciled_lines = (
        sa.select(line_reconciliations.c.line_id)
        .join(reconciliations)
        .where(reconciliations.c.day >= since, reconciliations.c.day < until)
    )
    query = (
        sa.select(
            lines.c.source,
            lines.c.currency,
            sa.func.count().label("n"),
            # the list-price estimate, before any correction: how far list prices were off
            sa.func.sum(sa.func.coalesce(lines.c.uncorrected_nanos, lines.c.amount_nanos)).label("estimated"),
            sa.func.sum(lines.c.reconciled_nanos).label("reconciled"),
        )
        .where(lines.c.id.in_(reconciled_lines), lines.c.amount_nanos.is_not(None))
        .group_by(lines.c.source, lines.c.currency)
        .order_by(lines.c.source, lines.c.currency)
    )
    with engine.connect() as conn:
        return [
            AccuracyRow(row.source, row.currency, int(row.n), _money(row.estimated), _money(row.reconciled))
            for row in conn.execute(query)
        ]


def idle_pools(
    engine: sa.Engine, since: dt.date, until: dt.date, top: int = 5
) -> list[tuple[str, str, Decimal, Decimal]]:
    """The pools with the most idle or unattributed money in the period: (pool, currency, idle,
    billed), largest first, for the sentence a user reads ("WH_ETL was idle for $412 this week")."""
    from airflow_cost_provider.ledger.schema import reconciliations as r

    idle = sa.func.sum(r.c.unattributed_nanos)
    query = (
        sa.select(r.c.pool, r.c.currency, idle.label("idle"), sa.func.sum(r.c.billed_nanos).label("billed"))
        .where(r.c.day >= since, r.c.day < until, r.c.pool_kind != "untouched")
        .group_by(r.c.pool, r.c.currency)
        .having(idle > 0)
        .order_by(idle.desc(), r.c.pool)
        .limit(top)
    )
    with engine.connect() as conn:
        return [(row.pool, row.currency, _money(row.idle), _money(row.billed)) for row in conn.execute(query)]
