"""Daily totals per tag and label of the try, which tag and label budgets read.

Revision ID: 0011
Revises: 0010

Filled from the lines with one INSERT .. SELECT, summed as the ledger's writer sums new tries: each
line at its estimate under its currency, plus, for a reconciled line, reconciled - estimate under its
reconciled currency; once for each tag and label of its try. The days whose lines were pruned have
no label totals (their lines, and so what they cost per label, are gone).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    label_totals = op.create_table(
        "cost_daily_label_totals",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.String(250), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("amount_nanos", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("unpriced", sa.Integer, nullable=False),
    )
    _backfill(label_totals)


def _backfill(label_totals: sa.Table) -> None:
    runs = sa.table("cost_task_runs", sa.column("id"), sa.column("end_time"))
    labels = sa.table(
        "cost_task_run_labels",
        sa.column("task_run_id"),
        sa.column("kind"),
        sa.column("key"),
        sa.column("value"),
    )
    lines = sa.table(
        "cost_lines",
        sa.column("task_run_id"),
        sa.column("source"),
        sa.column("currency"),
        sa.column("amount_nanos", sa.BigInteger),
        sa.column("reconciled_nanos", sa.BigInteger),
        sa.column("reconciled_currency"),
    )
    joined = lines.join(runs, lines.c.task_run_id == runs.c.id).join(
        labels, labels.c.task_run_id == lines.c.task_run_id
    )
    # end_time is naive UTC: its date() is the UTC day, as the writer computes it
    label = (
        labels.c.kind.label("kind"),
        labels.c.key.label("key"),
        labels.c.value.label("value"),
        sa.func.date(runs.c.end_time).label("day"),
        lines.c.source.label("source"),
    )
    estimates = sa.select(
        *label,
        sa.func.coalesce(lines.c.currency, "").label("currency"),
        sa.func.coalesce(lines.c.amount_nanos, 0).label("amount_nanos"),
        sa.literal_column("1").label("lines"),
        sa.case((lines.c.amount_nanos.is_(None), 1), else_=0).label("unpriced"),
    ).select_from(joined)
    shifts = (
        sa.select(
            *label,
            lines.c.reconciled_currency.label("currency"),
            (lines.c.reconciled_nanos - sa.func.coalesce(lines.c.amount_nanos, 0)).label("amount_nanos"),
            sa.literal_column("0").label("lines"),
            sa.literal_column("0").label("unpriced"),
        )
        .select_from(joined)
        .where(lines.c.reconciled_nanos.is_not(None))
    )
    each = sa.union_all(estimates, shifts).subquery("each_line")
    keys = [each.c[name] for name in ("kind", "key", "value", "day", "source", "currency")]
    amount = sa.func.sum(each.c.amount_nanos)
    count = sa.func.sum(each.c.lines)
    select = (
        sa.select(*keys, amount, count, sa.func.sum(each.c.unpriced))
        .group_by(*keys)
        # as the writer keeps them: no row with no line and nothing a budget counts
        .having(sa.or_(count > 0, amount != 0))
    )
    op.get_bind().execute(
        sa.insert(label_totals).from_select(
            ["kind", "key", "value", "day", "source", "currency", "amount_nanos", "lines", "unpriced"], select
        )
    )


def downgrade() -> None:
    op.drop_table("cost_daily_label_totals")
