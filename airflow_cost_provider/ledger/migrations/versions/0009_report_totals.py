"""Daily totals that reports read: the lines' own estimates, their reconciled amounts and how many are
reconciled; and the unpriced lines counted per day, source, metric and reason.

Revision ID: 0009
Revises: 0008

The new columns are filled from the lines. A day whose lines were pruned keeps its budget amount as
its estimate (its lines, and what reconcile said of them, are gone); its unpriced causes are not known.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import reason_key

revision = "0009"
down_revision = "0008"

_KEY = ("day", "dag_id", "task_id", "owner", "team", "source", "currency")
_BATCH = 5000


def upgrade() -> None:
    for name, kind in (
        ("estimate_nanos", sa.BigInteger),
        ("reconciled_nanos", sa.BigInteger),
        ("reconciled_lines", sa.Integer),
    ):
        op.add_column("cost_daily_totals", sa.Column(name, kind, nullable=False, server_default="0"))
    daily_unpriced = op.create_table(
        "cost_daily_unpriced",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("task_id", sa.String(250), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("reason_key", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
    )
    op.create_index("ix_cost_daily_unpriced_day", "cost_daily_unpriced", ["day"])
    _backfill(daily_unpriced)


def _backfill(daily_unpriced: sa.Table) -> None:
    bind = op.get_bind()
    totals = sa.table(
        "cost_daily_totals",
        sa.column("day", sa.Date),
        *(sa.column(name) for name in _KEY[1:]),
        sa.column("amount_nanos", sa.BigInteger),
        sa.column("estimate_nanos", sa.BigInteger),
        sa.column("reconciled_nanos", sa.BigInteger),
        sa.column("reconciled_lines", sa.Integer),
    )
    runs = sa.table(
        "cost_task_runs",
        sa.column("id"),
        sa.column("dag_id"),
        sa.column("task_id"),
        sa.column("owner"),
        sa.column("team"),
        sa.column("end_time"),
    )
    lines = sa.table(
        "cost_lines",
        sa.column("task_run_id"),
        sa.column("source"),
        sa.column("metric"),
        sa.column("currency"),
        sa.column("amount_nanos", sa.BigInteger),
        sa.column("reconciled_nanos", sa.BigInteger),
        sa.column("reconciled_currency"),
        sa.column("unpriced_reason"),
    )
    # the budget amount is each line's estimate but for reconciled lines: start from it, then take
    # out what reconcile put in, key by key (only the keys of reconciled lines)
    bind.execute(sa.update(totals).values(estimate_nanos=totals.c.amount_nanos))
    joined = lines.join(runs, lines.c.task_run_id == runs.c.id)
    # end_time is naive UTC: its date() is the UTC day, as the writer computes it
    attribution = (
        sa.func.date(runs.c.end_time),
        runs.c.dag_id,
        runs.c.task_id,
        sa.func.coalesce(runs.c.owner, ""),
        sa.func.coalesce(runs.c.team, ""),
        lines.c.source,
    )
    reconciled = lines.c.reconciled_nanos.is_not(None)
    shifted = bind.execute(
        sa.select(
            *attribution,
            lines.c.reconciled_currency,
            sa.func.sum(lines.c.reconciled_nanos - sa.func.coalesce(lines.c.amount_nanos, 0)),
        )
        .select_from(joined)
        .where(reconciled)
        .group_by(*attribution, lines.c.reconciled_currency)
    ).all()
    by_key = (
        sa.update(totals)
        .where(*(totals.c[name] == sa.bindparam(f"k_{name}") for name in _KEY))
        .values(
            estimate_nanos=totals.c.estimate_nanos - sa.bindparam("shift", type_=sa.BigInteger),
        )
    )
    _each(bind, by_key, [{**_key(row[:7]), "shift": int(row[7])} for row in shifted if row[7]])
    line_currency = sa.func.coalesce(lines.c.currency, "")
    sums = bind.execute(
        sa.select(
            *attribution,
            line_currency,
            sa.func.sum(lines.c.reconciled_nanos),
            sa.func.count(),
        )
        .select_from(joined)
        .where(reconciled)
        .group_by(*attribution, line_currency)
    ).all()
    set_reconciled = (
        sa.update(totals)
        .where(*(totals.c[name] == sa.bindparam(f"k_{name}") for name in _KEY))
        .values(
            reconciled_nanos=sa.bindparam("nanos", type_=sa.BigInteger),
            reconciled_lines=sa.bindparam("count", type_=sa.Integer),
        )
    )
    _each(
        bind, set_reconciled, [{**_key(row[:7]), "nanos": int(row[7]), "count": int(row[8])} for row in sums]
    )
    cause = (
        sa.func.date(runs.c.end_time),
        runs.c.dag_id,
        runs.c.task_id,
        lines.c.source,
        lines.c.metric,
        sa.func.coalesce(lines.c.unpriced_reason, ""),
    )
    causes = bind.execute(
        sa.select(*cause, sa.func.count())
        .select_from(joined)
        .where(lines.c.amount_nanos.is_(None))
        .group_by(*cause)
    ).all()
    merged: dict[tuple, dict] = {}
    for day, dag_id, task_id, source, metric, text, count in causes:
        key = (_day(day), dag_id, task_id, source, metric, reason_key(text))
        found = merged.setdefault(
            key,
            dict(zip(("day", "dag_id", "task_id", "source", "metric", "reason_key"), key, strict=True))
            | {"reason": text, "lines": 0},
        )
        found["lines"] += int(count)
    rows = list(merged.values())
    for start in range(0, len(rows), _BATCH):
        bind.execute(sa.insert(daily_unpriced), rows[start : start + _BATCH])


def _day(value) -> dt.date:
    return dt.date.fromisoformat(value[:10]) if isinstance(value, str) else value


def _key(values) -> dict:
    return {
        f"k_{name}": _day(value) if name == "day" else value for name, value in zip(_KEY, values, strict=True)
    }


def _each(bind, statement, rows: list[dict]) -> None:
    for start in range(0, len(rows), _BATCH):
        bind.execute(statement, rows[start : start + _BATCH])


def downgrade() -> None:
    op.drop_table("cost_daily_unpriced")
    for name in ("reconciled_lines", "reconciled_nanos", "estimate_nanos"):
        op.drop_column("cost_daily_totals", name)
