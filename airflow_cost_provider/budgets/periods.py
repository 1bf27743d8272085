"""When a budget period starts and ends, in the budget's time zone, and how it splits into the UTC
days the ledger's daily totals are kept by.

A period starts at the first instant of its first local day: midnight, or the end of a daylight-saving
gap that skips midnight (a few zones move their clocks at 00:00). Periods are half-open [start, end).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)


def _zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def local_midnight(day: dt.date, tz: str | dt.tzinfo) -> dt.datetime:
    """The first instant of a local date. fold=0 takes, in a gap, the offset before the change, which
    lands on the gap's end; at a repeated midnight, the first of the two."""
    zone = _zone(tz)
    naive = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    return naive.astimezone(UTC).astimezone(zone)


def first_local_day(period: str, day: dt.date, week_start: int = 0) -> dt.date:
    """The first local date of the period holding `day`."""
    if period == "daily":
        return day
    if period == "weekly":
        return day - dt.timedelta(days=(day.weekday() - week_start) % 7)
    if period == "monthly":
        return day.replace(day=1)
    if period == "quarterly":
        return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    raise ValueError(f"unknown period {period!r}")


def _after(period: str, first: dt.date) -> dt.date:
    """The first local date of the next period."""
    if period == "daily":
        return first + DAY
    if period == "weekly":
        return first + dt.timedelta(days=7)
    months = 1 if period == "monthly" else 3
    month = first.month - 1 + months
    return dt.date(first.year + month // 12, month % 12 + 1, 1)


def period_bounds(
    period: str, at: dt.datetime, week_start: int = 0, tz: str | dt.tzinfo = "UTC"
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the daily, weekly, monthly or quarterly period holding the aware moment `at`,
    as aware datetimes in `tz`. week_start: 0 = Monday ... 6 = Sunday (weekly periods only)."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: a period needs an aware moment")
    zone = _zone(tz)
    first = first_local_day(period, at.astimezone(zone).date(), week_start)
    return local_midnight(first, zone), local_midnight(_after(period, first), zone)


def previous_bounds(
    period: str, at: dt.datetime, week_start: int = 0, tz: str | dt.tzinfo = "UTC"
) -> tuple[dt.datetime, dt.datetime]:
    """The period before the one holding `at`."""
    start, _ = period_bounds(period, at, week_start, tz)
    return period_bounds(period, start - dt.timedelta(microseconds=1), week_start, tz)


def last_local_day(end: dt.datetime) -> dt.date:
    """The last local date inside a period ending (exclusively) at `end`."""
    return end.date() - DAY


def show_period(start: dt.datetime, end: dt.datetime) -> str:
    """`2026-12-01..12-31` (both days included; the year again only when it changes), or one day."""
    last = last_local_day(end)
    if last == start.date():
        return str(start.date())
    return f"{start.date()}..{last:%m-%d}" if last.year == start.year else f"{start.date()}..{last}"


def period_label(period: str, start: dt.datetime) -> str:
    """A short name of the period: 2026-12-04, week of 2026-11-30, 2026-12, 2026-Q4."""
    day = start.date()
    if period == "daily":
        return str(day)
    if period == "weekly":
        return f"week of {day}"
    if period == "monthly":
        return f"{day:%Y-%m}"
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class UtcSplit:
    """A period as the ledger's daily totals see it: the whole UTC days inside it, [first_day,
    end_day), and the parts of UTC days at its edges (a period in another zone than UTC starts and ends
    inside a UTC day), each (start, end, the UTC day holding it)."""

    first_day: dt.date
    end_day: dt.date  # exclusive; equal to first_day when no whole UTC day is inside
    edges: tuple[tuple[dt.datetime, dt.datetime, dt.date], ...]


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=UTC)


def utc_split(start: dt.datetime, end: dt.datetime) -> UtcSplit:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    ceil_day = start.date() if start == utc_midnight(start.date()) else start.date() + DAY
    floor_day = end.date()
    if ceil_day > floor_day:  # no UTC midnight inside: one piece of one UTC day
        return UtcSplit(ceil_day, ceil_day, ((start, end, start.date()),))
    edges = []
    if start < utc_midnight(ceil_day):
        edges.append((start, utc_midnight(ceil_day), start.date()))
    if utc_midnight(floor_day) < end:
        edges.append((utc_midnight(floor_day), end, floor_day))
    return UtcSplit(ceil_day, floor_day, tuple(edges))
