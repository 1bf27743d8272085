"""Period bounds: local midnights across daylight-saving changes, week starts, month and quarter ends,
and the split of a period into the UTC days of the ledger's daily totals."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from airflow_cost_provider.budgets.periods import (
    UtcSplit,
    period_bounds,
    period_label,
    previous_bounds,
    show_period,
    utc_split,
)

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(*args, tz=UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


def utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(UTC)


@pytest.mark.parametrize(
    ("period", "moment", "start", "end"),
    [
        ("daily", at(2026, 12, 4, 13, 5), at(2026, 12, 4), at(2026, 12, 5)),
        ("weekly", at(2026, 12, 4, 13, 5), at(2026, 11, 30), at(2026, 12, 7)),  # Friday -> Monday
        ("monthly", at(2026, 12, 31, 23, 59, 59), at(2026, 12, 1), at(2027, 1, 1)),
        ("monthly", at(2028, 2, 29, 12), at(2028, 2, 1), at(2028, 3, 1)),
        ("quarterly", at(2026, 12, 31, 23, 59, 59), at(2026, 10, 1), at(2027, 1, 1)),
        ("quarterly", at(2027, 1, 1), at(2027, 1, 1), at(2027, 4, 1)),
        ("quarterly", at(2026, 6, 30, 12), at(2026, 4, 1), at(2026, 7, 1)),
        ("quarterly", at(2026, 9, 30, 23), at(2026, 7, 1), at(2026, 10, 1)),
    ],
)
def test_utc_periods(period, moment, start, end):
    assert period_bounds(period, moment) == (start, end)


def test_a_period_holds_its_start_and_not_its_end():
    start, end = period_bounds("monthly", at(2026, 12, 1))
    assert start == at(2026, 12, 1)
    assert period_bounds("monthly", end) == (at(2027, 1, 1), at(2027, 2, 1))
    assert period_bounds("monthly", end - dt.timedelta(microseconds=1)) == (start, end)


@pytest.mark.parametrize(
    ("week_start", "first"),
    [(0, 30), (1, 1), (2, 2), (3, 3), (4, 4), (5, 28), (6, 29)],  # Mon 30 Nov ... Sun 29 Nov
)
def test_each_week_start(week_start, first):
    friday = at(2026, 12, 4, 13)
    start, end = period_bounds("weekly", friday, week_start)
    assert start.weekday() == week_start and start <= friday < end
    assert start.day == first and end - start == dt.timedelta(days=7)


def test_a_week_that_starts_today_starts_at_midnight():
    assert period_bounds("weekly", at(2026, 12, 6, 0, 0), week_start=6)[0] == at(2026, 12, 6)


def test_a_local_period_starts_at_local_midnight():
    # 23:30 UTC on 31 December is already 1 January in Berlin: the new quarter there
    start, end = period_bounds("quarterly", at(2026, 12, 31, 23, 30), tz="Europe/Berlin")
    assert (start, end) == (at(2027, 1, 1, tz=BERLIN), at(2027, 4, 1, tz=BERLIN))
    assert utc(start) == at(2026, 12, 31, 23) and utc(end) == at(2027, 3, 31, 22)
    assert start.utcoffset() == dt.timedelta(hours=1) and end.utcoffset() == dt.timedelta(hours=2)
    # and still 31 December in New York
    assert period_bounds("daily", at(2027, 1, 1, 3), tz="America/New_York")[0] == at(
        2026, 12, 31, tz=NEW_YORK
    )


def test_spring_forward_day_has_23_hours_and_fall_back_day_25():
    start, end = period_bounds("daily", at(2026, 3, 29, 12), tz="Europe/Berlin")
    assert utc(start) == at(2026, 3, 28, 23) and utc(end) == at(2026, 3, 29, 22)
    assert utc(end) - utc(start) == dt.timedelta(hours=23)
    start, end = period_bounds("daily", at(2026, 10, 25, 12), tz="Europe/Berlin")
    assert utc(end) - utc(start) == dt.timedelta(hours=25)
    # a week across the change: 7 local days, 167 hours
    start, end = period_bounds("weekly", at(2026, 3, 8, 12), tz="America/New_York", week_start=0)
    assert (start.date(), end.date()) == (dt.date(2026, 3, 2), dt.date(2026, 3, 9))
    start, end = period_bounds("weekly", at(2026, 3, 9, 12), tz="America/New_York", week_start=6)
    assert utc(end) - utc(start) == dt.timedelta(days=7, hours=-1)


def test_the_repeated_hour_belongs_to_one_day():
    # 02:30 happens twice in Berlin on 25 October 2026; both are that day
    first = dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0)
    second = dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)
    assert utc(second) - utc(first) == dt.timedelta(hours=1)
    assert period_bounds("daily", first, tz=BERLIN) == period_bounds("daily", second, tz=BERLIN)


def test_a_day_whose_midnight_does_not_exist_starts_when_the_clocks_jump():
    # Chile moves its clocks from 24:00 to 01:00 on the first Sunday of September 2026
    santiago = ZoneInfo("America/Santiago")
    start, end = period_bounds("daily", at(2026, 9, 6, 15), tz=santiago)
    assert (start.hour, start.minute, start.date()) == (1, 0, dt.date(2026, 9, 6))
    assert utc(start) == at(2026, 9, 6, 4)
    assert utc(end) - utc(start) == dt.timedelta(hours=23)
    # the instant before it belongs to the day before
    assert period_bounds("daily", utc(start) - dt.timedelta(microseconds=1), tz=santiago)[1] == start


def test_naive_moments_are_refused():
    with pytest.raises(ValueError, match="naive datetime"):
        period_bounds("daily", dt.datetime(2026, 12, 4))


def test_previous_period_labels_and_display():
    start, end = previous_bounds("monthly", at(2027, 1, 10), tz="Europe/Berlin")
    assert (start, end) == (at(2026, 12, 1, tz=BERLIN), at(2027, 1, 1, tz=BERLIN))
    assert show_period(start, end) == "2026-12-01..12-31"
    assert show_period(*period_bounds("weekly", at(2026, 12, 30))) == "2026-12-28..2027-01-03"
    assert period_label("monthly", start) == "2026-12"
    assert period_label("quarterly", at(2026, 10, 1)) == "2026-Q4"
    assert period_label("weekly", at(2026, 11, 30)) == "week of 2026-11-30"
    day = period_bounds("daily", at(2026, 12, 4, 5))
    assert show_period(*day) == "2026-12-04" and period_label("daily", day[0]) == "2026-12-04"


def test_utc_split_of_a_utc_period_has_no_edges():
    assert utc_split(at(2026, 12, 1), at(2027, 1, 1)) == UtcSplit(
        dt.date(2026, 12, 1), dt.date(2027, 1, 1), ()
    )


def test_utc_split_of_a_local_period_reads_its_edges_from_lines():
    start, end = period_bounds("monthly", at(2026, 12, 15), tz="Europe/Berlin")
    split = utc_split(start, end)
    assert (split.first_day, split.end_day) == (dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    assert split.edges == (
        (at(2026, 11, 30, 23), at(2026, 12, 1), dt.date(2026, 11, 30)),
        (at(2026, 12, 31), at(2026, 12, 31, 23), dt.date(2026, 12, 31)),
    )
    # a day in New York covers parts of two UTC days and no whole one
    start, end = period_bounds("daily", at(2026, 12, 4, 12), tz="America/New_York")
    split = utc_split(start, end)
    assert split.first_day == split.end_day == dt.date(2026, 12, 5)
    assert split.edges == (
        (at(2026, 12, 4, 5), at(2026, 12, 5), dt.date(2026, 12, 4)),
        (at(2026, 12, 5), at(2026, 12, 5, 5), dt.date(2026, 12, 5)),
    )
    # less than a UTC day, inside one
    assert utc_split(at(2026, 12, 4, 2), at(2026, 12, 4, 3)) == UtcSplit(
        dt.date(2026, 12, 5),
        dt.date(2026, 12, 5),
        ((at(2026, 12, 4, 2), at(2026, 12, 4, 3), dt.date(2026, 12, 4)),),
    )
