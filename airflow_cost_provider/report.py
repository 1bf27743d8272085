"""Cost reports read from the ledger: grouped sums per currency, with unpriced usage counted."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_cost_provider.ledger.schema import lines, task_runs
from airflow_cost_provider.ledger.store import from_nanos

GROUPINGS: dict[str, tuple[str, ...]] = {
    "dag": ("dag_id",),
    "task": ("dag_id", "task_id"),
    "run": ("dag_id", "run_id"),
    "try": ("dag_id", "task_id", "run_id", "map_index", "try_number"),
    "source": ("source",),
}
_COLUMNS = {
    "dag_id": task_runs.c.dag_id,
    "task_id": task_runs.c.task_id,
    "run_id": task_runs.c.run_id,
    "map_index": task_runs.c.map_index,
    "try_number": task_runs.c.try_number,
    "source": lines.c.source,
}


@dataclass(frozen=True)
class ReportRow:
    keys: dict[str, Any]
    amount: Decimal | None  # None: the group has only unpriced usage
    currency: str | None
    status: str
    lines: int
    unpriced: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.keys,
            "amount": None if self.amount is None else float(self.amount),
            "currency": self.currency,
            "status": self.status,
            "lines": self.lines,
            "unpriced": self.unpriced,
        }


def cost_report(
    engine: Engine, by: str, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[ReportRow]:
    """Sum per group and currency of the task tries that ended in [since, until)."""
    keys = GROUPINGS[by]
    group_columns = [_COLUMNS[key] for key in keys]
    unpriced = sa.func.sum(sa.case((lines.c.amount_nanos.is_(None), 1), else_=0))
    estimated = sa.func.sum(sa.case((lines.c.status == "estimated", 1), else_=0))
    query = (
        sa.select(
            *group_columns,
            lines.c.currency,
            sa.func.sum(lines.c.amount_nanos).label("nanos"),
            sa.func.count().label("line_count"),
            unpriced.label("unpriced_count"),
            estimated.label("estimated_count"),
        )
        .select_from(lines.join(task_runs, lines.c.task_run_id == task_runs.c.id))
        .group_by(*group_columns, lines.c.currency)
        .order_by(*group_columns, lines.c.currency)
    )
    if since is not None:
        query = query.where(task_runs.c.end_time >= since)
    if until is not None:
        query = query.where(task_runs.c.end_time < until)
    with engine.connect() as conn:
        fetched = conn.execute(query).all()
    # Unpriced lines have no currency: fold their count into the group's priced rows when it has any.
    unpriced_by_group: dict[tuple, int] = {}
    for row in fetched:
        if row.currency is None:
            unpriced_by_group[tuple(row[: len(keys)])] = int(row.unpriced_count)
    priced_groups = {tuple(row[: len(keys)]) for row in fetched if row.currency is not None}
    rows = []
    for row in fetched:
        group = tuple(row[: len(keys)])
        if row.currency is None and group in priced_groups:
            continue
        group_unpriced = unpriced_by_group.get(group, 0)
        if row.currency is None:
            status = "unpriced"
        elif group_unpriced:
            status = "partial"
        else:
            status = "estimated" if row.estimated_count else "reconciled"
        rows.append(
            ReportRow(
                keys=dict(zip(keys, group, strict=True)),
                amount=from_nanos(row.nanos),
                currency=row.currency,
                status=status,
                lines=int(row.line_count) + (group_unpriced if row.currency else 0),
                unpriced=group_unpriced,
            )
        )
    return rows


def _display_amount(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    if abs(amount) >= 1:
        return f"{amount:,.2f}"
    digits = f"{amount:.9f}".rstrip("0")  # task costs are often fractions of a cent: show them
    return digits + "0" * max(0, 2 - len(digits.split(".")[1]))


def render(rows: list[ReportRow], by: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([row.as_dict() for row in rows], indent=2)
    headers = [*GROUPINGS[by], "amount", "currency", "status", "lines", "unpriced"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        for row in rows:
            amount = "" if row.amount is None else str(row.amount)
            writer.writerow(
                [*row.keys.values(), amount, row.currency or "", row.status, row.lines, row.unpriced]
            )
        return out.getvalue().rstrip("\n")
    table = [headers] + [
        [
            *(str(v) for v in row.keys.values()),
            _display_amount(row.amount),
            row.currency or "",
            row.status,
            str(row.lines),
            str(row.unpriced),
        ]
        for row in rows
    ]
    return render_table(table, {"amount", "lines", "unpriced"}, "(no costs recorded in this period)")


# ---------------------------------------------------------------- storage costs


# Every storage row is per provider and resource; `--by` adds its own key.
STORAGE_GROUPINGS: dict[str, tuple[str, ...]] = {
    "resource": ("provider", "resource_id"),
    "service": ("provider", "resource_id", "service"),
    "usage-class": ("provider", "resource_id", "usage_class"),
    "day": ("provider", "resource_id", "day"),
}


@dataclass(frozen=True)
class StorageReportRow:
    keys: dict[str, Any]
    amount: Decimal
    currency: str
    credits: Decimal
    rows: int

    def as_dict(self) -> dict[str, Any]:
        keys = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in self.keys.items()}
        return {
            **keys,
            "amount": float(self.amount),
            "currency": self.currency,
            "credits": float(self.credits),
            "rows": self.rows,
        }


def storage_report(
    engine: Engine, by: str, since: dt.date | None = None, until: dt.date | None = None
) -> list[StorageReportRow]:
    """Storage costs per group and currency, for billing days in [since, until)."""
    from airflow_cost_provider.ledger.schema import storage_costs

    keys = STORAGE_GROUPINGS[by]
    columns = [storage_costs.c[key] for key in keys]
    query = (
        sa.select(
            *columns,
            storage_costs.c.currency,
            sa.func.sum(storage_costs.c.amount_nanos).label("nanos"),
            sa.func.sum(storage_costs.c.credit_nanos).label("credit_nanos"),
            sa.func.count().label("row_count"),
        )
        .group_by(*columns, storage_costs.c.currency)
        .order_by(*columns, storage_costs.c.currency)
    )
    if since is not None:
        query = query.where(storage_costs.c.day >= since)
    if until is not None:
        query = query.where(storage_costs.c.day < until)
    with engine.connect() as conn:
        fetched = conn.execute(query).all()
    return [
        StorageReportRow(
            keys=dict(zip(keys, row[: len(keys)], strict=True)),
            amount=from_nanos(row.nanos),
            currency=row.currency,
            credits=from_nanos(row.credit_nanos or 0),
            rows=int(row.row_count),
        )
        for row in fetched
    ]


def render_storage(rows: list[StorageReportRow], by: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([row.as_dict() for row in rows], indent=2)
    headers = [*STORAGE_GROUPINGS[by], "amount", "currency", "credits", "rows"]
    values = [
        [
            *("" if v is None else str(v) for v in row.keys.values()),
            row.amount,
            row.currency,
            row.credits,
            row.rows,
        ]
        for row in rows
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(values)
        return out.getvalue().rstrip("\n")
    table = [headers] + [
        [*cells[:-4], _display_amount(cells[-4]), cells[-3], _display_amount(cells[-2]), str(cells[-1])]
        for cells in values
    ]
    return render_table(table, {"amount", "credits", "rows"}, "(no storage costs imported for this period)")


def render_table(table: list[list[str]], numeric: set[str], empty_message: str) -> str:
    """A plain-text table: the header row first, numeric columns right-aligned."""
    headers = table[0]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    rendered = []
    for index, cells in enumerate(table):
        parts = [
            cell.rjust(width) if headers[i] in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        rendered.append("  ".join(parts).rstrip())
        if index == 0:
            rendered.append("  ".join("-" * w for w in widths))
    if len(table) == 1:
        rendered.append(empty_message)
    return "\n".join(rendered)
