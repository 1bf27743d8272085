"""`airflow-cost report --by model` and `airflow-cost report savings`: dbt nodes' costs, and what their
reuse saved at the average of their last N priced builds, on SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
from decimal import Decimal

import pytest

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult

DAY1 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
PRICE = Price("postgres", "instance_time", "instance-hour", Decimal("0.225"), "USD", "v")


def node_line(node: str, status: str, amount: str | None):
    usage = Usage(
        "postgres",
        "instance_time",
        Decimal(1),
        "instance-second",
        resource=node,
        attributes={"dbt_unique_id": node, "status": status},
    )
    if amount is None:
        return Unpriced(usage, "no price for postgres/instance_time: no instance")
    return CostLine(usage, Decimal(amount), "USD", "runtime_rate", PRICE)


def dbt_run(run: str, end: dt.datetime, nodes: list) -> CostResult:
    priced = tuple(n for n in nodes if isinstance(n, CostLine))
    unpriced = tuple(n for n in nodes if isinstance(n, Unpriced))
    worker = CostLine(
        Usage("airflow_worker", "cpu_time", Decimal(1), "vCPU-second"),
        Decimal("0.01"),
        "USD",
        "runtime_rate",
        PRICE,
    )
    return CostResult(
        TaskTry("dbt_daily", "dbt_build", run, 1, -1, None),
        hashlib.md5(run.encode()).hexdigest(),
        "success",
        end - dt.timedelta(minutes=1),
        end,
        "w",
        (*priced, worker),
        unpriced,
    )


@pytest.fixture
def ledger(ledger_url):
    engine = store.get_engine(ledger_url)
    history = [
        # three builds of `orders` (1, 2, 6 -> the last 2 average 4), one of `customers`
        (
            "r1",
            DAY1,
            [
                node_line("model.shop.orders", "success", "1"),
                node_line("model.shop.customers", "success", "0.5"),
            ],
        ),
        ("r2", DAY1 + dt.timedelta(hours=1), [node_line("model.shop.orders", "success", "2")]),
        ("r3", DAY1 + dt.timedelta(hours=2), [node_line("model.shop.orders", "error", "6")]),
        # next day: both reused; `events` reused but never priced
        (
            "r4",
            DAY1 + dt.timedelta(days=1),
            [
                node_line("model.shop.orders", "reused", "0"),
                node_line("model.shop.customers", "skipped", "0"),
                node_line("model.shop.events", "reused", None),
            ],
        ),
        (
            "r5",
            DAY1 + dt.timedelta(days=1, hours=1),
            [node_line("model.shop.orders", "reused", "0"), node_line("model.shop.events", "success", None)],
        ),
    ]
    for run, end, nodes in history:
        store.store(engine, dbt_run(run, end, nodes))
    return ledger_url


def cli(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return json.loads(out.getvalue())


def test_costs_by_model(ledger):
    doc = cli(
        "report",
        "--by",
        "model",
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-23",
        "--ledger",
        ledger,
        "-o",
        "json",
    )
    amounts = {row["model"]: (row["amount"], row["lines"]) for row in doc["rows"]}
    assert amounts == {
        "model.shop.orders": ("9.00", 5),
        "model.shop.customers": ("0.50", 2),
        "(none)": ("0.05", 5),  # the worker's lines of the five tries
        "model.shop.events": (None, 2),
    }


def test_savings_per_model_and_day(ledger):
    doc = cli(
        "report",
        "savings",
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-23",
        "--builds",
        "2",
        "--ledger",
        ledger,
        "-o",
        "json",
    )
    rows = {(row["model"], row["day"]): row for row in doc["rows"]}
    orders = rows[("model.shop.orders", "2026-11-21")]
    # each reuse saves the average of the last 2 priced builds: (2 + 6) / 2
    assert (orders["reuses"], orders["builds"], orders["saved"], orders["per_reuse"]) == (
        2,
        0,
        "8.00",
        "4.00",
    )
    assert Decimal(orders["reuse_rate"]) == 1
    assert rows[("model.shop.customers", "2026-11-21")]["saved"] == "0.50"
    events = rows[("model.shop.events", "2026-11-21")]
    assert (events["reuses"], events["builds"], events["saved"], events["currency"]) == (1, 1, None, None)
    assert Decimal(events["reuse_rate"]) == Decimal("0.5")
    assert rows[("model.shop.orders", "2026-11-20")]["reuses"] == 0
    assert rows[("model.shop.orders", "2026-11-20")]["builds"] == 3
    assert doc["total"] == [
        {
            "model": "total",
            "day": None,
            "reuses": 3,
            "builds": None,
            "reuse_rate": None,
            "saved": "8.50",
            "currency": "USD",
            "per_reuse": None,
        }
    ]
    assert doc["unestimated_reuses"] == 1
    # a summary over the period, and an average over all builds before
    summary = cli(
        "report",
        "savings",
        "--by",
        "model",
        "--since",
        "2026-11-21",
        "--until",
        "2026-11-23",
        "--ledger",
        ledger,
        "-o",
        "json",
    )
    orders = {row["model"]: row for row in summary["rows"]}["model.shop.orders"]
    assert (orders["saved"], orders["per_reuse"]) == ("6.00", "3.00")
