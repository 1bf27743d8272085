"""Estimate correction: the factors reconcile learns, and on a corrected line its factor and the
amount before it.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.add_column("cost_lines", sa.Column("correction_factor", sa.String(32)))
    op.add_column("cost_lines", sa.Column("uncorrected_nanos", sa.BigInteger))
    op.create_table(
        "cost_estimate_factors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(500), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("factor", sa.String(32), nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("since", sa.Date, nullable=False),
        sa.Column("until", sa.Date, nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("source", "resource", "currency", name="uq_cost_estimate_factors_key"),
    )


def downgrade() -> None:
    op.drop_table("cost_estimate_factors")
    op.drop_column("cost_lines", "uncorrected_nanos")
    op.drop_column("cost_lines", "correction_factor")
