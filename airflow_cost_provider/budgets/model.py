"""The budgets file ([cost_provider] budgets_path): what each budget limits, for whom, over which period.

load_budgets(path) validates every key and raises BudgetError with one message naming the file, the
budget and the field; nothing is partly loaded. The dataclasses are frozen: tracker, operators and the
CLI share them.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from airflow_cost_provider.pricing.money import is_currency, to_decimal

Period = Literal["daily", "weekly", "monthly", "quarterly"]
ThresholdKind = Literal["actual", "forecast", "anomaly"]

PERIODS: tuple[Period, ...] = ("daily", "weekly", "monthly", "quarterly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SCOPE_KEYS = ("team", "owner", "dag_id", "task_id", "tag", "label", "source", "storage")
TASK_SCOPE_KEYS = SCOPE_KEYS[:-1]
ENFORCE_MODES = ("skip", "fail")
BUDGET_KEYS = (
    "name",
    "scope",
    "period",
    "week_start",
    "timezone",
    "amount",
    "currency",
    "thresholds",
    "notify",
    "enforce",
    "forecast_days",
)
DEFAULT_KEYS = ("timezone", "week_start", "forecast_days")
FILE_KEYS = ("budgets", "defaults")

DEFAULT_TIMEZONE = "UTC"
DEFAULT_WEEK_START = 0  # Monday, as ISO 8601 weeks
DEFAULT_FORECAST_DAYS = 28  # four of each weekday: enough for a weekday median
FORECAST_DAYS = (7, 90)
DEFAULT_LAST_RUNS = 10
LAST_RUNS = (3, 100)
DEFAULT_LAST_DAYS = 28
LAST_DAYS = (7, 366)
MAX_PERCENT = Decimal(10000)  # 100 times the amount: beyond it a threshold is a typo
MAX_FACTOR = Decimal(1000)
NAME_MAX_LENGTH = 250  # the alerts table's budget column
VALUE_MAX_LENGTH = 250  # the ledger's dag, task, owner, team, tag and label columns
SOURCE_MAX_LENGTH = 64
# The ledger keeps money as nano-units in a signed 64-bit column: a larger amount cannot be compared.
AMOUNT_LIMIT = Decimal(2**63).scaleb(-9)
_NOTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class BudgetError(ValueError):
    """A budgets file that cannot be used: the message names the file, the budget and the field."""


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Scope:
    """Whose spend a budget counts: every given key must match (none given: everything)."""

    team: str | None = None
    owner: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    tag: str | None = None
    label: tuple[str, str] | None = None  # (key, value) of a cost label
    source: str | None = None
    # imported storage costs of the buckets or storage accounts whose id matches this glob ("*": all);
    # never with a task key: a storage cost belongs to no task try
    storage: str | None = None

    @property
    def everything(self) -> bool:
        return all(getattr(self, key) is None for key in SCOPE_KEYS)

    @property
    def storage_glob(self) -> str | None:
        """Which imported storage costs count: all of them for everything, else the storage key's."""
        return "*" if self.everything else self.storage

    @property
    def counts_tasks(self) -> bool:
        return self.storage is None

    def items(self) -> list[tuple[str, Any]]:
        return [(key, getattr(self, key)) for key in SCOPE_KEYS if getattr(self, key) is not None]

    def task_items(self) -> list[tuple[str, Any]]:
        return [(key, value) for key, value in self.items() if key in TASK_SCOPE_KEYS]

    def describe(self) -> str:
        """`team=marketing, source=bigquery`, `label env=prod`, or `everything`."""
        if self.everything:
            return "everything"
        return ", ".join(
            f"label {value[0]}={value[1]}" if key == "label" else f"{key}={value}"
            for key, value in self.items()
        )

    def as_dict(self) -> dict[str, Any]:
        return {key: ({value[0]: value[1]} if key == "label" else value) for key, value in self.items()}

    def matches(self, task_try: Any, sources: Collection[str] = ()) -> bool:
        """Whether a finished task try counts towards this scope. `sources`: those of its cost lines
        (a source scope counts a try with any line of that source)."""
        if self.storage is not None:
            return False
        if self.dag_id is not None and task_try.dag_id != self.dag_id:
            return False
        if self.task_id is not None and task_try.task_id != self.task_id:
            return False
        if self.team is not None and getattr(task_try, "team", None) != self.team:
            return False
        if self.owner is not None and getattr(task_try, "owner", None) != self.owner:
            return False
        if self.tag is not None and self.tag not in getattr(task_try, "dag_tags", ()):
            return False
        if self.label is not None and self.label not in getattr(task_try, "labels", ()):
            return False
        return self.source is None or self.source in sources


@dataclass(frozen=True)
class Threshold:
    """When a budget alerts: spent (actual) or forecast reaching a percentage of the amount or an
    absolute amount, or an anomaly rule (a run or a day far above the usual)."""

    kind: ThresholdKind
    percent: Decimal | None = None
    absolute: Decimal | None = None
    run_cost_vs_median: Decimal | None = None  # k: a run above k x the median of its DAG's last runs
    last_runs: int | None = None
    daily_mad: Decimal | None = None  # m: a day above median + m x MAD of the last days
    last_days: int | None = None
    currency: str | None = None  # of an absolute threshold (the budget's)

    @property
    def key(self) -> str:
        """The canonical text of the threshold: actual:80%, forecast:100%, actual:1000.00 USD,
        anomaly:run_cost_vs_median=3,last_runs=10 or anomaly:daily_mad=3,last_days=28."""
        if self.percent is not None:
            return f"{self.kind}:{_plain(self.percent)}%"
        if self.absolute is not None:
            return f"{self.kind}:{_money(self.absolute)} {self.currency}"
        if self.run_cost_vs_median is not None:
            return f"anomaly:run_cost_vs_median={_plain(self.run_cost_vs_median)},last_runs={self.last_runs}"
        return f"anomaly:daily_mad={_plain(self.daily_mad or Decimal(0))},last_days={self.last_days}"

    def limit(self, amount: Decimal) -> Decimal | None:
        """The spend at which an actual or forecast threshold is crossed, for a budget of `amount`."""
        if self.percent is not None:
            return amount * self.percent / 100
        return self.absolute

    def describe(self) -> str:
        if self.percent is not None:
            return f"{self.kind} {_plain(self.percent)}%"
        if self.absolute is not None:
            return f"{self.kind} {_money(self.absolute)} {self.currency}"
        if self.run_cost_vs_median is not None:
            return (
                f"a DAG run above {_plain(self.run_cost_vs_median)} x the median of its last "
                f"{self.last_runs} runs"
            )
        return f"a day above the median + {_plain(self.daily_mad or Decimal(0))} x MAD of the last {self.last_days} days"


@dataclass(frozen=True)
class NotifyTarget:
    """Where an alert goes: a webhook (JSON POST) or an Airflow notifier by import path."""

    kind: Literal["webhook", "notifier"]
    url: str | None = None
    path: str | None = None
    args: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def channel(self) -> str:
        """The target as it may be shown and stored: a webhook's host only (its URL may hold a token)."""
        if self.kind == "webhook":
            return f"webhook:{urlparse(self.url or '').hostname or '?'}"
        return self.path or "?"


@dataclass(frozen=True)
class Budget:
    name: str
    scope: Scope
    period: Period
    amount: Decimal
    currency: str
    thresholds: tuple[Threshold, ...]
    notify: tuple[NotifyTarget, ...]
    enforce: Literal["skip", "fail"] | None
    week_start: int  # 0 = Monday ... 6 = Sunday
    timezone: str
    forecast_days: int = DEFAULT_FORECAST_DAYS
    origin: str = ""  # "<file> budget '<name>'", for messages

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def week_start_name(self) -> str:
        return WEEKDAYS[self.week_start]

    def bounds(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the period holding `at`, in the budget's time zone."""
        from airflow_cost_provider.budgets.periods import period_bounds

        return period_bounds(self.period, at, self.week_start, self.timezone)


def matching_budgets(
    budgets: Collection[Budget], task_try: Any, sources: Collection[str] = ()
) -> list[Budget]:
    """The budgets a finished task try counts towards (a pure match: no ledger read)."""
    return [budget for budget in budgets if budget.scope.matches(task_try, sources)]


def _plain(number: Decimal) -> str:
    """80 for 80.0, 2.5 for 2.50: the shortest exact text, never an exponent."""
    text = format(number.normalize(), "f")
    return text


def _money(amount: Decimal) -> str:
    """At least two decimals, more when the amount has them: 1000.00, 0.125."""
    exponent = amount.normalize().as_tuple().exponent
    decimals = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{amount:.{decimals}f}"


# ---------------------------------------------------------------- loading


class _Fail(Exception):
    """A problem in one field, raised deep in the parsers and given the file and budget at the top."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")


def load_budgets(path: str | os.PathLike[str]) -> list[Budget]:
    """Every budget of the file, validated; BudgetError on the first problem."""
    name = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except OSError as error:
        raise BudgetError(f"{name}: the budgets file cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise BudgetError(f"{name}: the budgets file is not UTF-8 text: {error}") from None
    return parse_budgets(text, name)


@functools.lru_cache(maxsize=8)
def _cached(path: str, _stamp: tuple[int, int]) -> tuple[Budget, ...]:
    return tuple(load_budgets(path))


def load_budgets_cached(path: str | os.PathLike[str]) -> list[Budget]:
    """load_budgets, parsed again only when the file changed (its modification time or size)."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise BudgetError(f"{path}: the budgets file cannot be read: {error.strerror or error}") from None
    return list(_cached(str(path), (stat.st_mtime_ns, stat.st_size)))


def configured_budgets() -> list[Budget]:
    """The budgets of [cost_provider] budgets_path; none when it is not set. Raises ConfigError or
    BudgetError."""
    from airflow_cost_provider import conf

    path = conf.budgets_path()
    return load_budgets_cached(path) if path else []


def parse_budgets(text: str, name: str) -> list[Budget]:
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, ValueError) as error:  # PyYAML raises ValueError for dates like 2026-13-01
        raise BudgetError(f"{name}: not valid YAML: {' '.join(str(error).split())}") from None
    if document is None:
        raise BudgetError(f"{name}: the budgets file is empty: write a 'budgets:' list")
    if not isinstance(document, Mapping) or "budgets" not in document:
        raise BudgetError(
            f"{name}: must be a mapping with a 'budgets' list (see the README's Budgets section)"
        )
    unknown = sorted(str(key) for key in document if key not in FILE_KEYS)
    if unknown:
        raise BudgetError(f"{name}: unknown key(s) {', '.join(unknown)}: use {' and '.join(FILE_KEYS)}")
    try:
        defaults = _defaults(document.get("defaults"))
    except _Fail as problem:
        raise BudgetError(f"{name} defaults: {problem}") from None
    entries = document["budgets"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise BudgetError(f"{name}: budgets must be a list of budgets, got {_kind(entries)}")
    budgets: list[Budget] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(entries, start=1):
        label = _label(raw, index)
        origin = f"{name} {label}"
        try:
            budget = _budget(raw, defaults, origin)
        except _Fail as problem:
            raise BudgetError(f"{origin}: {problem}") from None
        if budget.name in seen:
            raise BudgetError(
                f"{origin}: name: repeats budget #{seen[budget.name]}: budget names must be unique"
            )
        seen[budget.name] = index
        budgets.append(budget)
    return budgets


def _label(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str) and raw["name"].strip():
        return f"budget {raw['name'].strip()!r}"
    return f"budget #{index}"


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _defaults(raw: Any) -> dict[str, Any]:
    """The file's defaults for every budget, validated once."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _Fail("defaults", f"must be a mapping of {', '.join(DEFAULT_KEYS)}, got {_kind(raw)}")
    unknown = sorted(str(key) for key in raw if key not in DEFAULT_KEYS)
    if unknown:
        raise _Fail(unknown[0], f"is not a default: use {', '.join(DEFAULT_KEYS)}")
    return {
        "timezone": _timezone(raw.get("timezone"), DEFAULT_TIMEZONE),
        "week_start": _week_start(raw.get("week_start"), DEFAULT_WEEK_START),
        "forecast_days": _whole(
            raw.get("forecast_days"), "forecast_days", FORECAST_DAYS, DEFAULT_FORECAST_DAYS
        ),
    }


def _budget(raw: Any, defaults: Mapping[str, Any], origin: str) -> Budget:
    if not isinstance(raw, Mapping):
        raise _Fail("budget", f"must be a mapping with name, period, amount, currency..., got {_kind(raw)}")
    unknown = sorted(str(key) for key in raw if key not in BUDGET_KEYS)
    if unknown:
        raise _Fail(unknown[0], f"unknown key: use {', '.join(BUDGET_KEYS)}")
    for required in ("name", "period", "amount", "currency"):
        if raw.get(required) in (None, ""):
            raise _Fail(required, "is required")
    name = _name(raw["name"])
    currency = _currency(raw["currency"])
    period = raw["period"]
    if not isinstance(period, str) or period.strip().lower() not in PERIODS:
        raise _Fail("period", f"{period!r} is not a period: use {', '.join(PERIODS)}")
    scope = _scope(raw.get("scope"))
    thresholds = _thresholds(
        raw["thresholds"] if "thresholds" in raw else None, currency, "thresholds" in raw
    )
    if not scope.counts_tasks and any(threshold.kind == "anomaly" for threshold in thresholds):
        raise _Fail(
            "thresholds",
            "an anomaly rule judges DAG runs and days of task spend, which a storage scope has none of: use "
            "actual and forecast thresholds",
        )
    return Budget(
        name=name,
        scope=scope,
        period=period.strip().lower(),  # type: ignore[arg-type]
        amount=_amount(raw["amount"]),
        currency=currency,
        thresholds=thresholds,
        notify=_notify(raw.get("notify")),
        enforce=_enforce(raw.get("enforce")),
        week_start=_week_start(raw.get("week_start"), defaults["week_start"]),
        timezone=_timezone(raw.get("timezone"), defaults["timezone"]),
        forecast_days=_whole(
            raw.get("forecast_days"), "forecast_days", FORECAST_DAYS, defaults["forecast_days"]
        ),
        origin=origin,
    )


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Fail("name", f"{value!r} must be text")
    name = value.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise _Fail("name", f"is {len(name)} characters long: use at most {NAME_MAX_LENGTH}")
    if not name.isprintable():
        raise _Fail("name", f"{name!r} holds control characters")
    return name


def _currency(value: Any) -> str:
    if not is_currency(value):
        raise _Fail("currency", f"{value!r} is not an ISO 4217 code: use three capitals like USD")
    return value


def _number(value: Any, field_name: str, what: str, allow_float: bool) -> Decimal:
    if isinstance(value, float) and not allow_float:
        raise _Fail(field_name, f"{value!r} must be quoted ({str(value)!r}) so it stays exact")
    try:
        return to_decimal(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise _Fail(field_name, f"{value!r} is not {what}") from None


def _amount(value: Any) -> Decimal:
    amount = _number(value, "amount", "a number like '1200.00'", allow_float=False)
    if amount <= 0:
        raise _Fail("amount", f"{str(value)!r} must be greater than zero")
    if amount >= AMOUNT_LIMIT:
        raise _Fail(
            "amount",
            f"{str(value)!r} does not fit the ledger's 64-bit nano-units: use less than {AMOUNT_LIMIT}",
        )
    return amount


def _text_value(value: Any, field_name: str, limit: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Fail(field_name, f"{value!r} must be text")
    text = str(value).strip()
    if not text:
        raise _Fail(field_name, "is empty")
    if len(text) > limit:
        raise _Fail(field_name, f"is {len(text)} characters long: the ledger keeps at most {limit}")
    return text


def _scope(raw: Any) -> Scope:
    if raw is None:
        return Scope()
    if not isinstance(raw, Mapping):
        raise _Fail("scope", f"must be a mapping like {{team: marketing}}, got {_kind(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SCOPE_KEYS:
            raise _Fail(
                f"scope.{key}",
                f"unknown scope key: use {', '.join(TASK_SCOPE_KEYS)} (several combine) or storage",
            )
        if key == "label":
            if not isinstance(value, Mapping) or len(value) != 1:
                raise _Fail("scope.label", "must be one label as a mapping, like {label: {env: prod}}")
            ((label_key, label_value),) = value.items()
            values["label"] = (
                _text_value(label_key, "scope.label", VALUE_MAX_LENGTH),
                _text_value(label_value, f"scope.label.{label_key}", VALUE_MAX_LENGTH),
            )
        else:
            limit = SOURCE_MAX_LENGTH if key == "source" else VALUE_MAX_LENGTH
            values[key] = _text_value(value, f"scope.{key}", limit)
    if "storage" in values and (others := [key for key in values if key != "storage"]):
        raise _Fail(
            "scope.storage",
            f"cannot be combined with {', '.join(others)}: storage costs belong to buckets and storage "
            "accounts, not to task tries; give them a budget of their own",
        )
    return Scope(**values)


def _thresholds(raw: Any, currency: str, given: bool) -> tuple[Threshold, ...]:
    if not given:
        return (Threshold("actual", percent=Decimal(100)),)  # a budget alerts when it is spent
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Fail(
            "thresholds", f"must be a list like [{{actual: 80%}}, {{forecast: 100%}}], got {_kind(raw)}"
        )
    thresholds: list[Threshold] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw, start=1):
        where = f"thresholds #{index}"
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise _Fail(
                where, "must be one of actual: 80%, forecast: 100% or anomaly: {run_cost_vs_median: 3}"
            )
        ((kind, value),) = entry.items()
        if kind in ("actual", "forecast"):
            parsed = [_level(kind, value, currency, f"{where} {kind}")]
        elif kind == "anomaly":
            parsed = _anomaly(value, f"{where} anomaly")
        else:
            raise _Fail(where, f"unknown kind {kind!r}: use actual, forecast or anomaly")
        for threshold in parsed:
            if threshold.key in seen:
                raise _Fail(where, f"repeats thresholds #{seen[threshold.key]} ({threshold.key})")
            seen[threshold.key] = index
            thresholds.append(threshold)
    return tuple(thresholds)


def _level(kind: str, value: Any, currency: str, where: str) -> Threshold:
    """`80%` of the amount, or an absolute amount in the budget's currency: `'1000.00 USD'`."""
    advice = f"write a percentage of the amount like 80% or an amount like '1000.00 {currency}'"
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list)):
        raise _Fail(where, f"{value!r} is not a threshold: {advice}")
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = to_decimal(text[:-1].strip())
        except ValueError:
            raise _Fail(where, f"{text!r} is not a percentage: {advice}") from None
        if percent <= 0:
            raise _Fail(where, f"{text!r} must be above 0%")
        if percent > MAX_PERCENT:
            raise _Fail(where, f"{text!r} is more than {MAX_PERCENT}% of the amount")
        return Threshold(kind, percent=percent)  # type: ignore[arg-type]
    parts = text.split()
    if len(parts) == 2 and is_currency(parts[1]):
        try:
            absolute = to_decimal(parts[0])
        except ValueError:
            raise _Fail(where, f"{text!r} is not an amount: {advice}") from None
        if parts[1] != currency:
            raise _Fail(
                where, f"{text!r} is in {parts[1]}, the budget in {currency}: amounts are never converted"
            )
        if absolute <= 0:
            raise _Fail(where, f"{text!r} must be greater than zero")
        if absolute >= AMOUNT_LIMIT:
            raise _Fail(where, f"{text!r} does not fit the ledger's 64-bit nano-units")
        return Threshold(kind, absolute=absolute, currency=currency)  # type: ignore[arg-type]
    try:
        to_decimal(text)
    except ValueError:
        raise _Fail(where, f"{text!r} is not a threshold: {advice}") from None
    raise _Fail(
        where, f"{text} has no unit: write {text}% for a percentage of the amount or '{text} {currency}'"
    )


_ANOMALY_KEYS = ("run_cost_vs_median", "last_runs", "daily_mad", "last_days")


def _anomaly(raw: Any, where: str) -> list[Threshold]:
    if not isinstance(raw, Mapping) or not raw:
        raise _Fail(
            where,
            "must be a mapping like {run_cost_vs_median: 3, last_runs: 10} or {daily_mad: 3, last_days: 28}",
        )
    unknown = sorted(str(key) for key in raw if key not in _ANOMALY_KEYS)
    if unknown:
        raise _Fail(f"{where}.{unknown[0]}", f"unknown anomaly key: use {', '.join(_ANOMALY_KEYS)}")
    rules = []
    if "run_cost_vs_median" in raw:
        factor = _factor(raw["run_cost_vs_median"], f"{where}.run_cost_vs_median", above=Decimal(1))
        runs = _whole(raw.get("last_runs"), f"{where}.last_runs", LAST_RUNS, DEFAULT_LAST_RUNS)
        rules.append(Threshold("anomaly", run_cost_vs_median=factor, last_runs=runs))
    elif "last_runs" in raw:
        raise _Fail(f"{where}.last_runs", "goes with run_cost_vs_median, which is missing")
    if "daily_mad" in raw:
        factor = _factor(raw["daily_mad"], f"{where}.daily_mad", above=Decimal(0))
        days = _whole(raw.get("last_days"), f"{where}.last_days", LAST_DAYS, DEFAULT_LAST_DAYS)
        rules.append(Threshold("anomaly", daily_mad=factor, last_days=days))
    elif "last_days" in raw:
        raise _Fail(f"{where}.last_days", "goes with daily_mad, which is missing")
    return rules


def _factor(value: Any, where: str, above: Decimal) -> Decimal:
    if isinstance(value, str) and value.strip().endswith("%"):
        raise _Fail(where, f"{value!r} is a factor, not a percentage: write e.g. 3")
    factor = _number(value, where, "a number like 3", allow_float=True)
    if factor <= above or factor > MAX_FACTOR:
        raise _Fail(where, f"{value!r} must be above {above} and at most {MAX_FACTOR}")
    return factor


def _whole(value: Any, where: str, bounds: tuple[int, int], default: int) -> int:
    if value is None:
        return default
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Fail(where, f"{value!r} is not a whole number: use {low} to {high}")
    if not low <= value <= high:
        raise _Fail(where, f"{value} is out of range: use {low} to {high}")
    return value


def _notify(raw: Any) -> tuple[NotifyTarget, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Fail("notify", f"must be a list of targets like [{{webhook: https://...}}], got {_kind(raw)}")
    targets = []
    for index, entry in enumerate(raw, start=1):
        where = f"notify #{index}"
        if not isinstance(entry, Mapping):
            raise _Fail(where, "must be {webhook: URL} or {notifier: import.path.Class, args: {...}}")
        kinds = [key for key in ("webhook", "notifier") if key in entry]
        if len(kinds) != 1:
            raise _Fail(where, "must name exactly one of webhook or notifier")
        allowed = {"webhook"} if kinds == ["webhook"] else {"notifier", "args"}
        unknown = sorted(str(key) for key in entry if key not in allowed)
        if unknown:
            raise _Fail(f"{where}.{unknown[0]}", f"unknown key: use {' and '.join(sorted(allowed))}")
        if kinds == ["webhook"]:
            url = entry["webhook"]
            parsed = urlparse(url) if isinstance(url, str) else None
            # the URL is not repeated: a webhook's path often holds its token
            if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise _Fail(f"{where}.webhook", "must be an http:// or https:// URL with a host")
            targets.append(NotifyTarget("webhook", url=url.strip()))
            continue
        path = entry["notifier"]
        if not isinstance(path, str) or not _NOTIFIER_PATH.fullmatch(path.strip()):
            raise _Fail(
                f"{where}.notifier", f"{path!r} is not an import path like package.module.NotifierClass"
            )
        args = entry.get("args") or {}
        if not isinstance(args, Mapping) or not all(isinstance(key, str) for key in args):
            raise _Fail(f"{where}.args", "must be a mapping of the notifier's argument names to values")
        targets.append(NotifyTarget("notifier", path=path.strip(), args=dict(args)))
    return tuple(targets)


def _enforce(value: Any) -> Literal["skip", "fail"] | None:
    if value is None or value is False:
        return None
    if not isinstance(value, str) or value.strip().lower() not in ENFORCE_MODES:
        raise _Fail("enforce", f"{value!r} is not an enforcement: use skip or fail (or leave it out)")
    return value.strip().lower()  # type: ignore[return-value]


def _week_start(value: Any, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, str) or value.strip().lower() not in WEEKDAYS:
        raise _Fail("week_start", f"{value!r} is not a weekday: use {', '.join(WEEKDAYS)}")
    return WEEKDAYS.index(value.strip().lower())


def _timezone(value: Any, default: str) -> str:
    if value is None:
        return default
    advice = "use an IANA name like Europe/Berlin, America/New_York or UTC"
    if not isinstance(value, str) or not value.strip():
        raise _Fail("timezone", f"{value!r} is not a time zone: {advice}")
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, like America
        raise _Fail("timezone", f"{name!r} is not a time zone: {advice}") from None
    return name
