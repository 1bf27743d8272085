"""Imported storage costs in budgets, read from a real ledger (SQLite and PostgreSQL) written by the
storage importer's own writer: an everything scope counts them beside the task costs, a
`storage: GLOB` scope counts only the matching buckets; the billing days not imported yet are
forecast from the last imported days; a storage scope never matches a task try."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from airflow_cost_provider import conf
from airflow_cost_provider.billing.importer import CollectedCosts
from airflow_cost_provider.billing.scan import StorageCost
from airflow_cost_provider.budgets import storage
from airflow_cost_provider.budgets.evaluate import evaluate, evaluate_all
from airflow_cost_provider.budgets.model import BudgetError, matching_budgets, parse_budgets
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import budgets as budgets_command
from airflow_cost_provider.ledger import store
from tests.unit.budgets.conftest import UTC, cost, keep, line
from tests.unit.budgets.test_cli import run

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
DAY = dt.timedelta(days=1)
IMPORTED_THROUGH = dt.date(2026, 12, 18)  # billing data arrives a day or two late


def budget(scope: str, extra: str = "", period: str = "monthly"):
    (parsed,) = parse_budgets(
        f"budgets:\n  - {{name: b, scope: {scope}, period: {period}, amount: '100', currency: USD{extra}}}",
        "budgets.yaml",
    )
    return parsed


def storage_cost(day: dt.date, resource: str, amount: str, currency: str = "USD") -> StorageCost:
    nanos = int(Decimal(amount) * 10**9)
    return StorageCost(
        "aws", "123456789012", day, resource, "TimedStorage-ByteHrs", "standard", currency,
        nanos, nanos, nanos, 0, 0, "1", "GB-Mo", None, "TimedStorage-ByteHrs", "AmazonS3", "us-east-1", 1, "focus",
    )  # fmt: skip


def import_storage(engine, costs: list[StorageCost]) -> None:
    store.write_storage_import(
        engine, CollectedCosts("focus", costs, rows_read=len(costs), rows_imported=len(costs))
    )


@pytest.fixture
def ledger(engine):
    """December: tasks spend 10 a day (Dec 1 to 19) and today 5; buckets bill 2 (raw-events) and 1
    (marts_2026) a day, imported through Dec 18; November's days too, outside the period."""
    for offset in range(1, 20):
        keep(
            engine, cost("daily_sales", "extract", f"r{offset}", NOW - DAY * offset, [line("bigquery", "10")])
        )
    keep(
        engine, cost("daily_sales", "extract", "today", NOW - dt.timedelta(hours=1), [line("bigquery", "5")])
    )
    costs = []
    day = dt.date(2026, 11, 25)
    while day <= IMPORTED_THROUGH:
        costs += [storage_cost(day, "raw-events", "2"), storage_cost(day, "marts_2026", "1")]
        costs.append(storage_cost(day, "martsx2026", "1000"))  # "_" is no wildcard: never in marts_*
        day += DAY
    costs.append(storage_cost(dt.date(2026, 12, 1), "raw-events", "7", "EUR"))
    import_storage(engine, costs)
    return engine


def test_everything_counts_task_and_storage_costs(ledger):
    status = evaluate(ledger, budget("{}"), NOW)
    # tasks: Dec 1 12:00 .. Dec 19 12:00 is 19 runs of 10, plus 5 today; storage: 18 days of 1003
    assert status.spent_amount == Decimal(195) + 18 * Decimal(1003)
    assert status.storage_spent == 18 * Decimal(1003)
    assert status.storage_through == IMPORTED_THROUGH
    assert status.spent["EUR"] == Decimal(7)  # shown apart, never converted


def test_a_storage_scope_counts_its_buckets_and_forecasts_the_days_not_imported(ledger):
    status = evaluate(ledger, budget("{storage: 'raw-*'}"), NOW, contributors=True)
    assert status.spent_amount == Decimal(36)  # Dec 1..18 at 2
    assert status.storage_spent == Decimal(36)
    # Dec 19..31 not imported yet: 13 days at the median of the last 7 imported days (2)
    assert status.forecast == Decimal(36 + 13 * 2)
    assert status.forecast_judged
    assert status.top_contributors == [("storage raw-events", Decimal(36))]
    marts = evaluate(ledger, budget("{storage: 'marts_*'}"), NOW)
    assert marts.spent_amount == Decimal(18)  # not martsx2026: "_" matches itself only


def test_the_storage_forecast_needs_three_imported_days(engine):
    import_storage(engine, [storage_cost(dt.date(2026, 12, 17), "raw-events", "2")])
    status = evaluate(engine, budget("{storage: '*'}"), NOW)
    assert status.spent_amount == Decimal(2)
    assert status.forecast is None
    assert status.forecast_note == "no storage forecast yet: it needs 3 imported days, there are 1"


def test_everything_forecast_adds_the_storage_days_not_imported(ledger):
    with_storage = evaluate(ledger, budget("{}"), NOW)
    tasks_only = evaluate(ledger, budget("{source: bigquery}"), NOW)
    # the same task forecast, plus 13 days of 1003 not imported yet, plus what was imported
    assert with_storage.forecast == tasks_only.forecast + 18 * Decimal(1003) + 13 * Decimal(1003)


def test_a_billing_day_counts_in_the_period_of_its_local_date(ledger):
    # a New York December starts at Dec 1 05:00 UTC: the billing day Dec 1 is in it, Nov 30 is not
    status = evaluate(ledger, budget("{storage: 'raw-*'}", ", timezone: America/New_York"), NOW)
    assert status.period_start.date() == dt.date(2026, 12, 1)
    assert status.spent_amount == Decimal(36)


def test_a_storage_scope_matches_no_task_try_and_is_evaluated_with_the_others(ledger):
    everything, buckets = budget("{}"), budget("{storage: 'raw-*'}")
    task_try = TaskTry("daily_sales", "extract", "r", 1, -1, None)
    assert matching_budgets([everything, buckets], task_try, {"bigquery"}) == [everything]
    first, second = evaluate_all(ledger, [everything, buckets], NOW)
    assert (first.storage_spent, second.storage_spent) == (18 * Decimal(1003), Decimal(36))


def test_a_period_without_storage_imported_is_not_zero_spend_forever(engine):
    keep(engine, cost("d", "t", "r", NOW - DAY, [line("bigquery", "1")]))
    status = evaluate(engine, budget("{}"), NOW)
    assert status.storage_spent == Decimal(0) and status.storage_through is None
    tasks = evaluate(engine, budget("{source: bigquery}"), NOW)
    assert tasks.storage_spent is None  # a task scope never counts storage


@pytest.mark.parametrize(
    ("scope", "extra", "message"),
    [
        (
            "{storage: 'raw-*', team: data}",
            "",
            "budgets.yaml budget 'b': scope.storage: cannot be combined with team: storage costs belong to "
            "buckets and storage accounts, not to task tries; give them a budget of their own",
        ),
        (
            "{storage: 'raw-*'}",
            ", thresholds: [{actual: 80%}, {anomaly: {run_cost_vs_median: 3}}]",
            "budgets.yaml budget 'b': thresholds: an anomaly rule judges DAG runs and days of task spend, which "
            "a storage scope has none of: use actual and forecast thresholds",
        ),
    ],
)
def test_bad_storage_scopes_are_named(scope, extra, message):
    with pytest.raises(BudgetError) as raised:
        budget(scope, extra)
    assert str(raised.value) == message


def test_like_pattern_escapes_what_is_not_a_wildcard():
    assert storage.like_pattern("raw_%\\*?") == "raw\\_\\%\\\\%_"


def test_budgets_status_says_what_storage_is_in_the_spent(ledger, tmp_path, monkeypatch):
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "budgets:\n  - {name: buckets, scope: {storage: 'raw-*'}, period: monthly, amount: '50', currency: USD, "
        "thresholds: [{forecast: 100%}]}\n"
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__LEDGER_CONN", ledger.url.render_as_string(hide_password=False)
    )
    conf.clear_cache()
    monkeypatch.setattr(budgets_command, "_now", lambda: NOW)
    code, out, err = run("budgets", "-o", "json")
    assert (code, err) == (0, "")
    (row,) = json.loads(out)["rows"]
    assert (row["spent"], row["forecast"], row["crossed"]) == ("36.00", "62.00", ["forecast:100%"])
    (details,) = json.loads(out)["details"]
    assert details["storage_spent"] == "36.00"
    assert details["storage_imported_through"] == "2026-12-18"
    code, out, err = run("budgets")
    assert "  storage costs: 36.00 of the spent (billing days through 2026-12-18)" in out
    assert "  top contributors: storage raw-events 36.00" in out
