"""Captures of task tries that deferred, kept until they resume.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "cost_deferred_captures",
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("task_id", sa.String(250), primary_key=True),
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("map_index", sa.Integer, primary_key=True),
        sa.Column("try_number", sa.Integer, primary_key=True),
        sa.Column("capture", sa.JSON, nullable=False),
        sa.Column("deferred_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cost_deferred_captures")
