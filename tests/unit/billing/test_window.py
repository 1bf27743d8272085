"""Which billing days a scheduled import reads, and when they are final."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from airflow_cost_provider.billing import window
from airflow_cost_provider.billing.scan import DateWindow

D = dt.date


def test_the_data_interval_is_the_billing_day():
    context = {
        "data_interval_start": pendulum.datetime(2026, 3, 14, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 3, 15, tz="UTC"),
    }
    assert window.billing_period(context) == DateWindow(D(2026, 3, 14), D(2026, 3, 15))


def test_a_daily_interval_that_starts_in_the_morning_is_the_day_it_starts():
    context = {
        "data_interval_start": pendulum.datetime(2026, 3, 14, 6, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 3, 15, 6, tz="UTC"),
    }
    assert window.billing_period(context) == DateWindow(D(2026, 3, 14), D(2026, 3, 15))


def test_a_weekly_interval_is_seven_billing_days():
    context = {
        "data_interval_start": pendulum.datetime(2026, 3, 9, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 3, 16, tz="UTC"),
    }
    assert window.billing_period(context).days() == [D(2026, 3, 9) + dt.timedelta(days=n) for n in range(7)]


def test_an_empty_interval_imports_the_day_before_the_run():
    moment = pendulum.datetime(2026, 3, 15, tz="UTC")
    context = {"data_interval_start": moment, "data_interval_end": moment, "logical_date": moment}
    assert window.billing_period(context) == DateWindow(D(2026, 3, 14), D(2026, 3, 15))


def test_the_trailing_days_are_read_again():
    period = DateWindow(D(2026, 3, 20), D(2026, 3, 21))
    assert window.import_window(period) == DateWindow(D(2026, 3, 15), D(2026, 3, 21))
    assert window.import_window(period, reimport_days=0) == period


@pytest.mark.parametrize(
    ("billing_day", "start"),
    [
        (D(2026, 3, 10), D(2026, 2, 1)),  # until the 10th the previous month is read again
        (D(2026, 3, 1), D(2026, 2, 1)),
        (D(2026, 3, 11), D(2026, 3, 6)),  # from the 11th only the trailing days
        (D(2026, 1, 4), D(2025, 12, 1)),  # across a year
    ],
)
def test_the_previous_month_until_the_tenth(billing_day, start):
    period = DateWindow(billing_day, billing_day + dt.timedelta(days=1))
    assert window.import_window(period).start == start


def test_a_run_after_a_gap_catches_up_from_the_watermark_but_not_without_bound():
    period = DateWindow(D(2026, 3, 20), D(2026, 3, 21))
    assert window.import_window(period, watermark=D(2026, 3, 2)).start == D(2026, 3, 3)
    assert window.import_window(period, watermark=D(2025, 6, 1), max_catch_up_days=30).start == D(2026, 2, 18)
    # a recent watermark never shortens the window
    assert window.import_window(period, watermark=D(2026, 3, 19)).start == D(2026, 3, 15)


def test_days_are_preliminary_while_a_scheduled_run_reads_them_again():
    day = DateWindow(D(2026, 3, 20), D(2026, 3, 21))
    assert window.final_after(D(2026, 3, 20)) == D(2026, 4, 10)
    assert window.period_status(day, today=D(2026, 3, 21)) == "preliminary"
    assert window.period_status(day, today=D(2026, 4, 10)) == "preliminary"
    assert window.period_status(day, today=D(2026, 4, 11)) == "final"
    # the source itself can say it is not final (Cost Explorer's Estimated flag)
    assert window.period_status(day, today=D(2026, 6, 1), estimated_days={D(2026, 3, 20)}) == "preliminary"
