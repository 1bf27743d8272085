"""Anomalies: a DAG run costing more than k x the median of its DAG's last N runs, and a day above
median + m x MAD of the last days; each with its alert key."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_cost_provider.budgets import evaluate as evaluation
from airflow_cost_provider.budgets.evaluate import day_anomaly, evaluate, mad, run_anomalies
from airflow_cost_provider.budgets.model import Threshold, parse_budgets
from tests.unit.budgets.conftest import UTC, cost, keep, line

DAY = dt.timedelta(days=1)
START = dt.datetime(2026, 11, 20, 2, tzinfo=UTC)
NANOS = 10**9


def rule(k="3", runs=10) -> Threshold:
    return Threshold("anomaly", run_cost_vs_median=Decimal(k), last_runs=runs)


def daily(m="3", days=28) -> Threshold:
    return Threshold("anomaly", daily_mad=Decimal(m), last_days=days)


def budget(scope="{}", thresholds="[{anomaly: {run_cost_vs_median: 3, last_runs: 10}}]"):
    (parsed,) = parse_budgets(
        f"budgets:\n  - {{name: b, scope: {scope}, period: monthly, amount: '1000', currency: USD, "
        f"thresholds: {thresholds}}}",
        "budgets.yaml",
    )
    return parsed


def test_mad_is_the_median_distance_from_the_median():
    assert mad([Decimal(v) for v in (1, 2, 3, 4, 100)]) == 1
    assert mad([Decimal(10)] * 5) == 0


# ---------------------------------------------------------------- days


def spend(values: list[int], today: dt.date) -> dict[dt.date, int]:
    """Whole days before `today`, oldest first, in units."""
    return {today - DAY * (len(values) - i): v * NANOS for i, v in enumerate(values)}


TODAY = dt.date(2026, 12, 10)


@pytest.mark.parametrize(
    ("today_spend", "anomalous"),
    [(13, False), (Decimal("13.000000001"), True), (40, True)],
)
def test_a_day_above_median_plus_m_mad(today_spend, anomalous):
    days = spend([9, 11] * 7, TODAY)  # median 10, MAD 1: limit 10 + 3 x 1
    days[TODAY] = int(Decimal(today_spend) * NANOS)
    found = day_anomaly(daily("3"), TODAY, days, "USD")
    assert (found is not None) == anomalous
    if found:
        assert (found.median, found.limit, found.amount) == (10, 13, Decimal(today_spend))
        assert found.key == "anomaly:day:2026-12-10"


def test_a_day_anomaly_says_why():
    days = spend([9, 11] * 7, TODAY)
    days[TODAY] = int(Decimal("40.5") * NANOS)
    assert day_anomaly(daily("3"), TODAY, days, "USD").describe() == (
        "UTC day 2026-12-10 spent 40.50 USD, above 13.00 (median 10.00 + 3 x MAD of the last 28 days)"
    )


def test_m_scales_the_spread():
    days = spend([9, 11] * 7, TODAY)
    days[TODAY] = 20 * NANOS
    assert day_anomaly(daily("9"), TODAY, days, "USD") is not None  # 20 > 10 + 9
    assert day_anomaly(daily("10"), TODAY, days, "USD") is None  # 20 = 10 + 10


def test_a_flat_history_does_not_alert_on_a_cent():
    days = spend([10] * 14, TODAY)  # MAD 0: the spread is 5 % of the median
    days[TODAY] = int(Decimal("10.01") * NANOS)
    assert day_anomaly(daily("3"), TODAY, days, "USD") is None
    days[TODAY] = int(Decimal("11.51") * NANOS)
    assert day_anomaly(daily("3"), TODAY, days, "USD").limit == Decimal("11.5")


def test_no_day_anomaly_without_a_week_of_history_or_with_a_median_of_zero():
    days = spend([10] * 6, TODAY)
    days[TODAY] = 1000 * NANOS
    assert day_anomaly(daily(), TODAY, days, "USD") is None
    weekly_dag = spend([0, 0, 0, 0, 0, 0, 50] * 2, TODAY)  # a scope quiet on most days
    weekly_dag[TODAY] = 50 * NANOS
    assert day_anomaly(daily(), TODAY, weekly_dag, "USD") is None


def test_only_the_last_days_are_history():
    days = spend([100] * 20 + [10] * 7, TODAY)
    days[TODAY] = 30 * NANOS
    assert day_anomaly(daily(days=7), TODAY, days, "USD") is not None
    assert day_anomaly(daily(days=28), TODAY, days, "USD") is None  # median 100


def test_a_day_anomaly_on_the_ledger(engine):
    for offset in range(1, 15):
        keep(engine, cost("d", "t", f"r{offset}", START + DAY * (20 - offset), [line("x", "10")]))
    now = START + DAY * 20  # 10 December, 02:00
    keep(engine, cost("d", "t", "today", now - dt.timedelta(minutes=5), [line("x", "50")]))
    status = evaluate(engine, budget(thresholds="[{anomaly: {daily_mad: 3}}]"), now)
    assert [a.key for a in status.anomalies] == ["anomaly:day:2026-12-10"]
    assert [t.key for t in status.triggers] == ["anomaly:day:2026-12-10"]
    assert status.top_contributors == [("d", Decimal(50 + 9 * 10))]


# ---------------------------------------------------------------- runs


def runs(engine, dag: str, costs: list[str], source: str = "x", **attribution) -> list[str]:
    """One run a day from START, each of two tasks costing half."""
    ids = []
    for index, amount in enumerate(costs):
        run_id = f"scheduled__{(START + DAY * index).date()}"
        half = str(Decimal(amount) / 2)
        end = START + DAY * index + dt.timedelta(minutes=10)
        keep(
            engine,
            cost(dag, "a", run_id, end, [line(source, half)], **attribution),
            cost(dag, "b", run_id, end + dt.timedelta(minutes=5), [line(source, half)], **attribution),
        )
        ids.append(run_id)
    return ids


def judge(engine, threshold, targets, scope="{}"):
    with engine.connect() as conn:
        return run_anomalies(conn, budget(scope), threshold, targets)


def test_a_run_above_k_times_the_median_of_its_last_runs(engine):
    ids = runs(engine, "etl", ["10"] * 12 + ["31", "30"])
    (found,) = judge(engine, rule("3"), [("etl", ids[-2]), ("etl", ids[-1])])
    assert (found.subject, found.amount, found.median, found.limit) == (f"etl/{ids[-2]}", 31, 10, 30)
    assert found.key == f"anomaly:run:etl/{ids[-2]}"
    assert found.describe() == (
        f"run etl/{ids[-2]} cost 31.00 USD, more than 3 x the median 10.00 of its DAG's last 10 runs"
    )
    # the run at exactly 3 x is not; at k=2 both are (30 against the median 10 of the 10 before it)
    assert [a.run_id for a in judge(engine, rule("2"), [("etl", ids[-2]), ("etl", ids[-1])])] == ids[-2:]


def test_only_the_last_n_runs_count(engine):
    ids = runs(engine, "etl", ["1"] * 10 + ["10"] * 3 + ["25"])
    assert judge(engine, rule("3", runs=3), [("etl", ids[-1])]) == []  # median 10
    (found,) = judge(engine, rule("3", runs=10), [("etl", ids[-1])])  # median of 7 x 1 and 3 x 10
    assert found.median == 1


def test_no_run_anomaly_with_fewer_than_three_earlier_runs_or_a_median_of_zero(engine):
    ids = runs(engine, "young", ["1", "1", "100"])
    assert judge(engine, rule(), [("young", ids[-1])]) == []
    ids = runs(engine, "free", ["0", "0", "0", "0", "5"])
    assert judge(engine, rule(), [("free", ids[-1])]) == []


def test_each_dag_is_judged_against_its_own_runs(engine):
    cheap = runs(engine, "cheap", ["1"] * 5)
    runs(engine, "dear", ["100"] * 5)
    assert judge(engine, rule(), [("cheap", cheap[-1])]) == []


def test_a_run_counts_only_its_cost_in_the_scope(engine):
    ids = runs(engine, "etl", ["10"] * 5, source="athena")
    late = START + DAY * 5
    keep(
        engine,
        cost("etl", "a", "big", late, [line("athena", "10"), line("bigquery", "500")]),
        cost("etl", "b", "big", late, [line("athena", "10")]),
    )
    assert judge(engine, rule(), [("etl", "big")], scope="{source: athena}") == []
    (found,) = judge(engine, rule(), [("etl", "big")])
    assert found.amount == 520 and ids


def test_a_dag_with_many_tries_per_run_reads_further_back(engine, monkeypatch):
    monkeypatch.setattr(evaluation, "TRIES_PER_RUN", 1)  # the first read holds 4 tries: 2 runs
    ids = runs(engine, "wide", ["10"] * 6 + ["40"])
    (found,) = judge(engine, rule("3", runs=3), [("wide", ids[-1])])
    assert found.median == 10


def test_at_a_task_end_only_its_run_is_judged_and_scheduled_evaluations_judge_recent_runs(engine):
    ids = runs(engine, "etl", ["10"] * 8 + ["50", "10"])
    now = START + DAY * 9 + dt.timedelta(hours=1)
    at_task_end = evaluate(engine, budget(), now, run=("etl", ids[-1]))
    assert at_task_end.anomalies == []
    scheduled = evaluate(engine, budget(), now)
    assert [a.key for a in scheduled.anomalies] == [f"anomaly:run:etl/{ids[-2]}"]
    assert evaluate(engine, budget(), now, run=("etl", ids[-2])).anomalies == scheduled.anomalies


def test_an_anomaly_key_fits_the_alerts_table(engine):
    long_run = "manual__" + "x" * 240
    runs(engine, "etl", ["1"] * 4)
    keep(engine, cost("etl", "a", long_run, START + DAY * 5, [line("x", "9")]))
    (found,) = judge(engine, rule(), [("etl", long_run)])
    assert len(found.key) == 100 and found.key.startswith("anomaly:run:etl/manual__xxx")
    assert found.run_id == long_run


def test_a_run_counts_only_its_tries_in_the_scope_and_reads_back_past_the_others(engine, monkeypatch):
    """A DAG whose tasks belong to two teams: a team's run costs only its own tries; and a run with more
    tries than the first read holds (the read then ends inside it) makes the read go further back."""
    monkeypatch.setattr(evaluation, "TRIES_PER_RUN", 1)  # the first read: 5 tries, a run has 5
    ids = []
    for index, mine in enumerate(["10"] * 6 + ["40"]):
        run_id = f"scheduled__{(START + DAY * index).date()}"
        end = START + DAY * index + dt.timedelta(minutes=10)
        theirs = [
            cost(
                "mixed", f"theirs_{n}", run_id, end + dt.timedelta(minutes=1 + n), [line("x", "1")], team="t2"
            )
            for n in range(4)
        ]
        keep(engine, cost("mixed", "mine", run_id, end, [line("x", mine)], team="t1", tags=("t",)), *theirs)
        ids.append(run_id)
    for scope in ("{team: t1}", "{tag: t}"):
        (found,) = judge(engine, rule("3", runs=3), [("mixed", ids[-1])], scope=scope)
        assert (found.amount, found.median) == (40, 10), scope
    assert judge(engine, rule("3", runs=3), [("mixed", ids[-1])], scope="{team: t2}") == []  # 4 a run
    (found,) = judge(engine, rule("3", runs=3), [("mixed", ids[-1])])  # the whole run: 44 vs 14
    assert (found.amount, found.median) == (44, 14)
