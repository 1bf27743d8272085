"""What a budget's scope spent, read from a real ledger (SQLite and PostgreSQL) that store() filled:
each scope key and their combination, periods in other time zones (edges read from the lines),
currencies never mixed, unpriced lines never counted, a replaced capture counted once, and the top
contributors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_cost_provider.budgets.evaluate import currencies_seen, evaluate, top_contributors
from airflow_cost_provider.budgets.model import parse_budgets
from tests.unit.budgets.conftest import UTC, cost, keep, line, unpriced

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
DEC = dt.datetime(2026, 12, 1, tzinfo=UTC)


def budget(scope: str = "{}", period: str = "monthly", extra: str = "", currency: str = "USD"):
    (parsed,) = parse_budgets(
        f"budgets:\n  - {{name: b, scope: {scope}, period: {period}, amount: '100', currency: {currency}{extra}}}",
        "budgets.yaml",
    )
    return parsed


@pytest.fixture
def ledger(engine):
    day = dt.timedelta(days=1)
    keep(
        engine,
        # marketing: daily_sales, owned by ana, tagged finance, labelled env=prod
        cost(
            "daily_sales",
            "extract",
            "r1",
            DEC + 2 * day,
            [line("bigquery", "10.5"), line("airflow_worker", "0.25")],
            team="marketing",
            tags=("finance", "team:marketing"),
            labels=(("env", "prod"),),
        ),
        cost(
            "daily_sales",
            "load",
            "r1",
            DEC + 2 * day,
            [line("snowflake", "4"), line("bigquery", "3", "EUR")],
            missing=[unpriced()],
            team="marketing",
            tags=("finance", "team:marketing"),
        ),
        # ops: vacuum, owned by bob
        cost(
            "vacuum",
            "run",
            "r1",
            DEC + 3 * day,
            [line("airflow_worker", "1.000000001")],
            owner="bob",
            team="ops",
        ),
        # no team, recorded before attribution existed
        cost("legacy", "t", "r1", DEC + 4 * day, [line("athena", "2")], owner=None),
        # last month: never counted in December
        cost("daily_sales", "extract", "r0", DEC - day, [line("bigquery", "100")], team="marketing"),
    )
    return engine


@pytest.mark.parametrize(
    ("scope", "usd"),
    [
        ("{}", "17.750000001"),
        ("{team: marketing}", "14.75"),
        ("{team: ops}", "1.000000001"),
        ("{owner: ana}", "14.75"),
        ("{owner: bob}", "1.000000001"),
        ("{dag_id: daily_sales}", "14.75"),
        ("{dag_id: daily_sales, task_id: load}", "4"),
        ("{task_id: extract}", "10.75"),
        ("{source: bigquery}", "10.5"),
        ("{team: marketing, source: airflow_worker}", "0.25"),
        ("{tag: finance}", "14.75"),
        ("{tag: 'team:marketing', source: snowflake}", "4"),
        ("{label: {env: prod}}", "10.75"),
        ("{label: {env: dev}}", "0"),
        ("{team: nobody}", "0"),
    ],
    ids=lambda value: (
        ("".join(c for c in value if c.isalnum() or c == "_") or "everything") if "{" in value else ""
    ),
)
def test_spent(ledger, scope, usd):
    status = evaluate(ledger, budget(scope), NOW)
    assert status.spent_amount == Decimal(usd)
    assert status.percent == (Decimal(usd) * 100 / 100).quantize(Decimal("0.1"), rounding="ROUND_DOWN")


def test_currencies_are_never_added_and_unpriced_lines_are_counted_apart(ledger):
    status = evaluate(ledger, budget("{dag_id: daily_sales}"), NOW)
    assert status.spent == {"EUR": Decimal(3), "USD": Decimal("14.75")}
    assert status.other_currencies == {"EUR": Decimal(3)}
    assert status.unpriced == 1
    eur = evaluate(ledger, budget("{dag_id: daily_sales}", currency="EUR"), NOW)
    assert eur.spent_amount == Decimal(3) and eur.percent == Decimal("3.0")
    assert currencies_seen(ledger) == {"USD", "EUR"}


def test_a_replaced_capture_counts_once(engine):
    end = DEC + dt.timedelta(days=2)
    keep(engine, cost("d", "t", "r", end, [line("x", "5")], team="t1"))
    keep(engine, cost("d", "t", "r", end, [line("x", "7")], team="t2", capture="again"))
    assert evaluate(engine, budget("{}"), NOW).spent_amount == Decimal(7)
    assert evaluate(engine, budget("{team: t1}"), NOW).spent_amount == Decimal(0)
    assert evaluate(engine, budget("{team: t2}"), NOW).spent_amount == Decimal(7)


@pytest.mark.parametrize("scope", ["{}", "{tag: t}"], ids=["totals", "lines"])
def test_local_period_hours(  # totals with edges from the lines; the lines path
    engine, scope
):
    berlin = budget(scope, extra=", timezone: Europe/Berlin")
    new_york = budget(scope, extra=", timezone: America/New_York")
    costs = {
        dt.datetime(2026, 11, 30, 22, 59, tzinfo=UTC): "1",  # November in Berlin and New York
        dt.datetime(2026, 11, 30, 23, 0, tzinfo=UTC): "2",  # 1 December 00:00 in Berlin
        dt.datetime(2026, 12, 1, 4, 59, tzinfo=UTC): "4",  # still 30 November in New York
        dt.datetime(2026, 12, 1, 5, 0, tzinfo=UTC): "8",  # 1 December 00:00 in New York
        dt.datetime(2026, 12, 15, 12, 0, tzinfo=UTC): "16",
        dt.datetime(2026, 12, 31, 22, 59, tzinfo=UTC): "32",  # the last minute of December in Berlin
        dt.datetime(2026, 12, 31, 23, 0, tzinfo=UTC): "64",  # January in Berlin, December in New York
        dt.datetime(2027, 1, 1, 5, 0, tzinfo=UTC): "128",  # January everywhere
    }
    for index, (end, amount) in enumerate(costs.items()):
        keep(engine, cost("d", "t", f"r{index}", end, [line("x", amount)], tags=("t",)))
    now = dt.datetime(2026, 12, 20, tzinfo=UTC)
    assert evaluate(engine, berlin, now).spent_amount == 2 + 4 + 8 + 16 + 32
    assert evaluate(engine, new_york, now).spent_amount == 8 + 16 + 32 + 64
    assert evaluate(engine, budget(scope), now).spent_amount == 4 + 8 + 16 + 32 + 64


def test_top_contributors_are_dags_or_the_tasks_of_a_one_dag_scope(ledger):
    start, end = DEC, dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert top_contributors(ledger, budget("{}"), start, end) == [
        ("daily_sales", Decimal("14.75")),
        ("legacy", Decimal(2)),
        ("vacuum", Decimal("1.000000001")),
    ]
    assert top_contributors(ledger, budget("{}"), start, end, limit=1) == [("daily_sales", Decimal("14.75"))]
    assert top_contributors(ledger, budget("{dag_id: daily_sales}"), start, end) == [
        ("extract", Decimal("10.75")),
        ("load", Decimal(4)),
    ]
    assert top_contributors(ledger, budget("{label: {env: prod}}"), start, end) == [
        ("daily_sales", Decimal("10.75"))
    ]
    berlin = budget("{}", extra=", timezone: Europe/Berlin")
    start, end = berlin.bounds(NOW)
    assert top_contributors(ledger, berlin, start, end)[0] == ("daily_sales", Decimal("14.75"))


def test_status_reads_contributors_only_when_asked_or_something_is_crossed(ledger):
    quiet = budget("{}", extra=", thresholds: [{actual: 50%}]")
    assert evaluate(ledger, quiet, NOW).top_contributors == []
    assert evaluate(ledger, quiet, NOW, contributors=True).top_contributors[0][0] == "daily_sales"
    loud = budget("{}", extra=", thresholds: [{actual: 15%}, {actual: '17.75 USD'}, {actual: '18 USD'}]")
    status = evaluate(ledger, loud, NOW)
    assert [t.key for t in status.crossed] == ["actual:15%", "actual:17.75 USD"]
    assert status.top_contributors[0] == ("daily_sales", Decimal("14.75"))
    assert [trigger.message for trigger in status.triggers] == [
        "spent 17.750000001 USD reached actual 15% (15.00 of 100.00 USD)",
        "spent 17.750000001 USD reached actual 17.75 USD (17.75 of 100.00 USD)",
    ]


def test_the_previous_period(ledger):
    from airflow_cost_provider.budgets.periods import previous_bounds

    november = previous_bounds("monthly", NOW)
    status = evaluate(ledger, budget("{team: marketing}"), NOW, bounds=november)
    assert status.spent_amount == Decimal(100) and status.complete
    assert status.forecast == Decimal(100)  # an ended period's forecast is what it spent
