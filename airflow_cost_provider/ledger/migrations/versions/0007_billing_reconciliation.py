"""The whole bill (every service, with its tags), reconciled pools, and each line's share of them.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.add_column("cost_lines", sa.Column("reconciled_nanos", sa.BigInteger))
    op.add_column("cost_lines", sa.Column("reconciled_currency", sa.String(3)))
    op.create_table(
        "cost_billing_costs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("row_key", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("billing_account", sa.String(100), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(400), nullable=False),
        sa.Column("sku", sa.String(200), nullable=False),
        sa.Column("usage_class", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger, nullable=False),
        sa.Column("effective_nanos", sa.BigInteger),
        sa.Column("list_nanos", sa.BigInteger),
        sa.Column("credit_nanos", sa.BigInteger, nullable=False),
        sa.Column("correction_nanos", sa.BigInteger, nullable=False),
        sa.Column("quantity", sa.String(64)),
        sa.Column("unit", sa.String(64)),
        sa.Column("usage_type", sa.String(250)),
        sa.Column("region", sa.String(64)),
        sa.Column("tags", sa.JSON),
        sa.Column("tagged_run_id", sa.String(36)),
        sa.Column("source_rows", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column(
            "import_id",
            sa.Integer,
            sa.ForeignKey("cost_storage_imports.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("row_key", name="uq_cost_billing_costs_row_key"),
    )
    op.create_index("ix_cost_billing_costs_day_provider", "cost_billing_costs", ["day", "provider"])
    op.create_index("ix_cost_billing_costs_tagged_run_id", "cost_billing_costs", ["tagged_run_id"])
    op.create_table(
        "cost_reconciliations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("billing_account", sa.String(100), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("pool", sa.String(500), nullable=False),
        sa.Column("pool_kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("billed_nanos", sa.BigInteger, nullable=False),
        sa.Column("attributed_nanos", sa.BigInteger, nullable=False),
        sa.Column("unattributed_nanos", sa.BigInteger, nullable=False),
        sa.Column("estimated_nanos", sa.BigInteger),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("used_share", sa.String(64)),
        sa.Column("billing_cost_ids", sa.JSON, nullable=False),
        sa.Column("reconciled_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_cost_reconciliations_day", "cost_reconciliations", ["day"])
    op.create_table(
        "cost_line_reconciliations",
        sa.Column(
            "line_id", sa.Integer, sa.ForeignKey("cost_lines.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "reconciliation_id",
            sa.Integer,
            sa.ForeignKey("cost_reconciliations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("amount_nanos", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_cost_line_reconciliations_reconciliation_id", "cost_line_reconciliations", ["reconciliation_id"]
    )


def downgrade() -> None:
    op.drop_table("cost_line_reconciliations")
    op.drop_table("cost_reconciliations")
    op.drop_table("cost_billing_costs")
    with op.batch_alter_table("cost_lines") as batch:
        batch.drop_column("reconciled_currency")
        batch.drop_column("reconciled_nanos")
