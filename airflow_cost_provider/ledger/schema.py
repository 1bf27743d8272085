"""Ledger tables (SQLAlchemy Core). Money is an integer of nano-units: exact, and summable in SQL."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

SCHEMA_REVISION = "0002"  # the head migration; checked cheaply before Alembic is ever imported
VERSION_TABLE = "cost_provider_alembic_version"
NANOS_PER_UNIT = 10**9

metadata = sa.MetaData()


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (SQLite has no time zones), returned as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger only takes aware datetimes")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


def task_run_id_column() -> sa.Column:
    """The link from usage and lines to their task try; deleting the try deletes them."""
    return sa.Column(
        "task_run_id", sa.Integer, sa.ForeignKey("cost_task_runs.id", ondelete="CASCADE"), nullable=False
    )


task_runs = sa.Table(
    "cost_task_runs",
    metadata,
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
    sa.Index("ix_cost_task_runs_end_time", "end_time"),
    sa.Index("ix_cost_task_runs_dag_end", "dag_id", "end_time"),
    sa.Index("ix_cost_task_runs_ol_run_id", "ol_run_id"),
)

usage = sa.Table(
    "cost_usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    task_run_id_column(),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("quantity", sa.String(64), nullable=False),  # exact decimal text, native unit
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("resource", sa.String(500)),
    sa.Column("external_id", sa.String(500)),
    sa.Column("start_time", UTCDateTime),
    sa.Column("end_time", UTCDateTime),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Index("ix_cost_usage_task_run_id", "task_run_id"),
    sa.Index("ix_cost_usage_external_id", "external_id"),
)

lines = sa.Table(
    "cost_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    task_run_id_column(),
    sa.Column("usage_id", sa.Integer, sa.ForeignKey("cost_usage.id", ondelete="CASCADE"), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("amount_nanos", sa.BigInteger),  # NULL: unpriced, never zero
    sa.Column("currency", sa.String(3)),
    sa.Column("method", sa.String(16)),
    sa.Column("status", sa.String(16), nullable=False),  # estimated | reconciled | unpriced
    sa.Column("price_ref", sa.String(250)),
    sa.Column("price_amount", sa.String(64)),
    sa.Column("price_unit", sa.String(32)),
    sa.Column("price_source_url", sa.String(500)),
    sa.Column("unpriced_reason", sa.Text),
    sa.Index("ix_cost_lines_task_run_id", "task_run_id"),
    sa.Index("ix_cost_lines_usage_id", "usage_id"),
    sa.Index("ix_cost_lines_source", "source"),
)


# What a task try used before it deferred, kept until the try resumes (possibly on another worker)
# and is finalized; one row per try, replaced at each deferral.
deferred_captures = sa.Table(
    "cost_deferred_captures",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("map_index", sa.Integer, primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("capture", sa.JSON, nullable=False),
    sa.Column("deferred_at", UTCDateTime, nullable=False),
)
