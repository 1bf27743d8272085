"""A record of each `airflow-cost prune`: which tries lost their usage detail, so reports can say so.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "cost_prunes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("before_day", sa.Date, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("tries", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.BigInteger, nullable=False),
        sa.Column("usage_rows", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cost_prunes")
