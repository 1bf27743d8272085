"""The hour of a billed row and of a reconciled pool, where the bill has hours.

Revision ID: 0010
Revises: 0009

`usage_hour` (0-23, UTC) beside the existing `day`: NULL is the whole day, which every row imported
before is. Downgrading sums each day's hourly billing rows back into one row of the day (keyed as
before), so an import run by the older package replaces them instead of adding to them; reconciled
pools of an hour stay as rows of their day.
"""

import hashlib
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

_TABLES = ("cost_billing_costs", "cost_reconciliations")
# the key of a bill row before hours (billing.scan.row_key without the hour)
_KEY = ("provider", "billing_account", "service", "resource_id", "sku", "usage_class", "currency")
_SUMMED = ("amount_nanos", "effective_nanos", "list_nanos", "credit_nanos", "correction_nanos", "source_rows")
_BATCH = 5000


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("usage_hour", sa.SmallInteger, nullable=True))


def downgrade() -> None:
    _roll_hours_into_days()
    for table in _TABLES:
        # not a batch (a copy of the table): in SQLite, dropping the old copy would cascade to the
        # lines' shares of the pools
        op.drop_column(table, "usage_hour")


def _roll_hours_into_days() -> None:
    bind = op.get_bind()
    costs = sa.table(
        "cost_billing_costs",
        sa.column("id", sa.Integer),
        sa.column("row_key"),
        sa.column("day", sa.Date),
        sa.column("usage_hour", sa.SmallInteger),
        *(sa.column(name) for name in _KEY),
        *(sa.column(name, sa.BigInteger) for name in _SUMMED),
        sa.column("quantity"),
        sa.column("unit"),
        sa.column("usage_type"),
        sa.column("region"),
        sa.column("tags"),  # untyped: the stored JSON text, as the key was computed from it
        sa.column("tagged_run_id"),
        sa.column("source"),
        sa.column("import_id", sa.Integer),
        sa.column("updated_at"),
    )
    tags_text = sa.cast(costs.c.tags, sa.Text)
    group = (costs.c.day, *(costs.c[name] for name in _KEY), tags_text.label("tags_text"))
    hourly_groups = (
        sa.select(*group).where(costs.c.usage_hour.is_not(None)).group_by(*group).subquery("hourly")
    )
    rows = bind.execute(
        sa.select(costs, tags_text.label("tags_text"))
        .join(
            hourly_groups,
            sa.and_(
                costs.c.day == hourly_groups.c.day,
                *(costs.c[name] == hourly_groups.c[name] for name in _KEY),
                sa.func.coalesce(tags_text, "") == sa.func.coalesce(hourly_groups.c.tags_text, ""),
            ),
        )
        .order_by(costs.c.id)
    ).all()
    merged: dict[tuple, dict] = {}
    for row in rows:
        values = row._mapping
        key = (str(values["day"])[:10], *(values[name] for name in _KEY), values["tags_text"] or "")
        found = merged.get(key)
        if found is None:
            merged[key] = found = {
                name: values[name] for name in costs.c.keys() if name not in ("id", "usage_hour")
            }
            found["tags"] = values["tags_text"]
            found["row_key"] = hashlib.sha256("\x1f".join(key).encode()).hexdigest()
            found["quantity"] = _quantity(values["quantity"])
            found["ids"] = []
        else:
            for name in _SUMMED:
                # a sum is known only when every row has it (the others are never NULL)
                found[name] = None if None in (found[name], values[name]) else found[name] + values[name]
            quantity = _quantity(values["quantity"])
            found["quantity"] = (
                found["quantity"] + quantity
                if found["quantity"] is not None and quantity is not None and found["unit"] == values["unit"]
                else None
            )
        found["ids"].append(values["id"])
    records = []
    for found in merged.values():
        ids = found.pop("ids")
        for start in range(0, len(ids), _BATCH):
            bind.execute(sa.delete(costs).where(costs.c.id.in_(ids[start : start + _BATCH])))
        if found["quantity"] is not None:
            found["quantity"] = format(found["quantity"], "f")
        records.append(found)
    for start in range(0, len(records), _BATCH):
        bind.execute(sa.insert(costs), records[start : start + _BATCH])


def _quantity(text) -> Decimal | None:
    return None if text in (None, "") else Decimal(text)
