"""The settled spend budgets read, kept in the ledger for every worker.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "cost_budget_settled",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cost_budget_settled")
