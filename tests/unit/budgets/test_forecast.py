"""The forecast: spent + the median day (of the same weekday with three weeks of history) for each day
left; today adds only what its median still exceeds; no forecast without a week of history; forecast
thresholds never fire in the first hours of a period, however costly one early run is."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from airflow_cost_provider.budgets.evaluate import evaluate, forecast, forecast_judged_from, history
from airflow_cost_provider.budgets.model import parse_budgets
from airflow_cost_provider.budgets.periods import period_bounds
from tests.unit.budgets.conftest import UTC, cost, keep, line

DAY = dt.timedelta(days=1)
DEC = dt.datetime(2026, 12, 1, tzinfo=UTC)
JAN = dt.datetime(2027, 1, 1, tzinfo=UTC)


def days_before(before: dt.date, count: int, amount=lambda day: Decimal(10)) -> dict[dt.date, Decimal]:
    return {before - DAY * offset: amount(before - DAY * offset) for offset in range(count, 0, -1)}


def test_a_flat_history_adds_the_median_day_for_each_day_left():
    now = dt.datetime(2026, 12, 4, 12, tzinfo=UTC)
    past = days_before(now.date(), 14)
    outlook = forecast(Decimal(40), Decimal(10), past, DEC, JAN, now)
    # today already spent its median; 27 whole days remain
    assert outlook.amount == 40 + 27 * 10
    assert (outlook.history_days, outlook.weekday_aware) == (14, False)


def test_today_adds_what_its_median_still_exceeds_todays_spend():
    # a daily DAG that runs at 02:00: before its run today adds a median day, after it nothing
    now = dt.datetime(2026, 12, 4, 1, tzinfo=UTC)
    past = days_before(now.date(), 10)
    assert forecast(Decimal(30), Decimal(0), past, DEC, JAN, now).amount == 30 + 10 + 27 * 10
    assert forecast(Decimal(40), Decimal(10), past, DEC, JAN, now).amount == 40 + 27 * 10
    assert forecast(Decimal(34), Decimal(4), past, DEC, JAN, now).amount == 34 + 6 + 27 * 10


def test_three_weeks_of_history_make_it_weekday_aware():
    def mondays_cost_more(day: dt.date) -> Decimal:
        return Decimal(70) if day.weekday() == 0 else Decimal(10)

    now = dt.datetime(2026, 12, 4, 0, 30, tzinfo=UTC)  # a Friday
    # the rest of December: Mondays 7, 14, 21 and 28, and 24 other days
    aware = forecast(Decimal(0), Decimal(0), days_before(now.date(), 28, mondays_cost_more), DEC, JAN, now)
    assert aware.weekday_aware and aware.amount == 4 * 70 + 24 * 10
    # two weeks of history: the median of all days (10), Mondays too
    plain = forecast(Decimal(0), Decimal(0), days_before(now.date(), 14, mondays_cost_more), DEC, JAN, now)
    assert not plain.weekday_aware and plain.amount == 28 * 10


def test_the_last_utc_day_counts_for_its_share_of_a_local_period():
    start, end = period_bounds("monthly", DEC + DAY, tz="America/New_York")  # ends 1 January 05:00 UTC
    now = dt.datetime(2026, 12, 31, 12, tzinfo=UTC)
    past = days_before(now.date(), 10, lambda day: Decimal(24))
    # today (the whole UTC day is in December in New York) and 5 hours of 1 January
    assert forecast(Decimal(100), Decimal(0), past, start, end, now).amount == 100 + 24 + 5


def test_no_forecast_without_a_week_of_history():
    now = dt.datetime(2026, 12, 4, 12, tzinfo=UTC)
    outlook = forecast(Decimal(5), Decimal(0), days_before(now.date(), 6), DEC, JAN, now)
    assert outlook.amount is None
    assert outlook.note == "no forecast yet: it needs 7 days of spend history, the scope has 6"


def test_history_starts_at_the_scopes_first_spend():
    today = dt.date(2026, 12, 4)
    nanos = {today - DAY * 9: 5_000_000_000, today - DAY * 3: 1_000_000_000}
    past = history(nanos, today, 28)
    # days before the first cost are no history; quiet days after it are zero spend
    assert list(past) == [today - DAY * offset for offset in range(9, 0, -1)]
    assert past[today - DAY * 9] == 5 and past[today - DAY * 8] == 0 and past[today - DAY * 3] == 1
    assert history({}, today, 28) == {}
    assert today not in history({today: 1}, today, 28)  # only whole days before today


def test_an_ended_period_forecasts_what_it_spent():
    outlook = forecast(Decimal(7), Decimal(0), {}, DEC, JAN, dt.datetime(2027, 1, 3, tzinfo=UTC))
    assert outlook.amount == 7


def test_forecast_thresholds_wait_for_a_tenth_of_the_period_and_at_most_a_day():
    for period, wait in [
        ("daily", dt.timedelta(hours=2, minutes=24)),
        ("weekly", dt.timedelta(hours=16, minutes=48)),
        ("monthly", dt.timedelta(hours=24)),
        ("quarterly", dt.timedelta(hours=24)),
    ]:
        start, end = period_bounds(period, DEC + DAY * 3)
        assert forecast_judged_from(start, end) - start == wait
    # a 23-hour day in Berlin waits a tenth of 23 hours
    start, end = period_bounds("daily", dt.datetime(2026, 3, 29, 12, tzinfo=UTC), tz="Europe/Berlin")
    assert forecast_judged_from(start, end) - start.astimezone(UTC) == dt.timedelta(hours=2, minutes=18)


BUDGET = """
budgets:
  - name: b
    period: monthly
    amount: "100"
    currency: USD
    thresholds: [{actual: 100%}, {forecast: 100%}]
"""


def test_one_costly_run_in_the_first_hours_does_not_fire_the_forecast(engine):
    (budget,) = parse_budgets(BUDGET, "budgets.yaml")
    # one run in the first hour of an empty scope: no history, no forecast
    keep(engine, cost("d", "t", "first", DEC + dt.timedelta(minutes=30), [line("x", "90")]))
    status = evaluate(engine, budget, DEC + dt.timedelta(hours=1))
    assert status.spent_amount == 90 and status.forecast is None and status.crossed == []
    assert status.forecast_note == "no forecast yet: it needs 7 days of spend history, the scope has 0"


def test_the_forecast_is_judged_from_the_first_day_on(engine):
    (budget,) = parse_budgets(BUDGET, "budgets.yaml")
    for offset in range(1, 21):  # 1 a day through November
        keep(
            engine,
            cost("d", "t", f"n{offset}", DEC - DAY * offset + dt.timedelta(hours=12), [line("x", "1")]),
        )
    keep(engine, cost("d", "t", "big", DEC + dt.timedelta(minutes=30), [line("x", "90")]))
    early = evaluate(engine, budget, DEC + dt.timedelta(hours=1))
    assert early.spent_amount == 90 and early.forecast == 90 + 30 * 1
    assert early.crossed == [] and not early.forecast_judged
    assert early.forecast_note == (
        "forecast thresholds count from 2026-12-02 00:00: 10 % of the period, at most its first day"
    )
    later = evaluate(engine, budget, DEC + DAY)
    assert later.forecast_judged and later.forecast == 90 + 30 * 1
    assert [t.key for t in later.crossed] == ["forecast:100%"]
    assert later.top_contributors == [("d", Decimal(90))]  # what an alert names: the period's


def walked_rest(past, today_spent, start, end, now) -> Decimal:
    """The rest of the period as its definition says: each UTC day walked, weighted by its share."""
    import statistics

    start, end, now = (moment.astimezone(UTC) for moment in (start, end, now))
    aware = len(past) >= 21
    day, rest = max(now.date(), start.date()), Decimal(0)
    while dt.datetime.combine(day, dt.time(0), tzinfo=UTC) < end:
        day_start = dt.datetime.combine(day, dt.time(0), tzinfo=UTC)
        inside = Decimal((min(day_start + DAY, end) - max(day_start, start)).total_seconds())
        values = [v for d, v in past.items() if not aware or d.weekday() == day.weekday()]
        expected = statistics.median(values) * inside / 86400
        rest += max(Decimal(0), expected - today_spent) if day == now.date() else expected
        day += DAY
    return rest


def test_counting_whole_days_per_weekday_equals_walking_every_day():
    weekday_cost = lambda day: Decimal(10 + 7 * day.weekday()) / 3  # noqa: E731  (no round median)
    for period, zone in [("daily", "UTC"), ("weekly", "Asia/Kolkata"), ("monthly", "America/New_York"),
                         ("quarterly", "Europe/Berlin"), ("quarterly", "UTC")]:  # fmt: skip
        for hours in range(0, 24 * 95, 29):
            now = DEC + dt.timedelta(hours=hours, minutes=17)
            start, end = period_bounds(period, now, 0, zone)
            for length in (10, 30):
                past = days_before(now.astimezone(UTC).date(), length, weekday_cost)
                outlook = forecast(Decimal(5), Decimal(2), past, start, end, now)
                expected = walked_rest(past, Decimal(2), start, end, now)
                assert outlook.amount == (Decimal(5) + expected).quantize(Decimal("1e-9")), (
                    period,
                    zone,
                    now,
                )
