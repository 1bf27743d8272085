"""What a budget's scope spent in its period, what it will have spent at the end, and what stands out.

Spend is read from cost_daily_totals (one row per UTC day, DAG, task, owner, team, source and
currency, kept exact by the ledger's writer) over the days of the period and of the forecast
history. A period in another time zone than UTC starts and ends inside a UTC day: those parts are
read from the task tries' lines (indexed by end time). A tag or label scope (alone or with a source)
reads cost_daily_label_totals, kept the same way per tag or label; one that adds a DAG, task, owner
or team reads the tries joined to their labels and lines. What can no longer change is read once
and kept (settled.py); an evaluation reads the rest, for all the budgets of a task try in one query
(evaluate_all) with the imported storage costs and the run anomaly rule's latest runs, on a
connection without a transaction (it only reads).

Rules (the README's Budgets section says the same):
- forecast = spent + for each UTC day left in the period, the median daily spend of the last
  `forecast_days` complete UTC days (the median of the same weekday once that history holds at least
  three of each weekday) times the share of that day inside the period; today counts only what the
  median day still adds to what today already spent. No forecast without 7 days of history.
- forecast thresholds are judged only once 10 % of the period has passed (at most the first 24 hours):
  one costly run in the first hours never fires a forecast alert; actual thresholds always fire.
- a run anomaly: a DAG run (in the scope) costing more than k x the median of its DAG's last N runs,
  judged with at least 3 earlier runs and a median above zero.
- a day anomaly: a UTC day's spend above median + m x MAD of the last N days (MAD at least 5 % of the
  median), judged with at least 7 days of history and a median above zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import statistics
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_cost_provider import __version__, conf
from airflow_cost_provider.budgets import settled, storage
from airflow_cost_provider.budgets.model import Budget, Scope, Threshold
from airflow_cost_provider.budgets.periods import DAY, UTC, utc_midnight, utc_split
from airflow_cost_provider.cache_file import write_json
from airflow_cost_provider.ledger.schema import (
    budget_settled,
    daily_label_totals,
    daily_totals,
    lines,
    storage_costs,
    task_run_labels,
    task_runs,
)
from airflow_cost_provider.ledger.store import from_nanos, read_connection
from airflow_cost_provider.pricing.money import money_text, quantize_amount

log = logging.getLogger("airflow_cost_provider")

MIN_HISTORY_DAYS = 7  # fewer complete days of history: no forecast, no day anomaly
WEEKDAY_HISTORY_DAYS = 21  # three of each weekday: enough for a median per weekday
FORECAST_AFTER_SHARE = Decimal("0.1")  # forecast thresholds wait for 10 % of the period...
FORECAST_AFTER_MAX = dt.timedelta(hours=24)  # ...but never more than a day
MIN_EARLIER_RUNS = 3
MAD_FLOOR_SHARE = Decimal("0.05")  # a flat history must not alert on a cent above its median
RECENT_RUNS = dt.timedelta(days=2)  # the scheduled evaluation judges the runs of the last two days
MAX_RECENT_RUNS = 500
TRIES_PER_RUN = 10  # first guess of a DAG's tries per run; a DAG with more is read again
TOP_CONTRIBUTORS = 3
ANOMALY_KEY_MAX = 100  # the alerts table's threshold column
# one instance of each type for every statement: SQLAlchemy works a type's cache key out once per
# instance, and each new batch shape (a new task process has only those) would work it out again
_INT, _TEXT, _BIGINT = sa.Integer(), sa.String(), sa.BigInteger()


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Anomaly:
    kind: str  # run | day
    threshold: Threshold
    subject: str  # "dag_id/run_id" or the UTC day "YYYY-MM-DD"
    amount: Decimal  # the run's or day's spend
    currency: str
    median: Decimal
    limit: Decimal  # the spend above which it is an anomaly
    dag_id: str | None = None
    run_id: str | None = None
    day: dt.date | None = None

    @property
    def key(self) -> str:
        """The alert's threshold key: anomaly:run:<dag_id>/<run_id> or anomaly:day:<YYYY-MM-DD>."""
        return _fit(f"anomaly:{self.kind}:{self.subject}", ANOMALY_KEY_MAX)

    def describe(self) -> str:
        if self.kind == "run":
            return (
                f"run {self.subject} cost {money_text(self.amount)} {self.currency}, more than "
                f"{self.threshold.run_cost_vs_median:f} x the median {money_text(self.median)} of its DAG's "
                f"last {self.threshold.last_runs} runs"
            )
        return (
            f"UTC day {self.subject} spent {money_text(self.amount)} {self.currency}, above "
            f"{money_text(self.limit)} (median {money_text(self.median)} + {self.threshold.daily_mad:f} x MAD "
            f"of the last {self.threshold.last_days} days)"
        )


@dataclass(frozen=True)
class Trigger:
    """One thing to alert on: a crossed threshold or an anomaly, with its alert key."""

    key: str
    kind: str  # actual | forecast | anomaly
    threshold: Threshold
    message: str
    anomaly: Anomaly | None = None


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    period_start: dt.datetime  # in the budget's time zone
    period_end: dt.datetime  # exclusive
    spent: dict[str, Decimal]  # per currency; the budget's currency always present
    forecast: Decimal | None  # in the budget's currency; None without enough history
    percent: Decimal | None  # of the amount spent, rounded down to 0.1
    crossed: list[Threshold]
    top_contributors: list[tuple[str, Decimal]]  # DAGs, or tasks when the scope is one DAG
    anomalies: list[Anomaly]
    evaluated_at: dt.datetime
    unpriced: int = 0  # lines in the period without a price: not counted, never zero
    storage_spent: Decimal | None = None  # imported storage costs within spent (None: not counted)
    storage_through: dt.date | None = None  # the last billing day of storage imported for the scope
    forecast_judged: bool = False  # whether forecast thresholds could fire now
    forecast_note: str | None = None  # why there is no forecast, or why it is not judged yet
    history_days: int = 0
    weekday_aware: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def spent_amount(self) -> Decimal:
        return self.spent.get(self.budget.currency, Decimal(0))

    @property
    def other_currencies(self) -> dict[str, Decimal]:
        """Spend in currencies other than the budget's: shown, never converted or counted."""
        return {c: a for c, a in self.spent.items() if c != self.budget.currency and a}

    @property
    def complete(self) -> bool:
        return self.period_end <= self.evaluated_at

    @property
    def triggers(self) -> list[Trigger]:
        budget = self.budget
        found = []
        for threshold in self.crossed:
            limit = threshold.limit(budget.amount) or Decimal(0)
            value = self.spent_amount if threshold.kind == "actual" else self.forecast or Decimal(0)
            verb = "spent" if threshold.kind == "actual" else "forecast"
            found.append(
                Trigger(
                    threshold.key,
                    threshold.kind,
                    threshold,
                    f"{verb} {money_text(value)} {budget.currency} reached {threshold.describe()} "
                    f"({money_text(limit)} of {money_text(budget.amount)} {budget.currency})",
                )
            )
        for anomaly in self.anomalies:
            found.append(Trigger(anomaly.key, "anomaly", anomaly.threshold, anomaly.describe(), anomaly))
        return found


def _fit(text: str, length: int) -> str:
    if len(text) <= length:
        return text
    import hashlib

    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: length - 17]}~{digest}"


# ---------------------------------------------------------------- scope filters


def _uses_labels(scope: Scope) -> bool:
    return scope.tag is not None or scope.label is not None


def _on_label_totals(scope: Scope) -> bool:
    """A tag or a label, alone or with a source: its whole days are summed in the label totals."""
    return len(_label_rows(scope)) == 1 and all(
        getattr(scope, key) is None for key in ("dag_id", "task_id", "owner", "team")
    )


def _on_lines(scope: Scope) -> bool:
    """A scope whose whole days only the tries' lines hold: a tag or label with a DAG, task, owner or
    team, or a tag and a label."""
    return _uses_labels(scope) and not _on_label_totals(scope)


def _totals_of(scope: Scope) -> sa.Table:
    """The table of daily sums that holds the scope's whole days."""
    return daily_label_totals if _uses_labels(scope) else daily_totals


def _totals_filters(scope: Scope) -> list[sa.ColumnElement]:
    if not _uses_labels(scope):
        return [daily_totals.c[key] == value for key, value in scope.task_items()]
    (label,) = _label_rows(scope)
    where = _label_is(daily_label_totals, *label)
    if scope.source is not None:
        where.append(daily_label_totals.c.source == scope.source)
    return where


def _label_is(table: sa.Table, kind: str, key: Any, value: Any) -> list[sa.ColumnElement]:
    """The kind, key and value columns of `table` (the labels, the label totals) match a tag or label."""
    return [
        # the kind and a tag's empty value are constants of the statement, not parameters
        table.c.kind == sa.literal_column(f"'{kind}'", _TEXT),
        table.c.key == key,
        table.c.value == (value if kind == "label" else sa.literal_column("''", _TEXT)),
    ]


def _tries_filters(scope: Scope) -> list[sa.ColumnElement]:
    """Filters on task_runs (joined to lines for a source scope)."""
    where: list[sa.ColumnElement] = [
        task_runs.c[key] == getattr(scope, key)
        for key in ("dag_id", "task_id", "team", "owner")
        if getattr(scope, key) is not None
    ]
    if scope.source is not None:
        where.append(lines.c.source == scope.source)
    for label in _label_rows(scope):
        where.append(
            sa.exists().where(
                task_run_labels.c.task_run_id == task_runs.c.id, *_label_is(task_run_labels, *label)
            )
        )
    return where


def _label_rows(scope: Scope) -> list[tuple[str, str, str]]:
    rows = []
    if scope.tag is not None:
        rows.append(("tag", scope.tag, ""))
    if scope.label is not None:
        rows.append(("label", *scope.label))
    return rows


_JOINED = lines.join(task_runs, lines.c.task_run_id == task_runs.c.id)
_UNPRICED_LINE = sa.func.sum(
    sa.case(
        (lines.c.amount_nanos.is_(None), sa.literal_column("1", _INT)), else_=sa.literal_column("0", _INT)
    )
)


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value


# ---------------------------------------------------------------- spend per day


@dataclass
class _Spend:
    """What the period and the days before it spent."""

    spent: dict[str, int] = field(default_factory=dict)  # nanos per currency in the period
    unpriced: int = 0
    days: dict[dt.date, int] = field(default_factory=dict)  # whole UTC days, budget currency
    today_in_period: int = 0  # budget currency, today's part inside the period

    def add_day(self, day: dt.date, by_currency: dict[str, list[int]], currency: str, today: dt.date) -> None:
        """Count one day's (or part of a day's) sums in the period."""
        for name, (nanos, unpriced) in by_currency.items():
            self.unpriced += unpriced
            if name:
                self.spent[name] = self.spent.get(name, 0) + nanos
                if name == currency and day == today:
                    self.today_in_period += nanos

    def add(self, other: _Spend) -> None:
        for name, nanos in other.spent.items():
            self.spent[name] = self.spent.get(name, 0) + nanos
        self.unpriced += other.unpriced
        self.days.update(other.days)
        self.today_in_period += other.today_in_period

    def copy(self) -> _Spend:
        return _Spend(dict(self.spent), self.unpriced, dict(self.days), self.today_in_period)


# the columns every part of a batch shares, built once: a new task process builds each batch anew
_DAY_PART = sa.literal_column("-1", _INT).label("part")
_LINES_DAY = sa.func.date(task_runs.c.end_time)  # stored as naive UTC: its date is the UTC day
_LINES_COLUMNS = (
    lines.c.currency,
    sa.func.sum(lines.c.amount_nanos).label("nanos"),
    _UNPRICED_LINE.label("unpriced"),
)
_TOTALS_COLUMNS = {
    table: (
        _DAY_PART,
        sa.cast(table.c.day, _TEXT).label("day"),
        table.c.currency,
        sa.func.sum(table.c.amount_nanos).label("nanos"),
        sa.func.sum(table.c.unpriced).label("unpriced"),
    )
    for table in (daily_totals, daily_label_totals)
}
_LINES_DAY_COLUMNS = (_DAY_PART, sa.cast(_LINES_DAY, _TEXT).label("day"), *_LINES_COLUMNS)
_NO_DAY = sa.cast(sa.null(), _TEXT).label("day")


def _sums_parts(scope: Scope, day_ranges: int, edges: int, tag: int | str) -> tuple[sa.Select, ...]:
    """The selects summing, per currency, `day_ranges` ranges of whole UTC days (per day) and `edges`
    parts of days (each whole) of `scope`, each row led by `tag` (which request of a batch it
    answers) and its part (-1: a day, else the edge's index). Parameters b<tag>_d<i>_lo/_hi (dates;
    moments on the lines path) and b<tag>_e<i>_lo/_hi (moments)."""
    request = sa.literal_column(str(tag), _INT).label("request")
    parts = []
    for index in range(day_ranges):
        lo, hi = sa.bindparam(f"b{tag}_d{index}_lo"), sa.bindparam(f"b{tag}_d{index}_hi")
        if _on_lines(scope):  # a tag or label with other keys is in no daily sums
            parts.append(
                sa.select(request, *_LINES_DAY_COLUMNS)  # the day as text, as on the totals path
                .select_from(_JOINED)
                .where(task_runs.c.end_time >= lo, task_runs.c.end_time < hi, *_tries_filters(scope))
                .group_by(_LINES_DAY, lines.c.currency)
            )
        else:
            totals = _totals_of(scope)
            parts.append(
                sa.select(request, *_TOTALS_COLUMNS[totals])
                .where(totals.c.day >= lo, totals.c.day < hi, *_totals_filters(scope))
                .group_by(totals.c.day, totals.c.currency)
            )
    for index in range(edges):
        lo, hi = sa.bindparam(f"b{tag}_e{index}_lo"), sa.bindparam(f"b{tag}_e{index}_hi")
        parts.append(
            sa.select(request, sa.literal_column(str(index), _INT).label("part"), _NO_DAY, *_LINES_COLUMNS)
            .select_from(_JOINED)
            .where(task_runs.c.end_time >= lo, task_runs.c.end_time < hi, *_tries_filters(scope))
            .group_by(lines.c.currency)
        )
    return tuple(parts)


STORAGE_PART = -2  # the rows of imported storage costs in the batched statement


def _storage_part(every: bool) -> sa.Select:
    """storage.statement() of all resources (`every`) or of a glob's pattern (parameter
    s<n>_pattern) in the batched statement's columns, led by -1 - its window's number n."""
    glob = "*" if every else "?"  # any glob but "*": its LIKE pattern is the parameter
    inner = storage.statement(
        glob, f"s{_NUMBER}_lo", f"s{_NUMBER}_hi", pattern=f"s{_NUMBER}_pattern"
    ).subquery()
    return sa.select(
        sa.literal_column(_REQUEST, _INT).label("request"),
        sa.literal_column(str(STORAGE_PART), _INT).label("part"),
        sa.cast(inner.c.day, _TEXT).label("day"),
        inner.c.currency,
        inner.c.nanos,
        sa.literal_column("0", _INT).label("unpriced"),
    )


RUN_PART = -3  # the rows of the run rule's latest runs in the batched statement


def _runs_part(scope: Scope) -> sa.Select:
    """_latest_runs_part() of a scope of bound values (_bound_scope, prefix r<n>_, the currency
    r<n>_currency) in the batched statement's columns, led by -1 - its number n: the run id as
    `day`, its first start as `currency` (text), its tries as `unpriced`."""
    currency = sa.bindparam(f"r{_NUMBER}_currency")
    inner = _latest_runs_part.__wrapped__(scope, currency, _NUMBER, "r").subquery()
    return sa.select(
        sa.literal_column(_REQUEST, _INT).label("request"),
        sa.literal_column(str(RUN_PART), _INT).label("part"),
        inner.c.run_id.label("day"),
        sa.cast(inner.c.first_start, _TEXT).label("currency"),
        inner.c.nanos,
        inner.c.tries.label("unpriced"),
    )


LAST_END_PART = -4  # the row of the latest end of a try in the ledger, in the batched statement

# the latest end of a try (an index's last entry): whether the parts left for later can hold a try
_LAST_END = sa.select(
    sa.literal_column("0", _INT).label("request"),
    sa.literal_column(str(LAST_END_PART), _INT).label("part"),
    sa.cast(sa.func.max(task_runs.c.end_time), _TEXT).label("day"),
    sa.cast(sa.null(), _TEXT).label("currency"),
    sa.cast(sa.null(), _BIGINT).label("nanos"),
    sa.cast(sa.null(), _BIGINT).label("unpriced"),
)


KEPT_PART = -5  # the rows of the settled-spend cache, in the batched statement


# the cache's rows (parameters k<n>_key): the scope's key as `day`, its JSON as `currency`
def _kept_part(count: int) -> sa.Select:
    keys = [sa.bindparam(f"k{number}_key", type_=budget_settled.c.cache_key.type) for number in range(count)]
    return sa.select(
        sa.literal_column("-1", _INT).label("request"),
        sa.literal_column(str(KEPT_PART), _INT).label("part"),
        budget_settled.c.cache_key.label("day"),
        budget_settled.c.payload.label("currency"),
        sa.cast(sa.null(), _BIGINT).label("nanos"),
        sa.cast(sa.null(), _BIGINT).label("unpriced"),
    ).where(budget_settled.c.cache_key.in_(keys))


# ---------------------------------------------------------------- the batched statement as SQL text
# A task process evaluates once: building and compiling its statement with SQLAlchemy took longer
# than the database takes to answer it. Each part is compiled once per dialect and shape (which scope
# keys, how many ranges and edges: never the scope's values, which are parameters like the days) with
# markers where its number goes; a batch is the parts' text with the numbers written in, run as the
# driver's SQL. The compiled parts are kept in the cache folder for the next task processes (a file
# per dialect, keyed by the versions and code that write them), so a new process only binds values.

_NUMBER, _REQUEST = "__n__", "__r__"  # a part's number (in its parameters and as `request`), -1 - it


@dataclass(frozen=True)
class _Sql:
    """A statement as its driver takes it: the text, the parameters' names in order (positional
    paramstyles; None: by name), the bind processors of those that have one, and the values of
    those that are constants of the statement (SQLite's OFFSET 0 after a LIMIT)."""

    text: str
    names: tuple[str, ...] | None
    processors: dict[str, Any]
    constants: dict[str, Any] = field(default_factory=dict)

    def numbered(self, number: int) -> _Sql:
        def write(text: str) -> str:
            return text.replace(_REQUEST, str(-1 - number)).replace(_NUMBER, str(number))

        return _Sql(
            write(self.text),
            None if self.names is None else tuple(write(name) for name in self.names),
            {write(name): processor for name, processor in self.processors.items()},
            {write(name): value for name, value in self.constants.items()},
        )

    def parameters(self, values: dict[str, Any]) -> tuple | dict:
        values = {**values, **self.constants} if self.constants else values
        bound = {
            name: processor(values[name]) if (processor := self.processors.get(name)) else values[name]
            for name in (self.names if self.names is not None else values)
        }
        return bound if self.names is None else tuple(bound[name] for name in self.names)


def _union(parts: Sequence[_Sql]) -> _Sql:
    return _Sql(
        "\nUNION ALL\n".join(part.text for part in parts),
        None if parts[0].names is None else tuple(name for part in parts for name in part.names or ()),
        {name: processor for part in parts for name, processor in part.processors.items()},
        {name: value for part in parts for name, value in part.constants.items()},
    )


# the types of the parameters that have a bind processor, by name in the kept file
_BIND_TYPES = {
    "day": daily_totals.c.day.type,
    "moment": task_runs.c.end_time.type,
    "storage_day": storage_costs.c.day.type,
}
SQL_CACHE_FORMAT = 1


@functools.lru_cache(maxsize=64)
def _processor(dialect: sa.Dialect, name: str) -> Any:
    return _BIND_TYPES[name].bind_processor(dialect)


def _kept_form(sql: _Sql, types: dict[str, str] | None) -> list | None:
    """The part as JSON, its processors by type name; None when a processor's type is not one of
    _BIND_TYPES or a constant is not a plain value (then each process compiles it)."""
    if types is None or not all(isinstance(value, int | str) for value in sql.constants.values()):
        return None
    return [sql.text, sql.names, types, sql.constants]


def _code_stamp() -> str:
    """The files that write the statement, by size and modification time: changed code compiles
    again even where the package version stays the same (an editable install)."""
    here = Path(__file__).resolve().parent
    stamps = []
    for path in (here / "evaluate.py", here / "storage.py", here.parent / "ledger" / "schema.py"):
        try:
            info = path.stat()
            stamps.append(f"{path.name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamps.append(f"{path.name}:?")
    return ",".join(stamps)


def _sql_cache_dir() -> str:
    return conf.cache_dir()


@dataclass
class _KeptParts:
    """The compiled parts of one dialect kept in the cache folder, as read when the process first
    needed one."""

    path: Path
    key: str
    parts: dict[str, list]
    added: bool = False  # parts compiled by this process, not written yet


@functools.lru_cache(maxsize=8)
def _kept_parts(dialect: sa.Dialect) -> _KeptParts:
    identity = [
        SQL_CACHE_FORMAT,
        __version__,
        sa.__version__,
        _code_stamp(),
        dialect.name,
        dialect.driver,
        dialect.paramstyle,
        list(dialect.server_version_info or ()),
    ]
    key = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()
    path = Path(_sql_cache_dir()) / f"budget_sql-{dialect.name}-{dialect.driver}.json"
    parts: dict[str, list] = {}
    try:
        document = json.loads(path.read_text("utf-8"))
        if document.get("key") == key:
            parts = document["parts"]
    except FileNotFoundError:
        pass
    except Exception as error:  # a torn or foreign file: compile, and write it over
        log.debug("cost provider: budget statement cache unusable, compiling: %s", error)
    return _KeptParts(path, key, parts)


def _write_kept(kept: _KeptParts) -> None:
    """The parts compiled by this process, added to the file: one write per new batch shape."""
    if kept.added:
        kept.added = False
        write_json(kept.path, {"key": kept.key, "parts": kept.parts}, "budget statement")


def _compiled(
    statement: sa.Select | sa.CompoundSelect, dialect: sa.Dialect, numbered: bool = True
) -> tuple[_Sql, dict[str, str] | None]:
    """The statement as text, and the type name (_BIND_TYPES) of each parameter with a bind
    processor (None: one of another type). `numbered`: a part numbered later (_Sql.numbered), whose
    parameters without the number's marker are constants; else every parameter keeps its name."""
    compiled = statement.compile(dialect=dialect)
    # a parameter without a part's number is a constant: named, it would clash with another part's
    constants = {
        f"{name}{_NUMBER}": bind.value
        for bind, name in compiled.bind_names.items()
        if numbered and _NUMBER not in name
    }
    if (
        compiled.literal_execute_params
        or compiled.post_compile_params
        or (constants and not dialect.positional)
    ):
        raise ValueError(f"cannot keep as text: {compiled.string}")
    own = {
        name: name if _NUMBER in name or not numbered else f"{name}{_NUMBER}"
        for name in compiled.bind_names.values()
    }
    processors, types = {}, {}
    for bind, name in compiled.bind_names.items():
        if (processor := bind.type.bind_processor(dialect)) is not None:
            processors[own[name]] = processor
            types[own[name]] = next((key for key, kind in _BIND_TYPES.items() if bind.type is kind), None)
    positional = tuple(own[name] for name in compiled.positiontup or ()) if dialect.positional else None
    known = None if None in types.values() else types
    return _Sql(compiled.string, positional, processors, constants), known


def _bound_scope(keys: tuple[str, ...], prefix: str) -> Scope:
    """A scope of `keys` with a parameter <prefix><key> in place of each value (a label:
    <prefix>label_key and <prefix>label_value): its statement serves every scope of these keys."""
    values: dict[str, Any] = {key: sa.bindparam(f"{prefix}{key}") for key in keys if key != "label"}
    if "label" in keys:
        values["label"] = (sa.bindparam(f"{prefix}label_key"), sa.bindparam(f"{prefix}label_value"))
    return Scope(**values)


def _scope_values(scope: Scope, prefix: str) -> dict[str, Any]:
    """The parameters of _bound_scope(scope, prefix)."""
    values = {f"{prefix}{key}": value for key, value in scope.items() if key != "label"}
    if scope.label is not None:
        values[f"{prefix}label_key"], values[f"{prefix}label_value"] = scope.label
    return values


def _keys(scope: Scope) -> tuple[str, ...]:
    return tuple(key for key, _ in scope.items())


@functools.lru_cache(maxsize=1024)
def _part_sql(dialect: sa.Dialect, kind: str, shape: tuple) -> _Sql:
    """The text of one kind of part for one shape, compiled once per dialect and kept for the
    processes after this one."""
    kept = _kept_parts(dialect)
    name = json.dumps([kind, shape])
    form = kept.parts.get(name)
    if form is not None:
        try:
            text, names, types, constants = form
            processors = {param: _processor(dialect, type_name) for param, type_name in types.items()}
            return _Sql(text, None if names is None else tuple(names), processors, constants)
        except Exception as error:  # an entry of another shape: compile it, and write it over
            log.debug("cost provider: budget statement cache entry %s unusable: %s", name, error)
    sql, types = _compiled_part(dialect, kind, shape)
    if (form := _kept_form(sql, types)) is not None:
        kept.parts[name] = form
        kept.added = True
    return sql


def _compiled_part(dialect: sa.Dialect, kind: str, shape: tuple) -> tuple[_Sql, dict[str, str] | None]:
    if kind == "sums":
        keys, day_ranges, edges = shape
        parts = list(_sums_parts(_bound_scope(keys, f"b{_NUMBER}_"), day_ranges, edges, _NUMBER))
    elif kind == "storage":
        parts = [_storage_part(*shape)]
    elif kind == "runs":
        (keys,) = shape
        parts = [_runs_part(_bound_scope(keys, f"r{_NUMBER}_"))]
    elif kind == "kept":
        (count,) = shape
        return _compiled(_kept_part(count), dialect, numbered=False)
    else:
        return _Sql(str(_LAST_END.compile(dialect=dialect)), () if dialect.positional else None, {}), {}
    return _compiled(sa.union_all(*parts) if len(parts) > 1 else parts[0], dialect)


@functools.lru_cache(maxsize=4096)
def _sums_statement(
    dialect: sa.Dialect,
    shapes: tuple[tuple[tuple[str, ...], int, int], ...],
    globs: tuple[bool, ...] = (),
    runs: tuple[tuple[str, ...], ...] = (),
    last_end: bool = False,
    kept: int = 0,
) -> _Sql:
    """One statement for a batch of (scope keys, day ranges, edges) requests, the imported storage
    costs of windows (all resources, or a glob's), the latest runs of the run rules' scopes (by
    keys), with `last_end` the latest end of a try, and the settled-spend cache's rows of `kept`
    keys: one round trip for all the budgets a task try counts towards. Kept per batch shape, which
    repeats from try to try."""
    parts = [_part_sql(dialect, "sums", shape).numbered(tag) for tag, shape in enumerate(shapes)]
    parts += [_part_sql(dialect, "storage", (every,)).numbered(number) for number, every in enumerate(globs)]
    parts += [_part_sql(dialect, "runs", (keys,)).numbered(number) for number, keys in enumerate(runs)]
    if last_end:
        parts.append(_part_sql(dialect, "last_end", ()))
    if kept:
        parts.append(_part_sql(dialect, "kept", (kept,)))
    _write_kept(_kept_parts(dialect))
    return _union(parts)


def _by_scope(requests: list[SumsRequest]) -> tuple[list[SumsRequest], list[int]]:
    """One request per scope, with the days of all of that scope's requests (overlapping ranges
    merged: a day is read once) and their pieces; and for each request, the index of its scope's.
    Sharing is exact: each budget takes from the answer only the days of its own [first, after)
    and its own pieces, and the days it keeps end where every budget's live days start (the
    settled horizon of the evaluation's moment)."""
    at: dict[Scope, int] = {}
    shared: list[SumsRequest] = []
    index_of = []
    for scope, ranges, pieces in requests:
        if scope not in at:
            at[scope] = len(shared)
            shared.append((scope, list(ranges), list(pieces)))
        else:
            _, have_ranges, have_pieces = shared[at[scope]]
            keys = {key for _, _, key in have_pieces}
            shared[at[scope]] = (
                scope,
                _coalesced(have_ranges + list(ranges)),
                have_pieces + [piece for piece in pieces if piece[2] not in keys],
            )
        index_of.append(at[scope])
    return shared, index_of


def _coalesced(ranges: list[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    merged: list[tuple[dt.date, dt.date]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _split_later(
    requests: list[SumsRequest], now: dt.datetime
) -> tuple[list[SumsRequest], list[SumsRequest], dt.datetime | None]:
    """The requests without their parts on the lines that start after `now` (the days after today
    of a tag or label scope, the end of a period in another time zone), those parts, and the
    earliest start among them. Such parts hold a try only when one ends after `now` (clocks that
    disagree, an evaluation of a past moment): each costs the server a join to plan, so they are
    read only when the latest end of a try says so."""
    first: dt.datetime | None = None
    sooner, later = [], []
    for scope, ranges, pieces in requests:
        on_lines = _on_lines(scope)
        ranges_later = [(lo, hi) for lo, hi in ranges if on_lines and utc_midnight(lo) > now]
        pieces_later = [piece for piece in pieces if piece[0] > now]
        starts = [utc_midnight(lo) for lo, _ in ranges_later] + [lo for lo, _, _ in pieces_later]
        if starts:
            first = min([*starts, first] if first is not None else starts)
        sooner.append(
            (
                scope,
                [span for span in ranges if span not in ranges_later],
                [piece for piece in pieces if piece not in pieces_later],
            )
        )
        later.append((scope, ranges_later, pieces_later))
    return sooner, later, first


SumsRequest = tuple[Scope, list[tuple[dt.date, dt.date]], list[tuple[dt.datetime, dt.datetime, str]]]


def _sums_many(
    conn: Connection,
    requests: list[SumsRequest],
    windows: Sequence[storage.Window] = (),
    runs: Sequence[tuple[Budget, str, int]] = (),
    now: dt.datetime | None = None,
    unread: Sequence[str] = (),
) -> tuple[list[settled.Sums], list[storage.Days], list[LatestRuns]]:
    """For each (scope, ranges of whole UTC days, pieces (start, end, key))): {day ISO or piece key:
    {currency ('' = unpriced): [nanos, unpriced lines]}}; the imported storage costs of each window
    per billing day and currency; and for each run-rule request (budget, dag_id, limit) its
    LatestRuns; and the settled-spend cache's rows of the keys `unread` (into the cache); all in one
    query. With `now`, the parts on the lines that start after it are read
    in a second query only when a try ends after their start (_split_later). Requests of one scope
    (a daily and a monthly budget of a team) share one answer, read once: each takes its own days
    and pieces from it."""
    shared, index_of = _by_scope(requests)
    if len(shared) < len(requests):
        found_shared, stored_, latest = _sums_many(conn, shared, windows, runs, now, unread)
        return [found_shared[i] for i in index_of], stored_, latest
    found: list[settled.Sums] = [{} for _ in requests]
    stored: list[storage.Days] = [{} for _ in windows]
    run_rows: list[list[tuple]] = [[] for _ in runs]
    later: list[SumsRequest] = []
    first_later: dt.datetime | None = None
    if now is not None:
        requests, later, first_later = _split_later(requests, now)
    last_end: dt.datetime | None = None
    asked = [(tag, request) for tag, request in enumerate(requests) if request[1] or request[2]]
    if not asked and not windows and not runs and first_later is None and not unread:
        return found, stored, []
    params: dict[str, Any] = {}
    shapes = []
    for number, (_, (scope, ranges, pieces)) in enumerate(asked):
        on_lines = _on_lines(scope)
        for index, (lo, hi) in enumerate(ranges):
            params[f"b{number}_d{index}_lo"] = utc_midnight(lo) if on_lines else lo
            params[f"b{number}_d{index}_hi"] = utc_midnight(hi) if on_lines else hi
        for index, (lo, hi, _) in enumerate(pieces):
            params[f"b{number}_e{index}_lo"], params[f"b{number}_e{index}_hi"] = lo, hi
        params.update(_scope_values(scope, f"b{number}_"))
        shapes.append((_keys(scope), len(ranges), len(pieces)))
    for number, window in enumerate(windows):
        params[f"s{number}_lo"], params[f"s{number}_hi"] = window.lo, window.hi
        if window.glob != "*":
            params[f"s{number}_pattern"] = storage.like_pattern(window.glob)
    for number, (budget, dag_id, limit) in enumerate(runs):  # the latest-runs parts' (_latest_runs_part)
        params[f"r{number}_dag_id"], params[f"r{number}_limit"] = dag_id, limit
        params[f"r{number}_currency"] = budget.currency
        params.update(_scope_values(budget.scope, f"r{number}_"))
    statement = _sums_statement(
        conn.dialect,
        tuple(shapes),
        tuple(window.glob == "*" for window in windows),
        tuple(_keys(budget.scope) for budget, _, _ in runs),
        first_later is not None,
        len(unread),
    )
    params.update({f"k{number}_key": key for number, key in enumerate(unread)})
    rows = conn.exec_driver_sql(statement.text, statement.parameters(params))
    kept_rows = []
    for number, part, day, currency, nanos, unpriced in rows:
        if part == KEPT_PART:
            kept_rows.append((day, currency))
            continue
        if part == LAST_END_PART:
            last_end = None if day is None else _as_datetime(day)
            continue
        if part == STORAGE_PART:
            storage.add_row(stored[-1 - number], day, currency, nanos)
            continue
        if part == RUN_PART:
            run_rows[-1 - number].append((day, nanos, currency, unpriced))
            continue
        tag, (_, _, pieces) = asked[number]
        key = _as_date(day).isoformat() if part == -1 else pieces[part][2]
        entry = found[tag].setdefault(key, {}).setdefault(currency or "", [0, 0])
        entry[0] += int(nanos or 0)
        entry[1] += int(unpriced or 0)
    settled.absorb(kept_rows)
    if first_later is not None and last_end is not None and last_end >= first_later:
        for sums, more in zip(found, _sums_many(conn, later)[0], strict=True):
            for key, by_currency in more.items():
                for currency, (nanos, unpriced) in by_currency.items():
                    entry = sums.setdefault(key, {}).setdefault(currency, [0, 0])
                    entry[0] += nanos
                    entry[1] += unpriced
    return found, stored, [_latest_of(request, rows) for request, rows in zip(runs, run_rows, strict=True)]


def _sums(
    conn: Connection,
    scope: Scope,
    ranges: list[tuple[dt.date, dt.date]],
    pieces: list[tuple[dt.datetime, dt.datetime, str]],
) -> settled.Sums:
    return _sums_many(conn, [(scope, ranges, pieces)])[0][0]


HOUR = dt.timedelta(hours=1)


def _pieces(
    lo: dt.datetime, hi: dt.datetime, settled_until: dt.datetime
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """[lo, hi) as pieces to read from the lines, each (key, start, end): settled as a whole ("e:"),
    else its settled UTC hours ("h:", kept) and the rest ("l:", read every time)."""
    lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
    if hi <= settled_until:
        return [(_piece_key("e", lo, hi), lo, hi)]
    return _hour_pieces(lo, hi, max(lo, settled_until.replace(minute=0, second=0, microsecond=0)))


@functools.lru_cache(maxsize=1024)
def _hour_pieces(
    lo: dt.datetime, hi: dt.datetime, cut: dt.datetime
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """_pieces() of [lo, hi) not settled as a whole, settled until `cut` (an hour): the same for an
    hour, so worked out once per hour (callers only read the list)."""
    pieces = []
    moment = lo
    while moment < cut:
        step = min(cut, moment.replace(minute=0, second=0, microsecond=0) + HOUR)
        pieces.append((_piece_key("h", moment, step), moment, step))
        moment = step
    pieces.append((_piece_key("l", cut, hi), cut, hi))
    return pieces


def _piece_key(kind: str, lo: dt.datetime, hi: dt.datetime) -> str:
    return f"{kind}:{lo.isoformat()}/{hi.isoformat()}"


def _merged(sums: settled.Sums, keys: list[str], kept: settled.Sums | None = None) -> dict[str, list[int]]:
    """The sums of the pieces `keys`, each from `sums`, else from `kept`."""
    merged: dict[str, list[int]] = {}
    for key in keys:
        found = sums.get(key)
        if found is None and kept is not None:
            found = kept.get(key)
        for currency, (nanos, unpriced) in (found or {}).items():
            entry = merged.setdefault(currency, [0, 0])
            entry[0] += nanos
            entry[1] += unpriced
    return merged


@dataclass
class _SpendPlan:
    """What one budget reads: from the settled-spend cache (read when made) and from the ledger
    (`live`: whole days and pieces of time, read for all the budgets of a try in one query)."""

    budget: Budget
    today: dt.date
    split: Any  # periods.UtcSplit
    first: dt.date
    after: dt.date
    live_days: dict[dt.date, list[str]]  # lines path: the pieces of each day not settled
    edge_keys: list[list[str]]  # the pieces of each edge of the period
    live: SumsRequest
    sums: settled.Sums  # the settled part, from the cache: _read_settled() fills it
    horizon: dt.date | None = None  # whole UTC days [first, horizon) are settled
    kept: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)  # settled pieces


def _settled_key(conn: Connection, scope: Scope) -> str:
    return _scope_key(_ledger_name(conn.engine), scope)


# the ledger's URL as text, per engine: a URL hashes by rendering itself, at every lookup
_ledger_names: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _ledger_name(engine: Engine) -> str:
    name = _ledger_names.get(engine)
    if name is None:
        name = _ledger_names[engine] = engine.url.render_as_string(hide_password=True)
    return name


@functools.lru_cache(maxsize=4096)
def _scope_key(ledger: str, scope: Scope) -> str:
    """Worked out once per ledger and scope: the unread rows and each budget's plan both need it."""
    # v2: a tag or label scope's whole days from the label totals (reconciled lines at their
    # reconciled amounts), where v1 summed its lines
    return settled.cache_key(ledger, f"{'v2' if _on_label_totals(scope) else 'v1'} {scope!r}")


def _plan(
    conn: Connection,
    budget: Budget,
    start: dt.datetime,
    end: dt.datetime,
    today: dt.date,
    lo: dt.date,
    now: dt.datetime,
) -> _SpendPlan:
    """The period's spend and the whole UTC days from `lo` to today: the settled part from the cache
    (fetched when it lacks it), the rest (today, mostly) left to read."""
    scope = budget.scope
    split = utc_split(start, end)
    if not scope.counts_tasks:  # a storage scope: no task spend to read
        nothing: SumsRequest = (scope, [], [])
        return _SpendPlan(budget, today, split, today, today, {}, [[] for _ in split.edges], nothing, {})
    on_lines = _on_lines(scope)
    first = min(split.first_day, lo)
    after = max(split.end_day, today + DAY)
    until = settled.settled_until(now)
    horizon = max(first, min(until.date(), after))  # whole UTC days before it are settled
    kept: dict[str, tuple[dt.datetime, dt.datetime]] = {}
    live: dict[str, tuple[dt.datetime, dt.datetime]] = {}

    def pieces(piece_lo: dt.datetime, piece_hi: dt.datetime) -> list[str]:
        keys = []
        for key, lo_, hi_ in _pieces(piece_lo, piece_hi, until):
            (live if key.startswith("l:") else kept)[key] = (lo_, hi_)
            keys.append(key)
        return keys

    # on the lines path, the days up to today that are not settled are read by the hour
    live_days = (
        {
            day: pieces(utc_midnight(day), utc_midnight(day + DAY))
            for day in (horizon + DAY * n for n in range((min(after, today + DAY) - horizon).days))
        }
        if on_lines
        else {}
    )
    edge_keys = [pieces(edge_start, edge_end) for edge_start, edge_end, _ in split.edges]

    # whole days read every time: those not settled, or on the lines path those after today (none,
    # unless clocks disagree)
    live_from = max(horizon, today + DAY) if on_lines else horizon
    live_ranges = [(live_from, after)] if live_from < after else []
    request: SumsRequest = (scope, live_ranges, [(*span, key) for key, span in live.items()])
    return _SpendPlan(budget, today, split, first, after, live_days, edge_keys, request, {}, horizon, kept)


def _read_settled(conn: Connection, plan: _SpendPlan) -> None:
    """The plan's settled days and pieces, from the cache (fetched from the ledger when it lacks
    them). Independent of what the plan reads live: those start where the settled part ends."""
    if plan.horizon is None or not (plan.first < plan.horizon or plan.kept):
        return
    scope, kept = plan.budget.scope, plan.kept

    def fetch(ranges: list[tuple[dt.date, dt.date]], keys: list[str]) -> settled.Sums:
        return _sums(conn, scope, ranges, [(*kept[k], k) for k in keys])

    key = _settled_key(conn, scope)
    plan.sums = settled.lookup(conn, key, plan.first, plan.horizon, list(kept), fetch)  # kept: read only


def _spend(plan: _SpendPlan, live: settled.Sums) -> _Spend:
    """The period's spend per currency, and the budget currency's spend of each whole UTC day."""
    budget, today, split = plan.budget, plan.today, plan.split
    bounds = (
        plan.first.isoformat(),
        plan.after.isoformat(),
        split.first_day,
        split.end_day,
        today,
        budget.currency,
    )
    # the whole days kept (the same at every task end of a day) and those read now never overlap
    spend = _days_spend(plan.sums, *bounds, kept=True).copy()
    spend.add(_days_spend(live, *bounds))

    def merged(keys: list[str]) -> dict[str, list[int]]:
        return _merged(live, keys, plan.sums)

    # on the lines path the days read by the hour; then the edges of a period in another time zone
    for day, keys in plan.live_days.items():
        by_currency = merged(keys)
        if day <= today and budget.currency in by_currency:
            spend.days[day] = by_currency[budget.currency][0]
        if split.first_day <= day < split.end_day:
            spend.add_day(day, by_currency, budget.currency, today)
    for (_, _, utc_day), keys in zip(split.edges, plan.edge_keys, strict=True):
        spend.add_day(utc_day, merged(keys), budget.currency, today)
    return spend


# the kept sums' part of a spend, per (kept sums, bounds): kept sums change at most when fetched anew
_kept_spend: dict[tuple, tuple[settled.Sums, _Spend]] = {}
KEPT_SPEND_ENTRIES = 512


def _days_spend(
    sums: settled.Sums,
    first: str,
    after: str,
    period_first: dt.date,
    period_end: dt.date,
    today: dt.date,
    currency: str,
    kept: bool = False,
) -> _Spend:
    """What the whole UTC days among `sums` (ISO keys in [first, after)) add to a spend."""
    key = (id(sums), first, after, period_first, period_end, today, currency)
    if kept and (found := _kept_spend.get(key)) is not None and found[0] is sums:
        return found[1]
    spend = _Spend()
    for name, by_currency in sums.items():
        if not (first <= name < after and name[4] == "-" and by_currency):  # an ISO date, not a piece
            continue
        day = dt.date.fromisoformat(name)
        if day <= today and currency in by_currency:
            spend.days[day] = by_currency[currency][0]
        if period_first <= day < period_end:
            spend.add_day(day, by_currency, currency, today)
    if kept:
        if len(_kept_spend) >= KEPT_SPEND_ENTRIES:
            _kept_spend.clear()
        _kept_spend[key] = (sums, spend)  # the sums held too: their id is not reused meanwhile
    return spend


# ---------------------------------------------------------------- forecast


@dataclass(frozen=True)
class Forecast:
    amount: Decimal | None
    history_days: int
    weekday_aware: bool
    note: str | None = None


def history(days: dict[dt.date, int], before: dt.date, length: int) -> dict[dt.date, Decimal]:
    """The spend of each whole UTC day in the `length` days before `before`, from the first day with
    spend in that window on (days before the scope's first cost are not zero spend, they are no
    history); days without spend after it count as zero. (Shared between calls: read only.)"""
    window = _window(before, length)
    return _history(window, tuple(days.get(day, 0) for day in window))


@functools.lru_cache(maxsize=64)
def _window(before: dt.date, length: int) -> tuple[dt.date, ...]:
    return tuple(before - dt.timedelta(days=offset) for offset in range(length, 0, -1))


# the history of a scope's days is the same at every task end of a UTC day: built once
@functools.lru_cache(maxsize=1024)
def _history(window: tuple[dt.date, ...], nanos: tuple[int, ...]) -> dict[dt.date, Decimal]:
    first = next((index for index, value in enumerate(nanos) if value), None)
    if first is None:
        return {}
    return {
        day: from_nanos(value) or Decimal(0) for day, value in zip(window[first:], nanos[first:], strict=True)
    }


def forecast(
    spent: Decimal,
    today_spent: Decimal,
    past: dict[dt.date, Decimal],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
) -> Forecast:
    """spent + the expected spend of the rest of the period: for each UTC day left, the median daily
    spend (of the same weekday once the history holds three of each) times the share of that day
    inside the period; today adds only what its median still exceeds today's spend so far."""
    # in UTC: a difference of two datetimes of one zone ignores a daylight-saving change between them
    start, end, now = start.astimezone(UTC), end.astimezone(UTC), now.astimezone(UTC)
    if end <= now:
        return Forecast(spent, len(past), False, "the period has ended")
    if len(past) < MIN_HISTORY_DAYS:
        return Forecast(
            None,
            len(past),
            False,
            f"no forecast yet: it needs {MIN_HISTORY_DAYS} days of spend history, the scope has {len(past)}",
        )
    weekday_aware = len(past) >= WEEKDAY_HISTORY_DAYS
    overall, by_weekday = _medians(tuple(past.items()), weekday_aware)
    today = now.date()
    today_expected, rest = _expected(start, end, today, overall, by_weekday)
    if today_expected is not None:  # today adds only what its median still exceeds today's spend
        rest += max(Decimal(0), today_expected - today_spent)
    return Forecast(quantize_amount(spent + rest), len(past), weekday_aware)


@functools.lru_cache(maxsize=1024)
def _expected(
    start: dt.datetime, end: dt.datetime, today: dt.date, overall: Decimal, by_weekday: tuple[Decimal, ...]
) -> tuple[Decimal | None, Decimal]:
    """What the median days expect of today inside the period (None: today is not in it) and of the
    days after it: the same at every task end of a day, so worked out once. `by_weekday`: the median
    of each weekday, or none (then the overall median for every day)."""

    def median_of(day: dt.date) -> Decimal:
        return by_weekday[day.weekday()] if by_weekday else overall

    today_expected, rest = None, Decimal(0)
    first = max(today, start.date())
    last = (end - dt.timedelta(microseconds=1)).date()
    whole = Counter()  # weekday -> whole UTC days left after today
    # the first day (today, or a period's partial first day) and the last (maybe partial) exactly...
    for day in sorted({first, last}):
        inside = min(utc_midnight(day + DAY), end) - max(utc_midnight(day), start)
        if day != today and inside == DAY:
            whole[day.weekday()] += 1
        else:
            expected = median_of(day) * Decimal(inside.total_seconds()) / 86400
            if day == today:
                today_expected = expected
            else:
                rest += expected
    # ...and the whole days between them counted per weekday, not walked (a quarter has 90)
    between = (last - first).days - 1
    if between > 0:
        first_weekday = (first + DAY).weekday()
        for offset in range(7):
            whole[(first_weekday + offset) % 7] += between // 7 + (offset < between % 7)
    for weekday, count in whole.items():
        if count:
            rest += (by_weekday[weekday] if by_weekday else overall) * count
    return today_expected, rest


def _with_storage(
    outlook: Forecast, budget: Budget, spent: Decimal, stored: storage.StorageSpend
) -> Forecast:
    """The forecast with the storage days not imported yet. A storage scope has only those; an
    everything scope adds them to its task forecast (none without one)."""
    if outlook.note == "the period has ended":
        return outlook
    if not budget.scope.counts_tasks:
        if stored.rest is None:
            return Forecast(None, stored.history_days, False, stored.note)
        return Forecast(quantize_amount(spent + stored.rest), stored.history_days, False)
    if outlook.amount is None or stored.rest is None:
        return outlook
    return Forecast(
        quantize_amount(outlook.amount + stored.rest), outlook.history_days, outlook.weekday_aware
    )


@functools.lru_cache(maxsize=1024)
def _medians(
    past: tuple[tuple[dt.date, Decimal], ...], weekday_aware: bool
) -> tuple[Decimal, tuple[Decimal, ...]]:
    """The median day and (weekday aware) the median of each weekday, Monday first, of a history.
    Kept: the history of whole days before today is the same at every task end of a day, only
    today's spend moves."""
    overall = statistics.median(value for _, value in past)
    if not weekday_aware:
        return overall, ()
    by_weekday: list[list[Decimal]] = [[] for _ in range(7)]
    for day, value in past:
        by_weekday[day.weekday()].append(value)
    return overall, tuple(statistics.median(values) for values in by_weekday)


def forecast_judged_from(start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """When forecast thresholds start to count: after 10 % of the period, at most 24 hours in."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # a 23- or 25-hour day stays one
    wait = min((end - start) * float(FORECAST_AFTER_SHARE), FORECAST_AFTER_MAX)
    return start + wait


# ---------------------------------------------------------------- anomalies


def mad(values: Sequence[Decimal]) -> Decimal:
    """The median absolute deviation from the median."""
    middle = statistics.median(values)
    return statistics.median(abs(value - middle) for value in values)


def day_anomaly(
    threshold: Threshold, day: dt.date, days: dict[dt.date, int], currency: str
) -> Anomaly | None:
    """The UTC day `day` (possibly still going) against the `last_days` days before it."""
    past = history(days, day, threshold.last_days or 0)
    if len(past) < MIN_HISTORY_DAYS:
        return None
    middle = statistics.median(past.values())
    if middle <= 0:
        return None  # a scope idle on most days: its runs are judged by the run rule
    spread = max(mad(list(past.values())), middle * MAD_FLOOR_SHARE)
    limit = middle + (threshold.daily_mad or Decimal(0)) * spread
    spent = from_nanos(days.get(day, 0)) or Decimal(0)
    if spent <= limit:
        return None
    return Anomaly(
        "day", threshold, day.isoformat(), spent, currency, middle, quantize_amount(limit), day=day
    )


def run_anomalies(
    conn: Connection,
    budget: Budget,
    threshold: Threshold,
    targets: Iterable[tuple[str, str]],
    first: LatestRuns | None = None,
) -> list[Anomaly]:
    """Each (dag_id, run_id) in `targets` whose cost (in the budget's currency, within its scope)
    is above k x the median of its DAG's last N runs before it. `first`: the DAG's latest runs as
    already read for a one-run target (a batch at a task end)."""
    wanted: dict[str, set[str]] = {}
    for dag_id, run_id in targets:
        wanted.setdefault(dag_id, set()).add(run_id)
    found = []
    factor, count = threshold.run_cost_vs_median or Decimal(0), threshold.last_runs or 0
    for dag_id, run_ids in sorted(wanted.items()):
        runs = _dag_runs(conn, budget, dag_id, count, run_ids, first)
        order = [run_id for run_id, _ in runs]
        costs = dict(runs)
        for run_id in sorted(run_ids):
            if run_id not in costs:
                continue
            earlier = [costs[r] for r in order[: order.index(run_id)]][-count:]
            if len(earlier) < MIN_EARLIER_RUNS:
                continue
            middle = statistics.median(earlier)
            cost = costs[run_id]
            if middle > 0 and cost > factor * middle:
                found.append(
                    Anomaly(
                        "run",
                        threshold,
                        f"{dag_id}/{run_id}",
                        cost,
                        budget.currency,
                        middle,
                        quantize_amount(factor * middle),
                        dag_id=dag_id,
                        run_id=run_id,
                    )
                )
    return found


def _dag_runs(
    conn: Connection,
    budget: Budget,
    dag_id: str,
    count: int,
    targets: set[str],
    first: LatestRuns | None = None,
) -> list[tuple[str, Decimal]]:
    """(run_id, cost) of a DAG's latest runs in the scope, oldest first by their first try's start,
    enough to hold `count` runs before the earliest target. Reads the DAG's latest tries through the
    (dag_id, end_time) index, not its whole history."""
    limit = first_limit(count)
    for attempt in range(3):
        if attempt == 0 and first is not None and first.dag_id == dag_id and first.limit >= limit:
            runs, full, limit = first.runs, first.full, first.limit
        else:
            runs, full = _latest_runs(conn, budget, dag_id, limit)
        order = [run_id for run_id, _, _ in runs]
        dropped = None
        if full and runs:
            dropped = order[0]  # the oldest run may have lost tries to the limit
            runs, order = runs[1:], order[1:]
        first_target = min((order.index(t) for t in targets if t in order), default=None)
        if not full or (first_target is None and dropped not in targets):
            break  # every run read, or no target among them
        if first_target is not None and first_target >= count:
            break
        # read again, enough for the runs still missing at the tries per run seen so far
        per_run = limit / max(1, len(runs))
        limit = max(2 * limit, int(per_run * (count + 2) * 1.25))
    return [(run_id, cost) for run_id, cost, _ in runs]


def first_limit(count: int) -> int:
    """How many of a DAG's latest tries are read first to find its last `count` runs."""
    return TRIES_PER_RUN * (count + 2)


@dataclass(frozen=True)
class LatestRuns:
    dag_id: str
    limit: int
    runs: list[tuple[str, Decimal, Any]]  # (run_id, cost, first start), oldest first
    full: bool  # the limit was reached: the oldest run may miss tries


@functools.lru_cache(maxsize=4096)
def _latest_runs_part(scope: Scope, currency: Any, tag: int | str, prefix: str = "b") -> sa.Select:
    """The cost per run of a DAG's latest tries in `scope` (parameters <prefix><tag>_dag_id and
    <prefix><tag>_limit), each row led by `tag`. Built once."""
    try_filters = [
        task_runs.c[key] == getattr(scope, key)
        for key in ("task_id", "team", "owner")
        if getattr(scope, key) is not None
    ]
    try_filters += _tries_filters(Scope(tag=scope.tag, label=scope.label))
    latest = (
        sa.select(task_runs.c.id, task_runs.c.run_id, task_runs.c.start_time)
        .where(task_runs.c.dag_id == sa.bindparam(f"{prefix}{tag}_dag_id"), *try_filters)
        .order_by(task_runs.c.end_time.desc())
        .limit(sa.bindparam(f"{prefix}{tag}_limit", type_=_INT))
        .subquery(f"latest_{tag}")
    )
    on = [lines.c.task_run_id == latest.c.id, lines.c.currency == currency]
    if scope.source is not None:
        on.append(lines.c.source == scope.source)
    return (
        sa.select(
            sa.literal_column(str(tag), _INT).label("request"),
            latest.c.run_id,
            sa.func.sum(lines.c.amount_nanos).label("nanos"),
            sa.func.min(latest.c.start_time).label("first_start"),
            sa.func.count(sa.distinct(latest.c.id)).label("tries"),
        )
        .select_from(latest.outerjoin(lines, sa.and_(*on)))
        .group_by(latest.c.run_id)
    )


@functools.lru_cache(maxsize=4096)
def _latest_runs_statement(shapes: tuple[tuple[Scope, str], ...]) -> sa.Executable:
    parts = [_latest_runs_part(scope, currency, tag) for tag, (scope, currency) in enumerate(shapes)]
    return sa.union_all(*parts) if len(parts) > 1 else parts[0]


def _latest_runs_many(conn: Connection, requests: list[tuple[Budget, str, int]]) -> list[LatestRuns]:
    """For each (budget, dag_id, limit): the runs of the DAG's latest `limit` tries in the budget's
    scope, all in one query."""
    if not requests:
        return []
    params: dict[str, Any] = {}
    for tag, (_, dag_id, limit) in enumerate(requests):
        params[f"b{tag}_dag_id"], params[f"b{tag}_limit"] = dag_id, limit
    statement = _latest_runs_statement(tuple((budget.scope, budget.currency) for budget, _, _ in requests))
    rows: list[list[tuple]] = [[] for _ in requests]
    for row in conn.execute(statement, params):
        rows[row.request].append((row.run_id, row.nanos, row.first_start, row.tries))
    return [_latest_of(request, mine) for request, mine in zip(requests, rows, strict=True)]


def _latest_of(request: tuple[Budget, str, int], rows: list[tuple]) -> LatestRuns:
    """LatestRuns of a request from its rows (run_id, nanos, first start, tries)."""
    _, dag_id, limit = request
    runs = sorted(
        (
            (run_id, from_nanos(int(nanos)) or Decimal(0), _as_datetime(first_start))
            for run_id, nanos, first_start, _ in rows
            if nanos is not None
        ),
        key=lambda run: (run[2], run[0]),
    )
    return LatestRuns(dag_id, limit, runs, sum(int(tries) for *_, tries in rows) >= limit)


def _latest_runs(
    conn: Connection, budget: Budget, dag_id: str, limit: int
) -> tuple[list[tuple[str, Decimal, Any]], bool]:
    """The runs of the DAG's latest `limit` tries in the scope, oldest first, and whether the limit
    was reached (the oldest run may then miss tries)."""
    (latest,) = _latest_runs_many(conn, [(budget, dag_id, limit)])
    return latest.runs, latest.full


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def recent_runs(
    conn: Connection, budget: Budget, since: dt.datetime, until: dt.datetime
) -> list[tuple[str, str]]:
    """(dag_id, run_id) of the scope's runs with a try that ended in [since, until)."""
    query = (
        sa.select(task_runs.c.dag_id, task_runs.c.run_id)
        .select_from(_JOINED if budget.scope.source is not None else task_runs)
        .where(task_runs.c.end_time >= since, task_runs.c.end_time < until, *_tries_filters(budget.scope))
        .group_by(task_runs.c.dag_id, task_runs.c.run_id)
        .limit(MAX_RECENT_RUNS)
    )
    return [(row.dag_id, row.run_id) for row in conn.execute(query)]


# ---------------------------------------------------------------- contributors


def top_contributors(
    conn_or_engine: Connection | Engine,
    budget: Budget,
    start: dt.datetime,
    end: dt.datetime,
    limit: int = TOP_CONTRIBUTORS,
    now: dt.datetime | None = None,
) -> list[tuple[str, Decimal]]:
    """The costliest DAGs of the period in the budget's currency, or tasks when the scope is one DAG;
    with imported storage costs, the costliest buckets and storage accounts among them.

    now: the moment of the evaluation; given, the settled whole UTC days of the period come from the
    settled-spend cache (per day and DAG or task) and only the rest is read from the ledger, with
    the same sums."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return top_contributors(conn, budget, start, end, limit, now)
    conn = conn_or_engine
    glob = budget.scope.storage_glob
    resources = storage.top_resources(conn, glob, start, end, budget.currency, limit) if glob else []
    if not budget.scope.counts_tasks:
        return resources
    tasks = (
        _top_tasks(conn, budget, start, end, limit)
        if now is None
        else _top_tasks_settled(conn, budget, start, end, limit, now)
    )
    found = tasks + resources
    return sorted(found, key=lambda item: (-item[1], item[0]))[:limit]


def _contributor_name(budget: Budget, on_totals: bool) -> sa.ColumnElement:
    by_task = budget.scope.dag_id is not None
    if on_totals:
        return daily_totals.c.task_id if by_task else daily_totals.c.dag_id
    return task_runs.c.task_id if by_task else task_runs.c.dag_id


def _lines_of_tries(dialect: str) -> sa.Join:
    """The lines joined to their tries; on SQLite, which has no statistics, comparing with `id + 0`
    makes it read the tries of the period through an index and then their lines, instead of every
    line of the ledger (as report._lines_of_tries)."""
    try_id = task_runs.c.id + 0 if dialect == "sqlite" else task_runs.c.id
    return lines.join(task_runs, lines.c.task_run_id == try_id)


def _contributor_days_query(budget: Budget, lo: dt.date, hi: dt.date, dialect: str) -> sa.Select:
    """Per whole UTC day of [lo, hi) and DAG (or task): the scope's spend in the budget's currency,
    from the daily totals (from the lines for a tag or label scope)."""
    scope = budget.scope
    if _uses_labels(scope):
        name = _contributor_name(budget, on_totals=False)
        day = sa.func.date(task_runs.c.end_time)  # stored as naive UTC: its date is the UTC day
        return (
            sa.select(
                sa.cast(day, _TEXT).label("day"),
                name.label("name"),
                sa.func.sum(lines.c.amount_nanos).label("nanos"),
            )
            .select_from(_lines_of_tries(dialect))
            .where(
                task_runs.c.end_time >= utc_midnight(lo),
                task_runs.c.end_time < utc_midnight(hi),
                lines.c.currency == budget.currency,
                *_tries_filters(scope),
            )
            .group_by(day, name)
        )
    name = _contributor_name(budget, on_totals=True)
    return (
        sa.select(
            sa.cast(daily_totals.c.day, _TEXT).label("day"),
            name.label("name"),
            sa.func.sum(daily_totals.c.amount_nanos).label("nanos"),
        )
        .where(
            daily_totals.c.day >= lo,
            daily_totals.c.day < hi,
            daily_totals.c.currency == budget.currency,
            *_totals_filters(scope),
        )
        .group_by(daily_totals.c.day, name)
    )


def _top_tasks_settled(
    conn: Connection, budget: Budget, start: dt.datetime, end: dt.datetime, limit: int, now: dt.datetime
) -> list[tuple[str, Decimal]]:
    """_top_tasks() with the period's settled whole UTC days from the settled-spend cache (kept per
    day and name, read from the ledger only when missing or too old), the days after them and the
    edges of a period in another time zone read now: the same integer sums, far fewer lines read."""
    scope = budget.scope
    dialect = conn.engine.dialect.name
    split = utc_split(start, end)
    horizon = max(split.first_day, min(settled.settled_until(now).date(), split.end_day))
    totals: dict[str, int] = {}
    if split.first_day < horizon:
        key = settled.cache_key(
            conn.engine.url.render_as_string(hide_password=True),
            f"v1 contributors {scope.dag_id is not None} {budget.currency} {scope!r}",
        )

        def fetch(ranges: list[tuple[dt.date, dt.date]], pieces: list[str]) -> settled.Sums:
            found: settled.Sums = {}
            for lo, hi in ranges:
                for day, name, nanos in conn.execute(_contributor_days_query(budget, lo, hi, dialect)):
                    entry = found.setdefault(_as_date(day).isoformat(), {}).setdefault(str(name), [0, 0])
                    entry[0] += int(nanos or 0)
            return found

        kept = settled.lookup(conn, key, split.first_day, horizon, [], fetch)
        first, after = split.first_day.isoformat(), horizon.isoformat()
        for day, by_name in kept.items():
            if day[4:5] == "-" and first <= day < after:
                for name, (nanos, _) in by_name.items():
                    totals[name] = totals.get(name, 0) + nanos
    parts = []
    if horizon < split.end_day:
        days = _contributor_days_query(budget, horizon, split.end_day, dialect).subquery()
        parts.append(sa.select(days.c.name, days.c.nanos))
    tries_name = _contributor_name(budget, on_totals=False)
    for edge_start, edge_end, _ in split.edges:
        parts.append(
            sa.select(tries_name.label("name"), sa.func.sum(lines.c.amount_nanos).label("nanos"))
            .select_from(_lines_of_tries(dialect))
            .where(
                task_runs.c.end_time >= edge_start,
                task_runs.c.end_time < edge_end,
                lines.c.currency == budget.currency,
                *_tries_filters(scope),
            )
            .group_by(tries_name)
        )
    if parts:
        for name, nanos in conn.execute(sa.union_all(*parts) if len(parts) > 1 else parts[0]):
            totals[str(name)] = totals.get(str(name), 0) + int(nanos or 0)
    ranked = sorted(
        ((name, nanos) for name, nanos in totals.items() if nanos > 0), key=lambda t: (-t[1], t[0])
    )
    return [(name, from_nanos(nanos) or Decimal(0)) for name, nanos in ranked[:limit]]


def _top_tasks(
    conn: Connection, budget: Budget, start: dt.datetime, end: dt.datetime, limit: int
) -> list[tuple[str, Decimal]]:
    by_task = budget.scope.dag_id is not None
    tries_name = task_runs.c.task_id if by_task else task_runs.c.dag_id
    parts = []
    if _uses_labels(budget.scope):
        ranges = [(start, end)]
    else:
        split = utc_split(start, end)
        ranges = [(edge_start, edge_end) for edge_start, edge_end, _ in split.edges]
        totals_name = daily_totals.c.task_id if by_task else daily_totals.c.dag_id
        parts.append(
            sa.select(totals_name.label("name"), sa.func.sum(daily_totals.c.amount_nanos).label("nanos"))
            .where(
                daily_totals.c.day >= split.first_day,
                daily_totals.c.day < split.end_day,
                daily_totals.c.currency == budget.currency,
                *_totals_filters(budget.scope),
            )
            .group_by(totals_name)
        )
    for range_start, range_end in ranges:
        parts.append(
            sa.select(tries_name.label("name"), sa.func.sum(lines.c.amount_nanos).label("nanos"))
            .select_from(_JOINED)
            .where(
                task_runs.c.end_time >= range_start,
                task_runs.c.end_time < range_end,
                lines.c.currency == budget.currency,
                *_tries_filters(budget.scope),
            )
            .group_by(tries_name)
        )
    union = (sa.union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    total = sa.func.sum(union.c.nanos)
    query = (
        sa.select(union.c.name, total.label("nanos"))
        .group_by(union.c.name)
        .having(total > 0)
        .order_by(total.desc(), union.c.name)
        .limit(limit)
    )
    return [(row.name, from_nanos(int(row.nanos)) or Decimal(0)) for row in conn.execute(query)]


# ---------------------------------------------------------------- evaluation


def evaluate(
    conn_or_engine: Connection | Engine,
    budget: Budget,
    now: dt.datetime | None = None,
    *,
    run: tuple[str, str] | None = None,
    contributors: bool | None = None,
    bounds: tuple[dt.datetime, dt.datetime] | None = None,
) -> BudgetStatus:
    """The budget's status at `now` (default: now) in the period holding it, or in `bounds`.

    run: the (dag_id, run_id) of a task try that just finished in the scope: only that run is judged
    by the run rule and only today by the day rule (the evaluation at the end of a task). Without it,
    the runs of the scope of the last two days and yesterday and today are judged (the scheduled
    evaluation). contributors: read the top contributors (a second query); None reads them only when
    something is crossed or anomalous."""
    return _evaluate(conn_or_engine, [(budget, bounds)], now, run, contributors)[0]


def evaluate_all(
    conn_or_engine: Connection | Engine,
    budgets: Iterable[Budget],
    now: dt.datetime | None = None,
    *,
    run: tuple[str, str] | None = None,
    contributors: bool | None = None,
) -> list[BudgetStatus]:
    """evaluate() of each budget in its current period, in as few round trips as possible: one query
    for what all of them spent that is not settled yet, the imported storage costs and the run
    rule's latest runs at a task end (plus what the settled-spend cache lacks, and the top
    contributors of those that crossed something)."""
    return _evaluate(conn_or_engine, [(budget, None) for budget in budgets], now, run, contributors)


def _evaluate(
    conn_or_engine: Connection | Engine,
    items: list[tuple[Budget, tuple[dt.datetime, dt.datetime] | None]],
    now: dt.datetime | None,
    run: tuple[str, str] | None,
    contributors: bool | None,
) -> list[BudgetStatus]:
    if isinstance(conn_or_engine, Engine):
        # an evaluation only reads (the settled-spend cache writes on a connection of its own): without
        # a transaction to begin and roll back, a database server answers in two round trips fewer
        with _collection_paused(), read_connection(conn_or_engine) as conn:
            return _evaluate(conn, items, now, run, contributors)
    conn = conn_or_engine
    now = now or dt.datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: evaluation needs an aware moment")
    today = now.astimezone(UTC).date()
    # what other processes kept of these scopes and this process has not read yet (a new task
    # process: all of them), read with the statement
    unread = settled.unread(
        [_settled_key(conn, budget.scope) for budget, _ in items if budget.scope.counts_tasks]
    )
    periods, plans = [], []
    for budget, bounds in items:
        start, end = bounds or budget.bounds(now)
        reach = max([budget.forecast_days, *((t.last_days or 0) + 1 for t in _day_rules(budget))])
        periods.append((start, end))
        plans.append(_plan(conn, budget, start, end, today, today - dt.timedelta(days=reach), now))
    with_storage = [index for index, (budget, _) in enumerate(items) if budget.scope.storage_glob is not None]
    storage_requests = [
        storage.request_for(items[i][0].scope.storage_glob or "*", *periods[i], items[i][0].currency, now)
        for i in with_storage
    ]
    windows = storage.windows(storage_requests)
    wanted: list[int] = []
    if run is not None:  # at a task end: the try's DAG's latest runs, for every run rule at once
        wanted = [
            index
            for index, ((budget, _), (start, end)) in enumerate(zip(items, periods, strict=True))
            if start <= now < end and _run_rules(budget)
        ]
    requests = [
        (items[index][0], run[0], first_limit(max(t.last_runs or 0 for t in _run_rules(items[index][0]))))
        for index in wanted
        if run is not None
    ]
    # the task spend not settled yet, the imported storage costs and the latest runs: one round trip
    lives, storage_days, runs_found = _sums_many(
        conn, [plan.live for plan in plans], windows, requests, now, unread
    )
    for plan in plans:
        _read_settled(conn, plan)
    spends = storage.spends(storage_requests, windows, storage_days)
    stored = dict(zip(with_storage, spends, strict=True))
    latest: dict[int, LatestRuns] = dict(zip(wanted, runs_found, strict=True))
    return [
        _status(
            conn,
            budget,
            start,
            end,
            now,
            _spend(plan, live),
            run,
            latest.get(index),
            contributors,
            stored.get(index),
        )
        for index, ((budget, _), (start, end), plan, live) in enumerate(
            zip(items, periods, plans, lives, strict=True)
        )
    ]


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """No garbage collection while a task's end evaluates: it makes thousands of short-lived objects
    (the settled spend's rows decoded, the sums), freed as they go, and a collection among them
    only adds its pause to the task. One already paused (another thread) is left to its owner."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _day_rules(budget: Budget) -> list[Threshold]:
    return [t for t in budget.thresholds if t.daily_mad is not None]


def _run_rules(budget: Budget) -> list[Threshold]:
    return [t for t in budget.thresholds if t.run_cost_vs_median is not None]


def _status(
    conn: Connection,
    budget: Budget,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    spend: _Spend,
    run: tuple[str, str] | None,
    latest: LatestRuns | None,
    contributors: bool | None,
    stored: storage.StorageSpend | None = None,
) -> BudgetStatus:
    today = now.astimezone(UTC).date()
    totals = dict(spend.spent)
    for currency, nanos in (stored.spent if stored else {}).items():
        totals[currency] = totals.get(currency, 0) + nanos
    spent = {currency: from_nanos(nanos) or Decimal(0) for currency, nanos in sorted(totals.items())}
    spent.setdefault(budget.currency, Decimal(0))
    spent_amount = spent[budget.currency]
    past = history(spend.days, today, budget.forecast_days)
    outlook = forecast(spent_amount, from_nanos(spend.today_in_period) or Decimal(0), past, start, end, now)
    if stored is not None:
        outlook = _with_storage(outlook, budget, spent_amount, stored)
    opens = forecast_judged_from(start, end)
    judged = outlook.amount is not None and end > now and now >= opens
    note = outlook.note
    if outlook.amount is not None and end > now and not judged:
        note = (
            f"forecast thresholds count from {opens.astimezone(start.tzinfo):%Y-%m-%d %H:%M}: 10 % of the "
            "period, at most its first day"
        )

    crossed = []
    for threshold in budget.thresholds:
        limit = threshold.limit(budget.amount)
        if limit is None:
            continue
        if threshold.kind == "actual" and spent_amount >= limit:
            crossed.append(threshold)
        elif threshold.kind == "forecast" and judged and (outlook.amount or 0) >= limit:
            crossed.append(threshold)

    anomalies: dict[str, Anomaly] = {}
    if start <= now < end:  # anomalies belong to the running period
        judged_days = [today] if run is not None else [today - DAY, today]
        first_day = start.astimezone(UTC).date()
        for threshold in _day_rules(budget):
            for day in judged_days:
                if first_day <= day and (found := day_anomaly(threshold, day, spend.days, budget.currency)):
                    anomalies.setdefault(found.key, found)
        if run_rules := _run_rules(budget):
            targets = (
                [run] if run is not None else recent_runs(conn, budget, max(start, now - RECENT_RUNS), now)
            )
            for threshold in run_rules:
                for found in run_anomalies(conn, budget, threshold, targets, latest):
                    anomalies.setdefault(found.key, found)

    if contributors is None:
        contributors = bool(crossed or anomalies)
    percent = (spent_amount * 100 / budget.amount).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
    return BudgetStatus(
        budget=budget,
        period_start=start,
        period_end=end,
        spent=spent,
        forecast=outlook.amount,
        percent=percent,
        crossed=crossed,
        top_contributors=top_contributors(conn, budget, start, end, now=now) if contributors else [],
        storage_spent=from_nanos(stored.spent.get(budget.currency, 0)) if stored else None,
        storage_through=stored.through if stored else None,
        anomalies=list(anomalies.values()),
        evaluated_at=now,
        unpriced=spend.unpriced,
        forecast_judged=judged,
        forecast_note=note,
        history_days=outlook.history_days,
        weekday_aware=outlook.weekday_aware,
    )


def currencies_seen(conn_or_engine: Connection | Engine) -> set[str]:
    """Every currency the ledger's daily totals hold (priced lines only)."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return currencies_seen(conn)
    query = sa.select(daily_totals.c.currency).where(daily_totals.c.currency != "").distinct()
    return {row.currency for row in conn_or_engine.execute(query)}


def unseen_currency_warnings(conn_or_engine: Connection | Engine, budgets: Iterable[Budget]) -> list[str]:
    """One warning per budget whose currency the ledger has no cost in while it has costs in others:
    amounts are never converted, so its spend would stay 0."""
    seen = currencies_seen(conn_or_engine)
    if not seen:
        return []  # an empty ledger: nothing to compare with yet
    return [
        f"{budget.origin or repr(budget.name)}: currency: {budget.currency} never appears in the ledger, "
        f"whose costs are in {', '.join(sorted(seen))}: amounts are never converted, so this budget's "
        "spend stays 0"
        for budget in budgets
        if budget.currency not in seen
    ]
