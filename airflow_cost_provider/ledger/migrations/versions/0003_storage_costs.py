"""Storage costs imported from billing data, their imports, watermarks and allocations.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from airflow_cost_provider.ledger.schema import UTCDateTime

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "cost_storage_imports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("window_start", sa.Date),
        sa.Column("window_end", sa.Date),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_imported", sa.BigInteger, nullable=False),
        sa.Column("rows_skipped", sa.JSON, nullable=False),
        sa.Column("costs_written", sa.Integer, nullable=False),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("task_id", sa.String(250)),
        sa.Column("run_id", sa.String(250)),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "cost_storage_costs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("billing_account", sa.String(100), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
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
        sa.Column("storage_bytes", sa.BigInteger),
        sa.Column("usage_type", sa.String(250)),
        sa.Column("service", sa.String(100)),
        sa.Column("region", sa.String(64)),
        sa.Column("source_rows", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column(
            "import_id",
            sa.Integer,
            sa.ForeignKey("cost_storage_imports.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "day",
            "provider",
            "billing_account",
            "resource_id",
            "sku",
            "usage_class",
            "currency",
            name="uq_cost_storage_costs_key",
        ),
    )
    op.create_table(
        "cost_storage_watermarks",
        sa.Column("source_key", sa.String(500), primary_key=True),
        sa.Column("last_day", sa.Date, nullable=False),
        sa.Column("import_id", sa.Integer),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "cost_storage_allocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("billing_account", sa.String(100), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("resource_id", sa.String(400), nullable=False),
        sa.Column("usage_class", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("dataset_namespace", sa.String(500), nullable=False),
        sa.Column("dataset_name", sa.String(500), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("share", sa.String(64), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_cost_storage_allocations_day_resource", "cost_storage_allocations", ["day", "resource_id"]
    )
    op.create_table(
        "cost_billing_api_cache",
        sa.Column("request_key", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("fetched_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cost_billing_api_cache")
    op.drop_table("cost_storage_allocations")
    op.drop_table("cost_storage_watermarks")
    op.drop_table("cost_storage_costs")
    op.drop_table("cost_storage_imports")
