"""A real ledger (SQLite and PostgreSQL through `ledger_url`) filled the way workers fill it:
ledger.store.store() of CostResults, whose writer keeps cost_daily_totals."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import pytest

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.ledger import store
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult

UTC = dt.timezone.utc


def line(source: str, amount: str, currency: str = "USD") -> CostLine:
    usage = Usage(source, "m", Decimal(1), "query")
    return CostLine(
        usage,
        Decimal(amount),
        currency,
        "list_price",
        Price(source, "m", "query", Decimal(amount), currency, "v"),
    )


def unpriced(source: str = "postgres") -> Unpriced:
    return Unpriced(Usage(source, "instance_time", Decimal(1), "second"), "no price")


def cost(
    dag: str,
    task: str,
    run: str,
    end: dt.datetime,
    lines=(),
    *,
    missing=(),
    owner: str | None = "ana",
    team: str | None = None,
    tags: tuple[str, ...] = (),
    labels: tuple[tuple[str, str], ...] = (),
    try_number: int = 1,
    capture: str = "",
) -> CostResult:
    return CostResult(
        TaskTry(dag, task, run, try_number, -1, None, owner=owner, team=team, dag_tags=tags, labels=labels),
        hashlib.md5(f"{dag}{task}{run}{try_number}{capture}".encode()).hexdigest(),
        "success",
        end - dt.timedelta(minutes=1),
        end,
        "w",
        tuple(lines),
        tuple(missing),
    )


@pytest.fixture(autouse=True)
def fresh_settled_cache():
    """Each test starts with nothing kept in memory: a test writes past days at will, a ledger does not."""
    from airflow_cost_provider.budgets import settled

    settled.clear()
    yield
    settled.clear()


@pytest.fixture
def engine(ledger_url):
    engine = store.get_engine(ledger_url)
    yield engine
    store.dispose_engines()


def keep(engine, *results: CostResult) -> None:
    for result in results:
        store.store(engine, result)
