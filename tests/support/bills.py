"""A bill made from a real run's ledger, as a FOCUS file, imported and reconciled the way a user does.

The integration tests run real `airflow dags test`, then bill what the ledger's lines used: each
billed row's cost is the lines' list-price estimate divided by how much of the resource they used,
so the reconciliation has a known answer (reconciled = estimated, the rest idle)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_cost_provider.cli import main

FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingCurrency",
    "ChargeCategory",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "EffectiveCost",
    "ListCost",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "Tags",
)


def copy_ledger(url: str, directory: Path) -> str:
    """A copy of a run's SQLite ledger (through SQLite's backup, WAL included), so the run's own
    tests keep reading the ledger as the run left it."""
    source = sqlite3.connect(url.removeprefix("sqlite:///"))
    target_path = directory / "reconciled-ledger.db"
    target = sqlite3.connect(target_path)
    with target:
        source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{target_path}"


def ledger_lines(url: str) -> list[dict[str, Any]]:
    """Every priced line with what reconcile matches on: source, resource, quantity, try."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT l.id, r.task_id, r.ol_run_id, l.source, u.resource, u.quantity, u.unit, "
                    "l.amount_nanos, l.currency, date(COALESCE(u.start_time, r.start_time)) AS day "
                    "FROM cost_lines l JOIN cost_usage u ON u.id = l.usage_id "
                    "JOIN cost_task_runs r ON r.id = l.task_run_id WHERE l.amount_nanos IS NOT NULL"
                )
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def estimate(lines: Iterable[dict[str, Any]]) -> Decimal:
    return sum((Decimal(line["amount_nanos"]).scaleb(-9) for line in lines), Decimal(0))


def charge(
    day: str,
    provider: str,
    service: str,
    resource_id: str,
    cost: Decimal,
    *,
    quantity: Decimal | None = None,
    unit: str = "",
    tags: dict[str, str] | None = None,
    sku: str = "usage",
    currency: str = "USD",
    period: dt.timedelta = dt.timedelta(days=1),
    category: str = "Usage",
) -> dict[str, str]:
    """One FOCUS row of a day's charge (or of `period` from `day`, a date or a date and time), billed
    at list price."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    amount = str(cost.quantize(Decimal("1e-12")))
    return {
        "BilledCost": amount,
        "BillingAccountId": "123456789012" if provider == "AWS" else "billing-account-1",
        "BillingCurrency": currency,
        "ChargeCategory": category,
        "ChargePeriodEnd": (start + period).isoformat().replace("+00:00", "Z"),
        "ChargePeriodStart": start.isoformat().replace("+00:00", "Z"),
        "ConsumedQuantity": "" if quantity is None else str(quantity),
        "ConsumedUnit": unit,
        "EffectiveCost": amount,
        "ListCost": amount,
        "ProviderName": provider,
        "RegionId": "us-east-1",
        "ResourceId": resource_id,
        "ServiceCategory": "Compute",
        "ServiceName": service,
        "SkuId": sku,
        "Tags": json.dumps(tags) if tags else "",
    }


def write_focus(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FOCUS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(*args: str) -> str:
    """An `airflow-cost` command in this process: its output; fails on a non-zero exit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def cli(*args: str) -> dict[str, Any]:
    """The same, for a command given `-o json`: its document."""
    return json.loads(run(*args))


def import_and_reconcile(ledger_url: str, bill: Path, since: str, until: str) -> dict[str, Any]:
    """`import-billing` of the FOCUS file, then `reconcile` of its days: reconcile's JSON document."""
    summary = run("import-billing", "--ledger", ledger_url, "--format", "focus", "--path", str(bill))
    assert "daily billing costs" in summary, summary
    return cli("reconcile", "--ledger", ledger_url, "--since", since, "--until", until, "-o", "json")


def reconciled(url: str) -> dict[int, tuple[int, int | None, str]]:
    """line id -> (estimate, reconciled amount, status), in nano-units."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, amount_nanos, reconciled_nanos, status FROM cost_lines"))
            return {row[0]: (row[1], row[2], row[3]) for row in rows}
    finally:
        engine.dispose()


def pools(url: str, pool: str) -> list[dict[str, Any]]:
    """The reconciled pools of that name (one per billing day)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT * FROM cost_reconciliations WHERE pool = :pool ORDER BY day"), {"pool": pool}
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()
