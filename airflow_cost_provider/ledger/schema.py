"""Ledger tables (SQLAlchemy Core). Money is an integer of nano-units: exact, and summable in SQL."""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

SCHEMA_REVISION = "0011"  # the head migration; checked cheaply before Alembic is ever imported
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
    # attribution (0004); NULL on tries recorded before it, shown as "(none)"
    sa.Column("owner", sa.String(250)),
    sa.Column("team", sa.String(250)),
    sa.UniqueConstraint(
        "dag_id", "task_id", "run_id", "map_index", "try_number", name="uq_cost_task_runs_try"
    ),
    sa.Index("ix_cost_task_runs_end_time", "end_time"),
    sa.Index("ix_cost_task_runs_dag_end", "dag_id", "end_time"),
    sa.Index("ix_cost_task_runs_ol_run_id", "ol_run_id"),
    sa.Index("ix_cost_task_runs_team_end", "team", "end_time"),
    sa.Index("ix_cost_task_runs_owner_end", "owner", "end_time"),
)

# The DAG's tags (kind 'tag', value '') and the try's cost labels (kind 'label') of a task try.
task_run_labels = sa.Table(
    "cost_task_run_labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "task_run_id", sa.Integer, sa.ForeignKey("cost_task_runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kind", sa.String(8), nullable=False),  # tag | label
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.String(250), nullable=False),
    sa.Index("ix_cost_task_run_labels_kind_key_value", "kind", "key", "value"),
    sa.Index("ix_cost_task_run_labels_task_run_id", "task_run_id"),
)

# The key in a usage's attributes where a metering import keeps what the platform itself measured
# for that query (Snowflake's QUERY_ATTRIBUTION_HISTORY: its compute credits), for reconciliation.
ATTRIBUTED_CREDITS = "attributed_credits"

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
    # set by `airflow-cost reconcile` (0007): the line's share of the bill, beside its estimate
    sa.Column("reconciled_nanos", sa.BigInteger),
    sa.Column("reconciled_currency", sa.String(3)),
    # an estimate corrected by what reconciling its source's bill showed (0008): the factor applied
    # and the amount before it; NULL on every other line
    sa.Column("correction_factor", sa.String(32)),
    sa.Column("uncorrected_nanos", sa.BigInteger),
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


# ---------------------------------------------------------------- storage costs from billing data

# One import of billing data (a file, a set of files, or an API window): what was read and skipped.
storage_imports = sa.Table(
    "cost_storage_imports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False),  # aws-cur, focus, gcp-billing-export, ...
    sa.Column("files", sa.JSON, nullable=False),  # file names or URLs read, never credentials
    sa.Column("window_start", sa.Date),
    sa.Column("window_end", sa.Date),  # exclusive
    sa.Column("rows_read", sa.BigInteger, nullable=False),
    sa.Column("rows_imported", sa.BigInteger, nullable=False),
    sa.Column("rows_skipped", sa.JSON, nullable=False),  # {reason: count}
    sa.Column("costs_written", sa.Integer, nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("task_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=False),
)

# A storage resource's cost of one day, per SKU (or usage type), usage class and currency.
storage_costs = sa.Table(
    "cost_storage_costs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),  # aws | gcp | azure
    sa.Column("billing_account", sa.String(100), nullable=False),
    sa.Column("day", sa.Date, nullable=False),  # the billing day, UTC
    sa.Column("resource_id", sa.String(400), nullable=False),  # bucket, storage account; '' if none
    sa.Column("sku", sa.String(200), nullable=False),  # SKU id, else the usage type or meter
    sa.Column("usage_class", sa.String(32), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),  # billed cost, credits included
    sa.Column("effective_nanos", sa.BigInteger),
    sa.Column("list_nanos", sa.BigInteger),
    sa.Column("credit_nanos", sa.BigInteger, nullable=False),  # the credits and refunds within amount
    sa.Column("correction_nanos", sa.BigInteger, nullable=False),  # the corrections within amount
    sa.Column("quantity", sa.String(64)),  # exact decimal text, in `unit`
    sa.Column("unit", sa.String(64)),
    sa.Column("storage_bytes", sa.BigInteger),  # average bytes stored that day, where the data has it
    sa.Column("usage_type", sa.String(250)),
    sa.Column("service", sa.String(100)),
    sa.Column("region", sa.String(64)),
    sa.Column("source_rows", sa.Integer, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column(
        "import_id", sa.Integer, sa.ForeignKey("cost_storage_imports.id", ondelete="SET NULL"), nullable=True
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

# The last billing day each source had data for, so a run after a gap or late data catches up.
storage_watermarks = sa.Table(
    "cost_storage_watermarks",
    metadata,
    sa.Column("source_key", sa.String(500), primary_key=True),
    sa.Column("last_day", sa.Date, nullable=False),
    sa.Column("import_id", sa.Integer),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# A share of a storage resource's cost given to a dataset inside it (by bytes per prefix).
storage_allocations = sa.Table(
    "cost_storage_allocations",
    metadata,
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
    sa.Column("share", sa.String(64), nullable=False),  # exact decimal text, 0..1
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),
    sa.Column("method", sa.String(16), nullable=False),  # allocated
    sa.Column("computed_at", UTCDateTime, nullable=False),
    sa.Index("ix_cost_storage_allocations_day_resource", "day", "resource_id"),
)

# Responses of billing APIs that charge per request (Cost Explorer), kept for a while.
billing_api_cache = sa.Table(
    "cost_billing_api_cache",
    metadata,
    sa.Column("request_key", sa.String(64), primary_key=True),  # sha256 of the request
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
)


# ---------------------------------------------------------------- the whole bill, and reconciliation

# A billed resource's cost of one day, any service (storage included), per SKU, usage class,
# currency and tag set; written by `airflow-cost import-billing` and the warehouse metering imports.
# The key is long (resource ids, SKUs, tags): `row_key` is its digest, so every database can index it.
billing_costs = sa.Table(
    "cost_billing_costs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("row_key", sa.String(64), nullable=False),  # sha256 of the key columns, hex
    sa.Column("provider", sa.String(32), nullable=False),  # aws | gcp | azure | snowflake | databricks
    sa.Column("billing_account", sa.String(100), nullable=False),
    sa.Column("day", sa.Date, nullable=False),  # the billing day, UTC
    # the UTC hour (0-23) of a row the source bills per hour (0010); NULL: the whole day
    sa.Column("usage_hour", sa.SmallInteger),
    sa.Column("service", sa.String(100), nullable=False),  # '' if the data names none
    sa.Column("resource_id", sa.String(400), nullable=False),  # '' if none
    sa.Column("sku", sa.String(200), nullable=False),
    sa.Column("usage_class", sa.String(32), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),  # billed cost, credits included
    sa.Column("effective_nanos", sa.BigInteger),
    sa.Column("list_nanos", sa.BigInteger),
    sa.Column("credit_nanos", sa.BigInteger, nullable=False),
    sa.Column("correction_nanos", sa.BigInteger, nullable=False),
    sa.Column("quantity", sa.String(64)),  # exact decimal text, in `unit`
    sa.Column("unit", sa.String(64)),
    sa.Column("usage_type", sa.String(250)),
    sa.Column("region", sa.String(64)),
    sa.Column("tags", sa.JSON),  # the row's resource tags or labels; NULL: none
    # the OpenLineage run id in the tags this project sets (job labels, job run tags), for the join
    sa.Column("tagged_run_id", sa.String(36)),
    sa.Column("source_rows", sa.Integer, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column(
        "import_id", sa.Integer, sa.ForeignKey("cost_storage_imports.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("row_key", name="uq_cost_billing_costs_row_key"),
    sa.Index("ix_cost_billing_costs_day_provider", "day", "provider"),
    sa.Index("ix_cost_billing_costs_tagged_run_id", "tagged_run_id"),
)

# One billed pool of one day (or one hour of it, where the bill has hours) as reconciled: a resource,
# a `billing_resources` rule's resources, or a tagged try's charges; what it cost, what its lines got,
# and what stays idle or unattributed. Resources no ledger line and no rule matched are kept too
# (`pool_kind` 'untouched').
reconciliations = sa.Table(
    "cost_reconciliations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("usage_hour", sa.SmallInteger),  # UTC hour 0-23 (0010); NULL: the whole day
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("billing_account", sa.String(100), nullable=False),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("pool", sa.String(500), nullable=False),  # resource id, `rule:<name>`, or the try's run id
    sa.Column("pool_kind", sa.String(16), nullable=False),  # resource | rule | try | run | untouched
    sa.Column("source", sa.String(64)),  # the ledger source whose lines used it
    sa.Column("mode", sa.String(8), nullable=False),  # keep | spread
    sa.Column(
        "basis", sa.String(16), nullable=False
    ),  # quantity | attribution | list_cost | estimate | tags | run | even | none
    sa.Column("billed_nanos", sa.BigInteger, nullable=False),
    sa.Column("attributed_nanos", sa.BigInteger, nullable=False),
    sa.Column("unattributed_nanos", sa.BigInteger, nullable=False),  # idle included
    sa.Column("estimated_nanos", sa.BigInteger),  # the estimates of its lines, NULL: none priced
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("used_share", sa.String(64)),  # exact decimal text, 0..1: what the lines used of it
    sa.Column("billing_cost_ids", sa.JSON, nullable=False),  # cost_billing_costs rows it came from
    sa.Column("reconciled_at", UTCDateTime, nullable=False),
    sa.Index("ix_cost_reconciliations_day", "day"),
)

# A line's share of a reconciled pool (a line can share more than one: a try's job billed on two days).
line_reconciliations = sa.Table(
    "cost_line_reconciliations",
    metadata,
    sa.Column("line_id", sa.Integer, sa.ForeignKey("cost_lines.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "reconciliation_id",
        sa.Integer,
        sa.ForeignKey("cost_reconciliations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),
    sa.Index("ix_cost_line_reconciliations_reconciliation_id", "reconciliation_id"),
)


# The factors reconciled / estimated that `airflow-cost reconcile` learnt (0008), per source, resource
# ('' = the source across its resources) and currency; replaced whole by each reconcile.
estimate_factors = sa.Table(
    "cost_estimate_factors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("resource", sa.String(500), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("factor", sa.String(32), nullable=False),  # exact decimal text
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("since", sa.Date, nullable=False),
    sa.Column("until", sa.Date, nullable=False),
    sa.Column("computed_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("source", "resource", "currency", name="uq_cost_estimate_factors_key"),
)


# ---------------------------------------------------------------- budgets

# Cost lines summed per UTC day of the try's end and attribution, kept exact by the ledger's writer
# in the same transaction as the try (and by reconcile), so budgets and reports read a period's whole
# days without scanning lines. Empty strings stand for "none" (primary-key columns cannot be NULL);
# currency '' = unpriced lines.
daily_totals = sa.Table(
    "cost_daily_totals",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("owner", sa.String(250), primary_key=True, server_default=""),
    sa.Column("team", sa.String(250), primary_key=True, server_default=""),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    # what budgets count: a reconciled line at its reconciled amount (under its reconciled currency),
    # every other line at its estimate
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("unpriced", sa.Integer, nullable=False),
    # what reports show (0009), under the lines' own currency: their estimates, and the reconciled
    # amounts of those reconcile reached with how many they are
    sa.Column("estimate_nanos", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reconciled_nanos", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reconciled_lines", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_cost_daily_totals_day", "day"),
)

# Cost lines summed per tag or label of the try, UTC day of its end, source and currency (0011), kept
# exact with cost_daily_totals (same writer, same transaction, same meaning of amount_nanos): what a
# tag or label budget reads, one row a day, instead of joining the day's tries to their labels.
daily_label_totals = sa.Table(
    "cost_daily_label_totals",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),  # tag | label (as in cost_task_run_labels)
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.String(250), primary_key=True),  # '' for a tag
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),  # '' = unpriced lines
    sa.Column("amount_nanos", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("unpriced", sa.Integer, nullable=False),
)

# The unpriced lines (0009) counted per UTC day of the try's end, DAG, task, source, metric and
# reason, kept with the daily totals: what a report lists as the causes of unpriced usage.
# `reason_key` is a digest of the reason (which can be long), so every database can index the key.
daily_unpriced = sa.Table(
    "cost_daily_unpriced",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("reason_key", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),  # '' when the line gave none
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Index("ix_cost_daily_unpriced_day", "day"),
)


def reason_key(reason: str) -> str:
    """The key of an unpriced reason in cost_daily_unpriced."""
    return hashlib.sha256(reason.encode()).hexdigest()


# One alert per (budget, period, threshold, notify target): the unique key makes it fire once; a
# pending or failed delivery is retried at the next evaluation.
budget_alerts = sa.Table(
    "cost_budget_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("budget", sa.String(250), nullable=False),
    sa.Column("period_start", sa.Date, nullable=False),
    sa.Column("period_end", sa.Date, nullable=False),  # exclusive
    sa.Column("threshold", sa.String(100), nullable=False),  # actual:80%, anomaly:run:<run_id>, ...
    sa.Column("kind", sa.String(16), nullable=False),  # actual | forecast | anomaly
    sa.Column("channel", sa.String(250), nullable=False),  # webhook:<host> or a notifier's import path
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("spent_nanos", sa.BigInteger, nullable=False),
    sa.Column("forecast_nanos", sa.BigInteger),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),  # the alert as sent
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.UniqueConstraint("budget", "period_start", "threshold", "channel", name="uq_cost_budget_alerts_key"),
    sa.Index("ix_cost_budget_alerts_status", "status"),
)

# What budgets read of the days that no longer change, kept per ledger scope so that every worker,
# task process and pod reads a scope's history once a day, not at each task end (budgets/settled.py).
budget_settled = sa.Table(
    "cost_budget_settled",
    metadata,
    sa.Column("cache_key", sa.String(64), primary_key=True),  # a digest of the scope
    sa.Column("payload", sa.Text, nullable=False),  # JSON: when read, the days kept and their sums
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


# ---------------------------------------------------------------- retention

# One `airflow-cost prune` run: the tries that ended before `before_day` lost their usage and lines
# (their try rows, labels, the daily totals and the daily label totals stay). Counts grow batch by
# batch, in each batch's transaction, so a run that stops half way still says what it did.
prunes = sa.Table(
    "cost_prunes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("before_day", sa.Date, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),  # NULL: stopped before its last batch
    sa.Column("batches", sa.Integer, nullable=False),
    sa.Column("tries", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.BigInteger, nullable=False),
    sa.Column("usage_rows", sa.BigInteger, nullable=False),
)
