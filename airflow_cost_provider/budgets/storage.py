"""What imported storage costs add to a budget: the billing days of its period, and a forecast of the
days whose bill has not been imported yet.

Storage costs come from billing data (`airflow-cost import-storage`), one row per bucket or storage
account, SKU and UTC billing day, a day or two after the day. A budget counts them when its scope is
everything (all of them) or `storage: GLOB` (the resources whose id matches). A billing day counts in
the period whose local dates hold that date. The forecast adds, for each day of the period after the
last imported day, the median daily storage cost of the last imported days: a bill that arrives late
is not read as spend that stopped.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_cost_provider.budgets.periods import DAY, last_local_day
from airflow_cost_provider.ledger.schema import storage_costs
from airflow_cost_provider.ledger.store import from_nanos
from airflow_cost_provider.pricing.money import quantize_amount

HISTORY_DAYS = 7  # the imported days the forecast takes its median from
MIN_HISTORY_DAYS = 3  # fewer imported days: no storage forecast
LOOKBACK = dt.timedelta(days=35)  # how far back imported days are looked for


@dataclass(frozen=True)
class StorageRequest:
    glob: str  # resource ids, "*" for all
    first: dt.date  # the period's first local date
    last: dt.date  # its last local date
    currency: str  # the budget's, for the forecast
    today: dt.date  # UTC
    open: bool  # whether the period is still running (a forecast is wanted)


@dataclass
class StorageSpend:
    spent: dict[str, int] = field(default_factory=dict)  # nanos per currency, billing days in the period
    through: dt.date | None = None  # the last billing day imported for the scope
    rest: Decimal | None = None  # the expected cost of the period's days not imported yet
    history_days: int = 0
    note: str | None = None  # why there is no storage forecast


def like_pattern(glob: str) -> str:
    r"""The SQL LIKE pattern (escape \) of a glob: * any text, ? one character."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def statement(glob: str, lo: str = "lo", hi: str = "hi", pattern: str | None = None) -> sa.Select:
    """The imported storage costs of the resources `glob` matches per billing day and currency, for
    days in [:lo, :hi] (the names of its two parameters); with `pattern`, the LIKE pattern of a glob
    other than "*" is that parameter (like_pattern()) instead of a value in the statement."""
    day = storage_costs.c.day
    query = (
        sa.select(day, storage_costs.c.currency, sa.func.sum(storage_costs.c.amount_nanos).label("nanos"))
        .where(day >= sa.bindparam(lo), day <= sa.bindparam(hi))
        .group_by(day, storage_costs.c.currency)
    )
    if glob != "*":
        matched = like_pattern(glob) if pattern is None else sa.bindparam(pattern)
        query = query.where(storage_costs.c.resource_id.like(matched, escape="\\"))
    return query


@dataclass(frozen=True)
class Window:
    """What the requests of one glob read: billing days [lo, hi]."""

    glob: str
    lo: dt.date
    hi: dt.date
    indexes: tuple[int, ...]  # the requests it answers


def windows(requests: list[StorageRequest]) -> list[Window]:
    """One window per glob (the budgets of a task try share "*")."""
    by_glob: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        by_glob.setdefault(request.glob, []).append(index)
    return [
        Window(
            glob,
            min(min(requests[i].first, requests[i].today - LOOKBACK) for i in indexes),
            max(max(requests[i].last, requests[i].today) for i in indexes),
            tuple(indexes),
        )
        for glob, indexes in by_glob.items()
    ]


Days = dict[dt.date, dict[str, int]]


def add_row(days: Days, day, currency: str, nanos) -> None:
    """One row of `statement()` into a window's days."""
    day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
    days.setdefault(day, {})[currency] = int(nanos or 0)


def spends(requests: list[StorageRequest], found: list[Window], days: list[Days]) -> list[StorageSpend]:
    """Each request's StorageSpend from the days its window read."""
    spent = [StorageSpend() for _ in requests]
    for window, window_days in zip(found, days, strict=True):
        for index in window.indexes:
            spent[index] = _spend(requests[index], window_days)
    return spent


def storage_spend(conn: Connection, requests: list[StorageRequest]) -> list[StorageSpend]:
    """For each request, the storage spend of its period and its forecast: one query per glob."""
    found = windows(requests)
    days: list[Days] = []
    for window in found:
        days.append({})
        for row in conn.execute(statement(window.glob), {"lo": window.lo, "hi": window.hi}):
            add_row(days[-1], row.day, row.currency, row.nanos)
    return spends(requests, found, days)


def _spend(request: StorageRequest, days: dict[dt.date, dict[str, int]]) -> StorageSpend:
    spend = StorageSpend()
    imported = sorted(day for day in days if day <= request.today)
    for day, by_currency in days.items():
        if request.first <= day <= request.last:
            for currency, nanos in by_currency.items():
                spend.spent[currency] = spend.spent.get(currency, 0) + nanos
    if not imported:
        spend.note = "no storage costs imported in the last 35 days"
        return spend
    spend.through = imported[-1]
    recent = [
        from_nanos(days[day].get(request.currency, 0)) or Decimal(0) for day in imported[-HISTORY_DAYS:]
    ]
    spend.history_days = len(recent)
    if not request.open:
        return spend
    if len(recent) < MIN_HISTORY_DAYS:
        spend.note = (
            f"no storage forecast yet: it needs {MIN_HISTORY_DAYS} imported days, there are {len(recent)}"
        )
        return spend
    waiting = (request.last - max(spend.through, request.first - DAY)).days
    spend.rest = quantize_amount(statistics.median(recent) * max(0, waiting))
    return spend


def request_for(
    glob: str, start: dt.datetime, end: dt.datetime, currency: str, now: dt.datetime
) -> StorageRequest:
    return StorageRequest(
        glob=glob,
        first=start.date(),
        last=last_local_day(end),
        currency=currency,
        today=now.astimezone(dt.timezone.utc).date(),
        open=end > now,
    )


def top_resources(
    conn: Connection, glob: str, start: dt.datetime, end: dt.datetime, currency: str, limit: int
) -> list[tuple[str, Decimal]]:
    """The costliest storage resources of the period, named `storage <resource id>`."""
    total = sa.func.sum(storage_costs.c.amount_nanos)
    query = (
        sa.select(storage_costs.c.resource_id, total.label("nanos"))
        .where(
            storage_costs.c.day >= start.date(),
            storage_costs.c.day <= last_local_day(end),
            storage_costs.c.currency == currency,
        )
        .group_by(storage_costs.c.resource_id)
        .having(total > 0)
        .order_by(total.desc(), storage_costs.c.resource_id)
        .limit(limit)
    )
    if glob != "*":
        query = query.where(storage_costs.c.resource_id.like(like_pattern(glob), escape="\\"))
    return [
        (f"storage {row.resource_id or '(no resource)'}", from_nanos(int(row.nanos)) or Decimal(0))
        for row in conn.execute(query)
    ]
