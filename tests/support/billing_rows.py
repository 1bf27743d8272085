"""Billed rows written straight into cost_billing_costs, as an import writes them, for reconcile tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.ledger.schema import NANOS_PER_UNIT, billing_costs


def nanos(amount: str | Decimal) -> int:
    return int(Decimal(amount) * NANOS_PER_UNIT)


def add_billed(
    engine: sa.Engine,
    day: dt.date,
    resource_id: str,
    amount: str,
    *,
    provider: str = "aws",
    service: str = "",
    sku: str = "sku",
    currency: str = "USD",
    list_cost: str | None = None,
    quantity: str | None = None,
    unit: str | None = None,
    tags: dict[str, str] | None = None,
    account: str = "123456789012",
) -> None:
    key = [day.isoformat(), provider, account, service, resource_id, sku, "compute", currency]
    key.append(json.dumps(tags or {}, sort_keys=True))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(billing_costs),
            {
                "row_key": hashlib.sha256("\x1f".join(key).encode()).hexdigest(),
                "provider": provider,
                "billing_account": account,
                "day": day,
                "service": service,
                "resource_id": resource_id,
                "sku": sku,
                "usage_class": "compute",
                "currency": currency,
                "amount_nanos": nanos(amount),
                "list_nanos": None if list_cost is None else nanos(list_cost),
                "credit_nanos": 0,
                "correction_nanos": 0,
                "quantity": quantity,
                "unit": unit,
                "tags": tags,
                "tagged_run_id": (tags or {}).get("openlineage_run_id"),
                "source_rows": 1,
                "source": "focus",
                "updated_at": dt.datetime.now(dt.timezone.utc),
            },
        )


def set_billed_amount(engine: sa.Engine, resource_id: str, day: dt.date, amount: str) -> None:
    """A restated day: the bill of a resource changed after it was first imported."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(billing_costs)
            .where(billing_costs.c.resource_id == resource_id, billing_costs.c.day == day)
            .values(amount_nanos=nanos(amount), list_nanos=nanos(amount))
        )


def priced_line(
    source: str,
    quantity: str,
    unit: str,
    amount: str | Decimal,
    resource: str | None,
    at: dt.datetime,
    metric: str = "m",
    currency: str = "USD",
    external_id: str | None = None,
    attributes: dict | None = None,
    until: dt.datetime | None = None,
):
    """A cost line of a usage started at `at` (and ended `until`, else an instant), priced at list
    price (amount / quantity per unit)."""
    from airflow_cost_provider.pricing import CostLine, Price, Usage

    usage = Usage(
        source,
        metric,
        Decimal(quantity),
        unit,
        resource=resource,
        external_id=external_id,
        start_time=at,
        end_time=until,
        attributes=attributes or {},
    )
    price = Price(source, metric, unit, Decimal(amount) / Decimal(quantity), currency, "v")
    return CostLine(usage, Decimal(amount), currency, "list_price", price)


def store_try(
    engine: sa.Engine,
    dag_id: str,
    task_id: str,
    cost_lines: list,
    *,
    ol_run_id: str | None = None,
    run_id: str = "r1",
    start: dt.datetime,
    minutes: int = 10,
    unpriced: tuple = (),
    tags: tuple[str, ...] = (),
) -> None:
    """A finished task try with those lines (and its DAG's tags), written as the listener writes it."""
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.ledger import store
    from airflow_cost_provider.result import CostResult

    capture_id = hashlib.md5(f"{dag_id}.{task_id}.{run_id}".encode()).hexdigest()
    store.store(
        engine,
        CostResult(
            TaskTry(dag_id, task_id, run_id, 1, -1, ol_run_id, dag_tags=tags),
            capture_id,
            "success",
            start,
            start + dt.timedelta(minutes=minutes),
            "w",
            tuple(cost_lines),
            tuple(unpriced),
        ),
    )


def reconcile_window(engine: sa.Engine, since: dt.date, until: dt.date, mode: str = "keep", rules=()) -> None:
    """`airflow-cost reconcile` of the billing days since..until (exclusive), as the command runs it."""
    from airflow_cost_provider.reconcile import store as reconciled_store
    from airflow_cost_provider.reconcile.engine import Window, run
    from airflow_cost_provider.reconcile.rules import parse_modes

    result = run(engine, Window(since, until), rules, parse_modes(mode))
    try:
        reconciled_store.write(engine, result)
    finally:
        result.close()
