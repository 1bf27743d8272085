"""The query layer every face of the ledger reads through (the CLI, the JSON API): grouped sums per
currency, totals, the causes of unpriced usage, where the ledger has data when a period holds none,
and one task try's lines.

Pure SQL over the ledger's indexed columns; money stays exact (integer nano-units -> Decimal)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_cost_provider.ledger.schema import (
    daily_totals,
    daily_unpriced,
    lines,
    reconciliations,
    storage_allocations,
    storage_costs,
    task_run_labels,
    task_runs,
    usage,
)
from airflow_cost_provider.ledger.store import from_nanos

# --by names -> the ledger keys they group on; combinations (`dag,day`) take the union, in order.
# `label:KEY` groups on the value of one cost label (see group_keys).
GROUPINGS: dict[str, tuple[str, ...]] = {
    "dag": ("dag_id",),
    "task": ("dag_id", "task_id"),
    "run": ("dag_id", "run_id"),
    "try": ("dag_id", "task_id", "run_id", "map_index", "try_number"),
    "source": ("source",),
    "day": ("day",),
    "owner": ("owner",),
    "team": ("team",),
    "tag": ("tag",),
    # a dbt node's unique id (model.project.name, seed..., snapshot..., test...), from its usage's
    # `dbt_unique_id` attribute; other lines show as (none)
    "model": ("model",),
}
LABEL_PREFIX = "label:"
# What a try without an owner, team, tag or the label shows (tries recorded before attribution too).
NONE = "(none)"
STORAGE_GROUPINGS: dict[str, tuple[str, ...]] = {
    "resource": ("provider", "resource_id"),
    "service": ("provider", "service"),
    "usage-class": ("usage_class",),
    "day": ("day",),
    "provider": ("provider",),
    # the share of a bucket's cost allocated to a dataset inside it (import-storage's allocation)
    "dataset": ("dataset_namespace", "dataset_name"),
}
DATASET_KEYS = ("dataset_namespace", "dataset_name")


class ReportError(ValueError):
    """A report asked for something that does not exist (a grouping, a period)."""


def group_keys(by: str | Sequence[str], groupings: dict[str, tuple[str, ...]] = GROUPINGS) -> tuple[str, ...]:
    """`task,day` -> ("dag_id", "task_id", "day"); an unknown name is a ReportError."""
    names = [n.strip() for n in by.split(",")] if isinstance(by, str) else list(by)
    labels_allowed = groupings is GROUPINGS
    choices = ", ".join([*groupings, *(["label:KEY"] if labels_allowed else [])])
    keys: list[str] = []
    for name in names:
        if labels_allowed and name.startswith(LABEL_PREFIX):
            label = name[len(LABEL_PREFIX) :].strip()
            if not label:
                raise ReportError(f"grouping {name!r} names no label: use label:KEY, e.g. label:product")
            if f"{LABEL_PREFIX}{label}" not in keys:
                keys.append(f"{LABEL_PREFIX}{label}")
            continue
        if name not in groupings:
            raise ReportError(f"unknown grouping {name!r}: choose from {choices} (or a comma list)")
        keys.extend(key for key in groupings[name] if key not in keys)
    if not keys:
        raise ReportError(f"no grouping given: choose from {choices}")
    return tuple(keys)


@dataclass(frozen=True)
class Total:
    currency: str | None  # None: the usage that has no price, counted apart
    amount: Decimal | None
    lines: int
    unpriced: int
    reconciled: Decimal | None = None  # the reconciled amount of its lines that `reconcile` reached


@dataclass(frozen=True)
class ReportRow:
    keys: dict[str, Any]
    amount: Decimal | None  # None: the group has only unpriced usage
    currency: str | None
    status: str
    lines: int
    unpriced: int
    reconciled: Decimal | None = None  # None: no line of the group is reconciled


@dataclass(frozen=True)
class UnpricedCause:
    source: str
    metric: str
    reason: str
    count: int


@dataclass(frozen=True)
class DataRange:
    """First and last day the ledger has data for (under the report's filters, any period)."""

    first: dt.date
    last: dt.date


@dataclass(frozen=True)
class PrunedDetail:
    """Tries of the report's period whose usage detail `airflow-cost prune` dropped: their costs are
    not in the rows (cost_daily_totals keeps their daily sums)."""

    before: dt.date  # the latest date a prune ran up to
    tries: int


@dataclass
class CostReport:
    keys: tuple[str, ...]
    since: dt.datetime
    until: dt.datetime
    rows: list[ReportRow]
    totals: list[Total]
    unpriced: list[UnpricedCause] = field(default_factory=list)
    omitted_rows: int = 0  # rows past --top, still in the totals
    data_range: DataRange | None = None  # filled when the period holds no data
    pruned: PrunedDetail | None = None  # filled when the period holds tries whose detail was pruned
    reconciled_until: dt.date | None = None  # the last billing day `reconcile` reached, if any


def _day(column: sa.ColumnElement) -> sa.ColumnElement:
    # timestamps are stored as naive UTC: their date is the UTC day on SQLite, PostgreSQL and MySQL
    return sa.func.date(column)


def _task_columns() -> dict[str, sa.ColumnElement]:
    return {
        "dag_id": task_runs.c.dag_id,
        "task_id": task_runs.c.task_id,
        "run_id": task_runs.c.run_id,
        "map_index": task_runs.c.map_index,
        "try_number": task_runs.c.try_number,
        "source": lines.c.source,
        "day": _day(task_runs.c.end_time),
        "owner": _or_none(task_runs.c.owner),
        "team": _or_none(task_runs.c.team),
    }


def _or_none(column: sa.ColumnElement) -> sa.ColumnElement:
    # NULL on the tries, '' in the daily totals: both shown as NONE
    return sa.func.coalesce(sa.func.nullif(column, ""), NONE)


# The keys the daily totals hold: a report grouped by these alone, without a run filter, reads the
# whole UTC days of its period from cost_daily_totals and only the hours at its edges from lines.
TOTALS_KEYS = frozenset({"dag_id", "task_id", "source", "day", "owner", "team"})


def _totals_columns() -> dict[str, sa.ColumnElement]:
    return {
        "dag_id": daily_totals.c.dag_id,
        "task_id": daily_totals.c.task_id,
        "source": daily_totals.c.source,
        "day": daily_totals.c.day,
        "owner": _or_none(daily_totals.c.owner),
        "team": _or_none(daily_totals.c.team),
    }


def _lines_of_tries(dialect: str) -> sa.Join:
    """The lines joined to their tries. SQLite, without statistics (the provider never runs ANALYZE),
    would read every line of the ledger and look its try up by id, whatever the period: comparing
    with `id + 0` keeps it from that lookup, so it reads the tries from an index holding end_time
    and only their lines (ix_cost_lines_task_run_id), in time that follows the period, not the ledger."""
    try_id = task_runs.c.id + 0 if dialect == "sqlite" else task_runs.c.id
    return lines.join(task_runs, lines.c.task_run_id == try_id)


def _grouped_from(keys: tuple[str, ...], dialect: str) -> tuple[sa.FromClause, dict[str, sa.ColumnElement]]:
    """The lines joined to their tries, and to the tags and labels the keys group on (outer joins:
    a try without them is grouped under NONE), with every key's column."""
    columns = _task_columns()
    if dialect == "sqlite":
        # grouped by a bare DAG id, SQLite (without statistics) reads every try of the ledger through
        # the index on (dag_id, end_time) to skip sorting the groups, even for a few hours of a
        # period; an expression of it (the same values) leaves it the end_time range: 0.9 s -> 7 ms
        # for 3 hours of a 4-million-try ledger
        for key in ("dag_id", "task_id", "run_id"):
            columns[key] = sa.func.coalesce(columns[key], "")
    joined = _lines_of_tries(dialect)
    for index, key in enumerate(keys):
        if key == "model":
            joined = joined.join(usage, usage.c.id == lines.c.usage_id)
            columns[key] = sa.func.coalesce(dbt_node_id(), NONE)
        elif key == "tag":
            tags = task_run_labels.alias("tags")
            joined = joined.outerjoin(
                tags, sa.and_(tags.c.task_run_id == task_runs.c.id, tags.c.kind == "tag")
            )
            columns[key] = sa.func.coalesce(tags.c.key, NONE)
        elif key.startswith(LABEL_PREFIX):
            label = task_run_labels.alias(f"label_{index}")
            joined = joined.outerjoin(
                label,
                sa.and_(
                    label.c.task_run_id == task_runs.c.id,
                    label.c.kind == "label",
                    label.c.key == key[len(LABEL_PREFIX) :],
                ),
            )
            columns[key] = sa.func.coalesce(label.c.value, NONE)
    return joined, columns


def dbt_node_id() -> sa.ColumnElement:
    """The dbt node a usage measured (capture/dbt.py), NULL for every other usage."""
    return usage.c.attributes["dbt_unique_id"].as_string()


def _as_date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str) and len(value) == 10:
        return dt.date.fromisoformat(value)
    return value


def _filters(
    dags: Sequence[str],
    tasks: Sequence[str],
    sources: Sequence[str],
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
) -> list[sa.ColumnElement]:
    where = []
    if visible_dags is not None:  # an empty set hides everything
        where.append(task_runs.c.dag_id.in_(sorted(visible_dags)))
    if dags:
        where.append(task_runs.c.dag_id.in_(list(dags)))
    if tasks:
        where.append(task_runs.c.task_id.in_(list(tasks)))
    if runs:
        where.append(task_runs.c.run_id.in_(list(runs)))
    if sources:
        where.append(lines.c.source.in_(list(sources)))
    return where


def _sort(rows: list, keys: tuple[str, ...]) -> list:
    """By cost, descending (unpriced last); a daily series reads in time order, costliest first within a day."""

    def order(row) -> tuple:
        unpriced = row.amount is None
        by_cost = (unpriced, -(row.amount or 0), tuple(str(row.keys[k]) for k in keys), row.currency or "")
        return (str(row.keys["day"]), *by_cost) if "day" in keys else by_cost

    return sorted(rows, key=order)


def _sorted_top(rows: list, keys: tuple[str, ...], top: int | None) -> tuple[list, int]:
    """The `top` costliest rows in report order, and how many were left out."""
    if top is None or len(rows) <= top:
        return _sort(rows, keys), 0
    # a daily series reads in time order, but --top keeps its costliest rows, not its first days
    costliest = _sort(rows, tuple(key for key in keys if key != "day"))[:top] if "day" in keys else rows
    return _sort(costliest, keys)[:top], len(rows) - top


class _Group(NamedTuple):
    """One group's sums in one currency (None: its unpriced lines), before rows are built."""

    keys: tuple
    currency: str | None
    nanos: int | None
    line_count: int
    unpriced_count: int
    estimated_count: int
    reconciled_nanos: int | None  # None: none of its lines is reconciled


def _sums_query(
    keys: tuple[str, ...], dialect: str, where: list[sa.ColumnElement]
) -> tuple[sa.Select, sa.Select | None]:
    """The grouped sums, and the totals' own query when the groups can count a line twice (tags)."""
    grouped, columns = _grouped_from(keys, dialect)
    unpriced = sa.func.sum(sa.case((lines.c.amount_nanos.is_(None), 1), else_=0))
    estimated = sa.func.sum(sa.case((lines.c.status == "estimated", 1), else_=0))
    query = (
        sa.select(
            *(columns[key].label(key) for key in keys),
            lines.c.currency,
            sa.func.sum(lines.c.amount_nanos).label("nanos"),
            sa.func.count().label("line_count"),
            unpriced.label("unpriced_count"),
            estimated.label("estimated_count"),
            sa.func.sum(lines.c.reconciled_nanos).label("reconciled_nanos"),
        )
        .select_from(grouped)
        .where(*where)
        .group_by(*(columns[key] for key in keys), lines.c.currency)
    )
    # the rows count a try once per tag: the totals then need their own query
    return query, _totals_query(dialect, where) if "tag" in keys else None


def _totals_query(dialect: str, where: list[sa.ColumnElement]) -> sa.Select:
    unpriced = sa.func.sum(sa.case((lines.c.amount_nanos.is_(None), 1), else_=0))
    return (
        sa.select(
            lines.c.currency,
            sa.func.sum(lines.c.amount_nanos).label("nanos"),
            sa.func.count().label("line_count"),
            unpriced.label("unpriced_count"),
            sa.func.sum(lines.c.reconciled_nanos).label("reconciled_nanos"),
        )
        .select_from(_lines_of_tries(dialect))
        .where(*where)
        .group_by(lines.c.currency)
    )


def _totals(sums: dict[str | None, list]) -> list[Total]:
    """Per currency, unpriced usage (currency None) last."""
    return [
        Total(
            currency,
            None if currency is None else from_nanos(nanos),
            count,
            unpriced_count,
            from_nanos(reconciled),
        )
        for currency, (nanos, count, unpriced_count, reconciled) in sorted(
            sums.items(), key=lambda t: t[0] or "~"
        )
    ]


def _total_sums(row: Any) -> list:
    """A totals query row as _totals takes it."""
    reconciled = None if row.reconciled_nanos is None else int(row.reconciled_nanos)
    return [int(row.nanos or 0), int(row.line_count), int(row.unpriced_count), reconciled]


def _where(
    since: dt.datetime,
    until: dt.datetime,
    dags: Sequence[str],
    tasks: Sequence[str],
    sources: Sequence[str],
    visible_dags: Collection[str] | None,
    runs: Sequence[str] = (),
) -> list[sa.ColumnElement]:
    return [
        task_runs.c.end_time >= since,
        task_runs.c.end_time < until,
        *_filters(dags, tasks, sources, visible_dags, runs),
    ]


def period_totals(
    engine: Engine,
    since: dt.datetime,
    until: dt.datetime,
    *,
    dags: Sequence[str] = (),
    tasks: Sequence[str] = (),
    sources: Sequence[str] = (),
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
) -> list[Total]:
    """The totals cost_report() gives for [since, until), without its rows: what a period is
    compared against."""
    filters = _Filters(tuple(dags), tuple(tasks), tuple(sources), visible_dags, tuple(runs))
    with engine.connect() as conn:
        read = _read_groups(conn, (), since, until, filters, causes=False)
    return _totals(_group_totals(read.groups))


@dataclass(frozen=True)
class _Filters:
    dags: Sequence[str]
    tasks: Sequence[str]
    sources: Sequence[str]
    visible_dags: Collection[str] | None
    runs: Sequence[str]

    def on_lines(self) -> list[sa.ColumnElement]:
        return _filters(self.dags, self.tasks, self.sources, self.visible_dags, self.runs)

    def on(self, table: sa.Table) -> list[sa.ColumnElement]:
        """The same on cost_daily_totals or cost_daily_unpriced (no run filter: never asked there)."""
        where = []
        if self.visible_dags is not None:
            where.append(table.c.dag_id.in_(sorted(self.visible_dags)))
        if self.dags:
            where.append(table.c.dag_id.in_(list(self.dags)))
        if self.tasks:
            where.append(table.c.task_id.in_(list(self.tasks)))
        if self.sources:
            where.append(table.c.source.in_(list(self.sources)))
        return where


@dataclass
class _Read:
    """A period's groups (and unpriced causes) as read: whole UTC days from the daily totals when
    the keys allow, the rest from lines (`line_ranges`)."""

    groups: list[_Group]
    causes: list[UnpricedCause]
    separate_totals: Sequence[Any] | None
    line_ranges: list[tuple[dt.datetime, dt.datetime]]
    days: tuple[dt.date, dt.date] | None  # [first, end) read from the daily totals


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _split(
    since: dt.datetime, until: dt.datetime
) -> tuple[tuple[dt.date, dt.date] | None, list[tuple[dt.datetime, dt.datetime]]]:
    """[since, until) as whole UTC days [first, end) and the moments before and after them."""
    start, stop = since.astimezone(dt.timezone.utc), until.astimezone(dt.timezone.utc)
    first = start.date() if start == _utc_midnight(start.date()) else start.date() + dt.timedelta(days=1)
    end = stop.date()
    if first >= end:
        return None, [(since, until)] if since < until else []
    edges = [(since, _utc_midnight(first)), (_utc_midnight(end), until)]
    return (first, end), [(lo, hi) for lo, hi in edges if lo < hi]


def _read_groups(
    conn,
    keys: tuple[str, ...],
    since: dt.datetime,
    until: dt.datetime,
    filters: _Filters,
    causes: bool = True,
) -> _Read:
    dialect = conn.dialect.name
    days, line_ranges = None, [(since, until)]
    if set(keys) <= TOTALS_KEYS and not filters.runs:
        days, line_ranges = _split(since, until)
    fetched: list[_Group] = []
    found_causes: dict[tuple[str, str, str], int] = {}
    separate_totals = None
    if days is not None:
        fetched += _totals_groups(conn, keys, days, filters)
        if causes:
            for row in conn.execute(_totals_causes_query(days, filters)):
                cause = (row.source, row.metric, row.reason)
                found_causes[cause] = found_causes.get(cause, 0) + int(row.n)
    for lo, hi in line_ranges:
        where = _where(
            lo, hi, filters.dags, filters.tasks, filters.sources, filters.visible_dags, filters.runs
        )
        query, totals_query = _sums_query(keys, dialect, where)
        fetched += _groups_of(conn.execute(query).all(), keys)
        if totals_query is not None:  # tags: the only range, the lines path
            separate_totals = conn.execute(totals_query).all()
        if causes:
            for row in conn.execute(_causes_query(dialect, where)):
                cause = (row.source, row.metric, row.reason)
                found_causes[cause] = found_causes.get(cause, 0) + int(row.n)
    groups = fetched if days is None and len(line_ranges) <= 1 else _rolled_up(fetched, keys, keys)
    unpriced = [
        UnpricedCause(source, metric, reason, count)
        for (source, metric, reason), count in sorted(
            found_causes.items(), key=lambda item: (-item[1], *item[0])
        )
    ]
    return _Read(groups, unpriced, separate_totals, line_ranges, days)


def _totals_groups(
    conn, keys: tuple[str, ...], days: tuple[dt.date, dt.date], filters: _Filters
) -> list[_Group]:
    """The groups of whole UTC days, as the lines' sums query would give them."""
    columns = _totals_columns()
    query = (
        sa.select(
            *(columns[key].label(key) for key in keys),
            daily_totals.c.currency,
            sa.func.sum(daily_totals.c.estimate_nanos).label("nanos"),
            sa.func.sum(daily_totals.c.lines).label("line_count"),
            sa.func.sum(daily_totals.c.unpriced).label("unpriced_count"),
            sa.func.sum(daily_totals.c.reconciled_lines).label("reconciled_lines"),
            sa.func.sum(daily_totals.c.reconciled_nanos).label("reconciled_nanos"),
        )
        .where(daily_totals.c.day >= days[0], daily_totals.c.day < days[1], *filters.on(daily_totals))
        .group_by(*(columns[key] for key in keys), daily_totals.c.currency)
    )
    width = len(keys)
    at_day = keys.index("day") if "day" in keys else None
    groups = []
    for row in conn.execute(query):
        line_count = int(row.line_count)
        if not line_count:  # what reconcile added in a currency no line of the group has
            continue
        currency = row.currency or None
        reconciled_lines = int(row.reconciled_lines)
        found = tuple(row[:width])
        if at_day is not None:
            found = (*found[:at_day], _as_date(found[at_day]), *found[at_day + 1 :])
        groups.append(
            _Group(
                found,
                currency,
                None if currency is None else int(row.nanos),
                line_count,
                int(row.unpriced_count),
                # a priced line is estimated until reconcile reaches it; an unpriced one never is
                0 if currency is None else line_count - reconciled_lines,
                int(row.reconciled_nanos) if reconciled_lines else None,
            )
        )
    return groups


def _causes_query(dialect: str, where: list[sa.ColumnElement]) -> sa.Select:
    reason = sa.func.coalesce(lines.c.unpriced_reason, "")
    return (
        sa.select(lines.c.source, lines.c.metric, reason.label("reason"), sa.func.count().label("n"))
        .select_from(_lines_of_tries(dialect))
        .where(*where, lines.c.amount_nanos.is_(None))
        .group_by(lines.c.source, lines.c.metric, reason)
    )


def _totals_causes_query(days: tuple[dt.date, dt.date], filters: _Filters) -> sa.Select:
    table = daily_unpriced
    return (
        sa.select(
            table.c.source,
            table.c.metric,
            sa.func.min(table.c.reason).label("reason"),
            sa.func.sum(table.c.lines).label("n"),
        )
        .where(table.c.day >= days[0], table.c.day < days[1], *filters.on(table))
        .group_by(table.c.source, table.c.metric, table.c.reason_key)
    )


def _group_totals(groups: list[_Group]) -> dict[str | None, list]:
    """Per currency: nanos, lines, unpriced lines, reconciled nanos (None: none reconciled)."""
    totals: dict[str | None, list] = {}
    for group in groups:
        total = totals.setdefault(group.currency, [0, 0, 0, None])
        total[0] += group.nanos or 0
        total[1] += group.line_count
        total[2] += group.unpriced_count
        if group.reconciled_nanos is not None:
            total[3] = (total[3] or 0) + group.reconciled_nanos
    return totals


def _groups_of(fetched: Sequence[Any], keys: tuple[str, ...]) -> list[_Group]:
    width = len(keys)
    at_day = keys.index("day") if "day" in keys else None
    groups = []
    for row in fetched:
        found = tuple(row[:width])
        if at_day is not None:  # text on SQLite: a date, as the daily totals give it
            found = (*found[:at_day], _as_date(found[at_day]), *found[at_day + 1 :])
        groups.append(
            _Group(
                found,
                row[width],
                None if row[width + 1] is None else int(row[width + 1]),
                *(int(count) for count in row[width + 2 : width + 5]),
                None if row[width + 5] is None else int(row[width + 5]),
            )
        )
    return groups


def _rolled_up(groups: list[_Group], keys: tuple[str, ...], fine_keys: tuple[str, ...]) -> list[_Group]:
    """The sums of `fine_keys` groups summed again per `keys` (a subset of them): what grouping the
    query by `keys` alone returns, amount for amount (sums of integer nano-units)."""
    if not keys:  # the totals alone: one group per currency
        pick, single = (lambda fine: ()), False
    else:
        pick, single = itemgetter(*(fine_keys.index(key) for key in keys)), len(keys) == 1
    summed: dict[tuple, list] = {}
    for fine, currency, nanos, line_count, unpriced_count, estimated_count, reconciled in groups:
        coarse = (pick(fine),) if single else pick(fine)
        sums = summed.get((coarse, currency))
        if sums is None:
            summed[(coarse, currency)] = [nanos, line_count, unpriced_count, estimated_count, reconciled]
            continue
        if nanos is not None:
            sums[0] = nanos if sums[0] is None else sums[0] + nanos
        sums[1] += line_count
        sums[2] += unpriced_count
        sums[3] += estimated_count
        if reconciled is not None:
            sums[4] = reconciled if sums[4] is None else sums[4] + reconciled
    return [_Group(coarse, currency, *sums) for (coarse, currency), sums in summed.items()]


def _report_of(
    keys: tuple[str, ...],
    groups: list[_Group],
    separate_totals: Sequence[Any] | None,
    since: dt.datetime,
    until: dt.datetime,
    top: int | None,
    unpriced: list[UnpricedCause],
    data_range: DataRange | None,
    pruned: PrunedDetail | None,
    reconciled_until: dt.date | None = None,
) -> CostReport:
    # Unpriced lines have no currency: fold their count into the group's priced rows when it has any.
    unpriced_by_group = {g.keys: g.unpriced_count for g in groups if g.currency is None}
    priced_groups = {g.keys for g in groups if g.currency is not None}
    rows = []
    totals = _group_totals(groups)
    for group in groups:
        if group.currency is None and group.keys in priced_groups:
            continue
        group_unpriced = unpriced_by_group.get(group.keys, 0)
        if group.currency is None:
            status = "unpriced"
        elif group_unpriced:
            status = "partial"
        else:
            status = "estimated" if group.estimated_count else "reconciled"
        rows.append(
            ReportRow(
                keys={k: _as_date(v) if k == "day" else v for k, v in zip(keys, group.keys, strict=True)},
                amount=from_nanos(group.nanos),
                currency=group.currency,
                status=status,
                lines=group.line_count + (group_unpriced if group.currency else 0),
                unpriced=group_unpriced,
                reconciled=from_nanos(group.reconciled_nanos),
            )
        )
    if separate_totals is not None:
        totals = {row.currency: _total_sums(row) for row in separate_totals}
    rows, omitted = _sorted_top(rows, keys, top)
    return CostReport(
        keys=keys,
        since=since,
        until=until,
        rows=rows,
        totals=_totals(totals),
        unpriced=unpriced,
        omitted_rows=omitted,
        data_range=data_range,
        pruned=pruned,
        reconciled_until=reconciled_until,
    )


def cost_report(
    engine: Engine,
    by: str | Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    *,
    dags: Sequence[str] = (),
    tasks: Sequence[str] = (),
    sources: Sequence[str] = (),
    top: int | None = None,
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
) -> CostReport:
    """Task-try costs per group and currency, for the tries that ended in [since, until), of the
    DAGs in `visible_dags` only when given (what a user may read).

    Grouped by tag, a try counts once under each of its DAG's tags: the rows then add up to more than
    the totals, which count every line once."""
    (report,) = cost_reports(
        engine,
        [by],
        since,
        until,
        dags=dags,
        tasks=tasks,
        sources=sources,
        tops=[top],
        visible_dags=visible_dags,
        runs=runs,
    )
    return report


def cost_reports(
    engine: Engine,
    groupings: Sequence[str | Sequence[str]],
    since: dt.datetime,
    until: dt.datetime,
    *,
    dags: Sequence[str] = (),
    tasks: Sequence[str] = (),
    sources: Sequence[str] = (),
    tops: Sequence[int | None] | None = None,
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
    listed_only: tuple[str, str] | None = None,
) -> list[CostReport]:
    """cost_report() for each grouping (with its `top`), from one pass over the period: the sums
    grouped by every key the groupings name, summed again per grouping. Keys the daily totals hold
    (dag, task, source, day, owner, team), without a run filter, read the period's whole UTC days
    from cost_daily_totals and only the hours at its edges from lines; the others read lines. Tags and labels, which
    count a try once per tag, need a grouping of their own (one grouping alone).

    listed_only: (grouping, another): the first's report holds only the rows of the groups the
    other's rows list (e.g. `task,day` for the `top` tasks of `task`: their trends), the rest counted
    in its omitted_rows and still in its totals; summed from those groups' sums alone."""
    all_keys = [group_keys(by) for by in groupings]
    union: tuple[str, ...] = tuple(dict.fromkeys(key for keys in all_keys for key in keys))
    if len(all_keys) > 1 and any(key == "tag" or key.startswith(LABEL_PREFIX) for key in union):
        raise ReportError("tag and label groupings are reported one at a time")
    tops = list(tops) if tops is not None else [None] * len(all_keys)
    filters = _Filters(tuple(dags), tuple(tasks), tuple(sources), visible_dags, tuple(runs))
    with engine.connect() as conn:
        read = _read_groups(conn, union, since, until, filters)
        groups, separate_totals = read.groups, read.separate_totals
        data_range = None if groups else _data_range(conn, read, filters)
        pruned = _pruned_over(conn, read.line_ranges, filters)
        reconciled_until = conn.execute(sa.select(sa.func.max(reconciliations.c.day))).scalar()

    # the groupings without days sum the days up once, then from those far fewer groups
    undated = tuple(key for key in union if key != "day")
    undated_groups = None
    if "day" in union and sum("day" not in keys for keys in all_keys) > 1:
        undated_groups = _rolled_up(groups, undated, union)

    def groups_for(keys: tuple[str, ...]) -> list[_Group]:
        if keys == union:
            return groups
        if undated_groups is not None and "day" not in keys:
            return _rolled_up(undated_groups, keys, undated)
        return _rolled_up(groups, keys, union)

    unpriced = read.causes
    narrowed = None if listed_only is None else [str(by) for by in groupings].index(listed_only[0])

    def report(keys: tuple[str, ...], top: int | None, of_groups: list[_Group]) -> CostReport:
        return _report_of(
            keys,
            of_groups,
            separate_totals,
            since,
            until,
            top,
            unpriced,
            data_range,
            pruned,
            reconciled_until,
        )

    reports = [
        None if index == narrowed else report(keys, top, groups_for(keys))
        for index, (keys, top) in enumerate(zip(all_keys, tops, strict=True))
    ]
    if listed_only is not None and narrowed is not None:
        listing = reports[[str(by) for by in groupings].index(listed_only[1])]
        assert listing is not None
        reports[narrowed] = _listed_only(
            all_keys[narrowed], groups, union, listing, report(all_keys[narrowed], None, [])
        )
    return [found for found in reports if found is not None]


def _listed_only(
    keys: tuple[str, ...],
    groups: list[_Group],
    union: tuple[str, ...],
    listing: CostReport,
    empty: CostReport,
) -> CostReport:
    """The report of `keys` with only the rows of the groups `listing`'s rows name (its keys are a
    subset of `keys`), summed from their fine groups alone; the rows of the others counted in
    omitted_rows, the totals those of every group (as `listing`'s)."""
    named = listing.keys
    listed = {tuple(row.keys[key] for key in named) for row in listing.rows}
    at = [union.index(key) for key in named]
    chosen = [group for group in groups if tuple(group.keys[i] for i in at) in listed]
    shown = _report_of(keys, _rolled_up(chosen, keys, union), None, empty.since, empty.until, None,
                       empty.unpriced, empty.data_range, empty.pruned, empty.reconciled_until)  # fmt: skip
    # every row the full report would have: a group's priced currencies, or one unpriced row
    position = [union.index(key) for key in keys]
    priced: set[tuple] = set()
    unpriced_only: set[tuple] = set()
    for group in groups:
        coarse = tuple(group.keys[i] for i in position)
        (unpriced_only if group.currency is None else priced).add(
            coarse if group.currency is None else (coarse, group.currency)
        )
    every = len(priced) + len(unpriced_only - {coarse for coarse, _ in priced})
    return dataclasses.replace(shown, totals=listing.totals, omitted_rows=every - len(shown.rows))


def _data_range(conn, read: _Read, filters: _Filters) -> DataRange | None:
    """The first and last day the ledger has task costs for under the filters, any period: from the
    daily totals when the report reads them (they keep the days prune took the lines of)."""
    if read.days is not None:
        first, last = conn.execute(
            sa.select(sa.func.min(daily_totals.c.day), sa.func.max(daily_totals.c.day)).where(
                daily_totals.c.lines > 0, *filters.on(daily_totals)
            )
        ).one()
    else:
        first, last = conn.execute(
            sa.select(sa.func.min(task_runs.c.end_time), sa.func.max(task_runs.c.end_time))
            .select_from(_lines_of_tries(conn.dialect.name))
            .where(*filters.on_lines())
        ).one()
    return None if first is None else DataRange(_as_date(first), _as_date(last))


def _pruned_over(
    conn, ranges: list[tuple[dt.datetime, dt.datetime]], filters: _Filters
) -> PrunedDetail | None:
    """The tries of the ranges read from lines whose detail was pruned (the daily totals keep theirs)."""
    found = [
        _pruned_in(conn, lo, hi, filters.dags, filters.tasks, filters.visible_dags, filters.runs)
        for lo, hi in ranges
    ]
    found = [detail for detail in found if detail is not None]
    if not found:
        return None
    return PrunedDetail(found[0].before, sum(detail.tries for detail in found))


def _pruned_in(
    conn,
    since: dt.datetime,
    until: dt.datetime,
    dags: Sequence[str],
    tasks: Sequence[str],
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
) -> PrunedDetail | None:
    """The tries of [since, until) that ended before the latest prune's date and have no usage left."""
    from airflow_cost_provider.ledger.prune import pruned_before

    before = pruned_before(conn)
    if before is None:
        return None
    cutoff = _utc_midnight(before)
    if since >= cutoff:
        return None
    without_detail = ~sa.exists().where(usage.c.task_run_id == task_runs.c.id)
    count = conn.execute(
        sa.select(sa.func.count())
        .select_from(task_runs)
        .where(
            task_runs.c.end_time >= since,
            task_runs.c.end_time < min(until, cutoff),
            without_detail,
            *_filters(dags, tasks, (), visible_dags, runs),
        )
    ).scalar_one()
    return PrunedDetail(before, int(count)) if count else None


# ---------------------------------------------------------------- one task try


@dataclass(frozen=True)
class TryLine:
    source: str
    metric: str
    quantity: str  # exact decimal text, in `unit`
    unit: str
    resource: str | None
    external_id: str | None
    amount: Decimal | None  # None: unpriced, never zero
    currency: str | None
    method: str | None
    status: str
    price_amount: str | None
    price_unit: str | None
    price_ref: str | None
    price_source_url: str | None
    unpriced_reason: str | None
    console_url: str | None = None  # the platform console's page of external_id, when it has one


@dataclass
class TryCost:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str
    status: str
    start_time: dt.datetime
    end_time: dt.datetime
    owner: str | None
    team: str | None
    lines: list[TryLine]


def try_cost(
    engine: Engine, dag_id: str, task_id: str, run_id: str, map_index: int = -1, try_number: int | None = None
) -> TryCost | None:
    """The cost lines of one task try (its last recorded try unless `try_number` is given), with the
    usage each prices; None when the ledger has no such try. Both reads use indexes (the try's unique
    key, then the lines' task_run_id)."""
    where = [
        task_runs.c.dag_id == dag_id,
        task_runs.c.task_id == task_id,
        task_runs.c.run_id == run_id,
        task_runs.c.map_index == map_index,
    ]
    if try_number is not None:
        where.append(task_runs.c.try_number == try_number)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(task_runs).where(*where).order_by(task_runs.c.try_number.desc()).limit(1)
        ).first()
        if found is None:
            return None
        return _tries_with_lines(conn, [found])[0]


def run_tries(engine: Engine, dag_id: str, run_id: str) -> list[TryCost]:
    """Every recorded try of one DAG run, each with its lines, in the order the tries ended (the
    tries by their unique key's index, then their lines by task_run_id)."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(task_runs)
            .where(task_runs.c.dag_id == dag_id, task_runs.c.run_id == run_id)
            .order_by(
                task_runs.c.end_time, task_runs.c.task_id, task_runs.c.map_index, task_runs.c.try_number
            )
        ).all()
        return _tries_with_lines(conn, found) if found else []


def _tries_with_lines(conn, tries: Sequence[Any]) -> list[TryCost]:
    from airflow_cost_provider.console_links import console_url

    by_try: dict[int, list[TryLine]] = {row.id: [] for row in tries}
    ids = list(by_try)
    for start in range(0, len(ids), 500):
        fetched = conn.execute(
            sa.select(
                lines,
                usage.c.quantity,
                usage.c.unit,
                usage.c.resource,
                usage.c.external_id,
                usage.c.attributes,
            )
            .select_from(lines.join(usage, lines.c.usage_id == usage.c.id))
            .where(lines.c.task_run_id.in_(ids[start : start + 500]))
            .order_by(lines.c.id)
        ).all()
        for row in fetched:
            by_try[row.task_run_id].append(
                TryLine(
                    source=row.source,
                    metric=row.metric,
                    quantity=row.quantity,
                    unit=row.unit,
                    resource=row.resource,
                    external_id=row.external_id,
                    amount=from_nanos(row.amount_nanos),
                    currency=row.currency,
                    method=row.method,
                    status=row.status,
                    price_amount=row.price_amount,
                    price_unit=row.price_unit,
                    price_ref=row.price_ref,
                    price_source_url=row.price_source_url,
                    unpriced_reason=row.unpriced_reason,
                    console_url=console_url(row.source, row.external_id, row.resource, row.attributes),
                )
            )
    return [
        TryCost(
            dag_id=found.dag_id,
            task_id=found.task_id,
            run_id=found.run_id,
            map_index=found.map_index,
            try_number=found.try_number,
            state=found.state,
            status=found.status,
            start_time=found.start_time,
            end_time=found.end_time,
            owner=found.owner,
            team=found.team,
            lines=by_try[found.id],
        )
        for found in tries
    ]


# ---------------------------------------------------------------- storage costs


@dataclass(frozen=True)
class StorageReportRow:
    keys: dict[str, Any]
    amount: Decimal
    currency: str
    credits: Decimal | None  # None: by dataset, where credits are within the allocated amounts
    rows: int


@dataclass
class StorageReport:
    keys: tuple[str, ...]
    since: dt.date
    until: dt.date
    rows: list[StorageReportRow]
    totals: list[tuple[str, Decimal, Decimal, int]]  # currency, amount, credits, billing rows
    omitted_rows: int = 0
    data_range: DataRange | None = None


def storage_group_keys(by: str | Sequence[str]) -> tuple[str, ...]:
    """group_keys() of a storage report: `dataset` combines with resource, usage-class, day and
    provider (what an allocation keeps), not with service."""
    keys = group_keys(by, STORAGE_GROUPINGS)
    if "service" in keys and any(key in DATASET_KEYS for key in keys):
        raise ReportError(
            "grouping 'dataset' combines with resource, usage-class, day or provider, not with service"
        )
    return keys


def storage_report(
    engine: Engine,
    by: str | Sequence[str],
    since: dt.date,
    until: dt.date,
    *,
    top: int | None = None,
) -> StorageReport:
    """Imported storage costs per group and currency, for billing days in [since, until). Grouped by
    dataset, the shares of their buckets' costs allocated to datasets (the part of a bucket no
    dataset was given is not in them); their credits are within the amounts, not known apart."""
    keys = storage_group_keys(by)
    by_dataset = any(key in DATASET_KEYS for key in keys)
    table = storage_allocations if by_dataset else storage_costs
    columns = [table.c[key].label(key) for key in keys]
    credits = sa.literal(None) if by_dataset else sa.func.sum(storage_costs.c.credit_nanos)
    query = (
        sa.select(
            *columns,
            table.c.currency,
            sa.func.sum(table.c.amount_nanos).label("nanos"),
            credits.label("credit_nanos"),
            sa.func.count().label("row_count"),
        )
        .where(table.c.day >= since, table.c.day < until)
        .group_by(*(table.c[key] for key in keys), table.c.currency)
    )
    with engine.connect() as conn:
        fetched = conn.execute(query).all()
        data_range = None
        if not fetched:
            first, last = conn.execute(sa.select(sa.func.min(table.c.day), sa.func.max(table.c.day))).one()
            if first is not None:
                data_range = DataRange(_as_date(first), _as_date(last))
    rows = [
        StorageReportRow(
            keys={k: _as_date(v) for k, v in zip(keys, row[: len(keys)], strict=True)},
            amount=from_nanos(row.nanos),
            currency=row.currency,
            credits=None if by_dataset else from_nanos(row.credit_nanos or 0),
            rows=int(row.row_count),
        )
        for row in fetched
    ]
    totals: dict[str, list] = {}
    for row in rows:
        total = totals.setdefault(row.currency, [Decimal(0), None if by_dataset else Decimal(0), 0])
        total[0] += row.amount
        if row.credits is not None:
            total[1] += row.credits
        total[2] += row.rows
    rows, omitted = _sorted_top(rows, keys, top)
    return StorageReport(
        keys=keys,
        since=since,
        until=until,
        rows=rows,
        totals=[(currency, *values) for currency, values in sorted(totals.items())],
        omitted_rows=omitted,
        data_range=data_range,
    )
