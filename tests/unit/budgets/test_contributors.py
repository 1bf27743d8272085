"""The top contributors of a status read through the settled-spend cache (the settled whole UTC days
per DAG or task, kept) are the answers of the full read of the period's ledger, for every kind of
scope, period and time zone, cold and warm, and after a past day's capture is replaced."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from airflow_cost_provider.budgets import settled
from airflow_cost_provider.budgets.evaluate import _top_tasks, _top_tasks_settled, top_contributors
from airflow_cost_provider.budgets.model import parse_budgets
from tests.unit.budgets.conftest import UTC, cost, keep, line

NOW = dt.datetime(2026, 12, 20, 15, 30, tzinfo=UTC)
DAGS = ["daily_sales", "vacuum", "legacy", "ml_train"]
TASKS = ["extract", "load", "train"]

SCOPES = [
    "{}",
    "{dag_id: daily_sales}",
    "{team: marketing}",
    "{owner: bob}",
    "{source: bigquery}",
    "{tag: finance}",
    "{label: {env: prod}}",
    "{tag: finance, team: marketing}",
    "{dag_id: ml_train, label: {env: prod}}",
]
PERIODS = [
    ("monthly", ""),
    ("weekly", ", week_start: sunday, timezone: Europe/Berlin"),
    ("daily", ", timezone: America/New_York"),
    ("quarterly", ", timezone: Asia/Tokyo"),
]


def budget(scope: str, period: str, extra: str):
    (parsed,) = parse_budgets(
        f"budgets:\n  - {{name: b, scope: {scope}, period: {period}, amount: '100', currency: USD{extra}}}",
        "budgets.yaml",
    )
    return parsed


@pytest.fixture
def ledger(engine):
    """About 400 tries over the 60 days up to NOW, at random hours, two currencies, tags and labels."""
    rng = random.Random(16)
    results = []
    for n in range(400):
        end = NOW - dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 60))
        dag = rng.choice(DAGS)
        amounts = [
            line(rng.choice(["bigquery", "snowflake"]), f"{rng.randrange(1, 5000)}.{rng.randrange(100)}")
        ]
        if n % 7 == 0:
            amounts.append(line("bigquery", "3.5", "EUR"))
        results.append(
            cost(
                dag,
                rng.choice(TASKS),
                f"r{n}",
                end,
                amounts,
                owner=rng.choice(["ana", "bob"]),
                team=rng.choice(["marketing", "ops"]),
                tags=("finance",) if dag in ("daily_sales", "ml_train") else ("ops",),
                labels=(("env", rng.choice(["prod", "dev"])),),
            )
        )
    keep(engine, *results)
    return engine


def test_cached_equals_full(ledger):
    """Every scope in every kind of period: cold (fetched, then kept), warm (from memory), from what
    the ledger keeps (another process), and the top 10."""
    for scope in SCOPES:
        for period, extra in PERIODS:
            settled.clear()
            b = budget(scope, period, extra)
            start, end = b.bounds(NOW)
            with ledger.connect() as conn:
                full = _top_tasks(conn, b, start, end, 3)
                for _ in range(2):
                    assert _top_tasks_settled(conn, b, start, end, 3, NOW) == full, (scope, period)
                settled.clear()
                assert _top_tasks_settled(conn, b, start, end, 3, NOW) == full, (scope, period)
                assert _top_tasks_settled(conn, b, start, end, 10, NOW) == _top_tasks(conn, b, start, end, 10)
            assert top_contributors(ledger, b, start, end, now=NOW) == top_contributors(ledger, b, start, end)
            if period in ("monthly", "quarterly"):  # a period long enough to hold tries of every scope
                assert full, scope


def test_a_changed_past_day_is_read_again(ledger, monkeypatch):
    """As the settled spend: a capture replaced long after its try shows once the kept days are read
    again (all of them every day)."""
    b = budget("{}", "monthly", "")
    start, end = b.bounds(NOW)
    clock = [1_000_000.0]
    monkeypatch.setattr(settled, "_wall_clock", lambda: clock[0])
    with ledger.connect() as conn:
        before = _top_tasks_settled(conn, b, start, end, 3, NOW)
    keep(
        ledger,
        cost(
            "legacy", "load", "late", dt.datetime(2026, 12, 2, 5, tzinfo=UTC), [line("snowflake", "900000")]
        ),
    )
    with ledger.connect() as conn:
        assert _top_tasks_settled(conn, b, start, end, 3, NOW) == before  # kept, not read again yet
        clock[0] += settled.FULL_AGE_SECONDS + 1
        after = _top_tasks_settled(conn, b, start, end, 3, NOW)
        assert after == _top_tasks(conn, b, start, end, 3)
        assert after[0][0] == "legacy" and after != before
