"""Which billing days a scheduled import reads.

The data interval of the run is the billing day. Providers keep revising recent days (late usage,
credits, restatements) and close a month a few days into the next, so each run re-imports:

- the `reimport_days` days before its billing day (default 5);
- the whole previous month while its billing day is within the first `previous_month_until_day`
  days of a month (default 10);
- every day since the source's watermark (the last day it had data) when that is older, so a
  paused DAG or data that arrived very late catches up; at most `max_catch_up_days` back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow_cost_provider.billing.scan import DateWindow

DEFAULT_REIMPORT_DAYS = 5
DEFAULT_PREVIOUS_MONTH_UNTIL_DAY = 10
DEFAULT_MAX_CATCH_UP_DAYS = 45


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.date()
    return value


def billing_period(context: dict[str, Any]) -> DateWindow:
    """The billing days of a run: the UTC dates its data interval starts on, up to the date it ends on
    (a daily interval from 06:00 to 06:00 is the day it starts). A run whose interval is empty (a
    trigger timetable such as `@daily` in Airflow 3) imports the day before it."""
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        first, last = _date(start), _date(end)
        return DateWindow(first, max(last, first + dt.timedelta(days=1)))
    moment = (
        context.get("logical_date") or end or context.get("run_after") or dt.datetime.now(dt.timezone.utc)
    )
    day = _date(moment)
    return DateWindow(day - dt.timedelta(days=1), day)


def first_of_previous_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


def import_window(
    period: DateWindow,
    *,
    reimport_days: int = DEFAULT_REIMPORT_DAYS,
    previous_month_until_day: int = DEFAULT_PREVIOUS_MONTH_UNTIL_DAY,
    watermark: dt.date | None = None,
    max_catch_up_days: int = DEFAULT_MAX_CATCH_UP_DAYS,
) -> DateWindow:
    """The days a run with billing days `period` imports (see the module's docstring)."""
    if reimport_days < 0:
        raise ValueError(f"reimport_days must be 0 or more, got {reimport_days}")
    billing_day = period.end - dt.timedelta(days=1)
    start = period.start - dt.timedelta(days=reimport_days)
    if billing_day.day <= previous_month_until_day:
        start = min(start, first_of_previous_month(billing_day))
    if watermark is not None and watermark + dt.timedelta(days=1) < start:
        start = max(watermark + dt.timedelta(days=1), period.start - dt.timedelta(days=max_catch_up_days))
    return DateWindow(start, period.end)


def final_after(
    day: dt.date,
    reimport_days: int = DEFAULT_REIMPORT_DAYS,
    previous_month_until_day: int = DEFAULT_PREVIOUS_MONTH_UNTIL_DAY,
) -> dt.date:
    """The last billing day whose scheduled run still re-imports `day`; after it, `day` is final."""
    last = day + dt.timedelta(days=reimport_days)
    if previous_month_until_day > 0:
        next_month = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        last = max(last, next_month + dt.timedelta(days=previous_month_until_day - 1))
    return last


def period_status(
    period: DateWindow,
    today: dt.date,
    reimport_days: int = DEFAULT_REIMPORT_DAYS,
    previous_month_until_day: int = DEFAULT_PREVIOUS_MONTH_UNTIL_DAY,
    estimated_days: set[dt.date] | None = None,
) -> str:
    """`final` when no scheduled run will import the period's days again (and the source did not
    mark them estimated), else `preliminary`."""
    last_day = period.end - dt.timedelta(days=1)
    if estimated_days and any(day in period for day in estimated_days):
        return "preliminary"
    return (
        "final" if today > final_after(last_day, reimport_days, previous_month_until_day) else "preliminary"
    )
