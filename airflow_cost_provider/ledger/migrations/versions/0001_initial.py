"""Task runs, usage and cost lines.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0001"
down_revision = None


def _task_run_id() -> sa.Column:
    return sa.Column(
        "task_run_id", sa.Integer, sa.ForeignKey("cost_task_runs.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "cost_task_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("ol_run_id", sa.String(36)),
        sa.Column("capture_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("hostname", sa.String(250)),
        sa.Column("start_time", UTCDateTime, nullable=False),
        sa.Column("end_time", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "dag_id", "task_id", "run_id", "map_index", "try_number", name="uq_cost_task_runs_try"
        ),
    )
    op.create_index("ix_cost_task_runs_end_time", "cost_task_runs", ["end_time"])
    op.create_index("ix_cost_task_runs_dag_end", "cost_task_runs", ["dag_id", "end_time"])
    op.create_index("ix_cost_task_runs_ol_run_id", "cost_task_runs", ["ol_run_id"])
    op.create_table(
        "cost_usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _task_run_id(),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("resource", sa.String(500)),
        sa.Column("external_id", sa.String(500)),
        sa.Column("start_time", UTCDateTime),
        sa.Column("end_time", UTCDateTime),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_index("ix_cost_usage_task_run_id", "cost_usage", ["task_run_id"])
    op.create_index("ix_cost_usage_external_id", "cost_usage", ["external_id"])
    op.create_table(
        "cost_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _task_run_id(),
        sa.Column("usage_id", sa.Integer, sa.ForeignKey("cost_usage.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.Column("method", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("price_ref", sa.String(250)),
        sa.Column("price_amount", sa.String(64)),
        sa.Column("price_unit", sa.String(32)),
        sa.Column("price_source_url", sa.String(500)),
        sa.Column("unpriced_reason", sa.Text),
    )
    op.create_index("ix_cost_lines_task_run_id", "cost_lines", ["task_run_id"])
    op.create_index("ix_cost_lines_usage_id", "cost_lines", ["usage_id"])
    op.create_index("ix_cost_lines_source", "cost_lines", ["source"])


def downgrade() -> None:
    op.drop_table("cost_lines")
    op.drop_table("cost_usage")
    op.drop_table("cost_task_runs")
