"""Attribution of task tries (owner, team, tags, labels), daily totals for budgets, budget alerts.

Revision ID: 0004
Revises: 0003

Tries recorded before this revision keep no owner, team, tags or labels (reports show "(none)");
the daily totals are filled from their cost lines so budgets see the ledger's history.
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("cost_task_runs", sa.Column("owner", sa.String(250)))
    op.add_column("cost_task_runs", sa.Column("team", sa.String(250)))
    op.create_index("ix_cost_task_runs_team_end", "cost_task_runs", ["team", "end_time"])
    op.create_index("ix_cost_task_runs_owner_end", "cost_task_runs", ["owner", "end_time"])
    op.create_table(
        "cost_task_run_labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "task_run_id",
            sa.Integer,
            sa.ForeignKey("cost_task_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.String(250), nullable=False),
    )
    op.create_index(
        "ix_cost_task_run_labels_kind_key_value", "cost_task_run_labels", ["kind", "key", "value"]
    )
    op.create_index("ix_cost_task_run_labels_task_run_id", "cost_task_run_labels", ["task_run_id"])
    daily_totals = op.create_table(
        "cost_daily_totals",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("task_id", sa.String(250), primary_key=True),
        sa.Column("owner", sa.String(250), primary_key=True, server_default=""),
        sa.Column("team", sa.String(250), primary_key=True, server_default=""),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("amount_nanos", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("unpriced", sa.Integer, nullable=False),
    )
    op.create_index("ix_cost_daily_totals_day", "cost_daily_totals", ["day"])
    op.create_table(
        "cost_budget_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("budget", sa.String(250), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("threshold", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(250), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("spent_nanos", sa.BigInteger, nullable=False),
        sa.Column("forecast_nanos", sa.BigInteger),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
        sa.UniqueConstraint(
            "budget", "period_start", "threshold", "channel", name="uq_cost_budget_alerts_key"
        ),
    )
    op.create_index("ix_cost_budget_alerts_status", "cost_budget_alerts", ["status"])
    _backfill_daily_totals(daily_totals)


def _backfill_daily_totals(daily_totals: sa.Table) -> None:
    """One INSERT .. SELECT: the existing lines summed as the ledger's writer sums new ones."""
    bind = op.get_bind()
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
        sa.column("currency"),
        sa.column("amount_nanos", sa.BigInteger),
    )
    # end_time is naive UTC: its date() is the UTC day, as the writer computes it for new tries
    day = sa.func.date(runs.c.end_time)
    keys = (
        day.label("day"),
        runs.c.dag_id,
        runs.c.task_id,
        sa.func.coalesce(runs.c.owner, "").label("owner"),
        sa.func.coalesce(runs.c.team, "").label("team"),
        lines.c.source,
        sa.func.coalesce(lines.c.currency, "").label("currency"),
    )
    select = (
        sa.select(
            *keys,
            sa.func.coalesce(sa.func.sum(lines.c.amount_nanos), 0),
            sa.func.count(),
            sa.func.sum(sa.case((lines.c.amount_nanos.is_(None), 1), else_=0)),
        )
        .select_from(lines.join(runs, lines.c.task_run_id == runs.c.id))
        .group_by(*keys)
    )
    columns = ("day", "dag_id", "task_id", "owner", "team", "source", "currency")
    bind.execute(
        sa.insert(daily_totals).from_select(
            [*columns, "amount_nanos", "lines", "unpriced"],
            select,
        )
    )


def downgrade() -> None:
    op.drop_table("cost_budget_alerts")
    op.drop_table("cost_daily_totals")
    op.drop_table("cost_task_run_labels")
    op.drop_index("ix_cost_task_runs_owner_end", "cost_task_runs")
    op.drop_index("ix_cost_task_runs_team_end", "cost_task_runs")
    with op.batch_alter_table("cost_task_runs") as batch:
        batch.drop_column("team")
        batch.drop_column("owner")
