"""The only reader of the [cost_provider] configuration section: one cached getter per option.

Bad values raise ConfigError naming the option, the value and what is allowed; callers decide whether
that disables cost tracking. Outside an Airflow process the options are read the way Airflow reads them,
without importing Airflow (seconds of start-up for a CLI command).
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Collection
from decimal import Decimal
from pathlib import Path

from airflow_cost_provider.get_provider_info import (
    CONFIG_OPTIONS,
    FINALIZE_TIMEOUT_SECONDS,
    MAX_LINES_PER_TASK,
    SPOOL_MAX_MB,
    STORAGE_REIMPORT_DAYS,
    WORKER_RATE_MAX,
)
from airflow_cost_provider.pricing.money import is_currency, to_decimal

SECTION = "cost_provider"
_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}
_BIGINT_MAX = 2**63 - 1  # the ledger's integer columns are signed 64-bit
_UNIT_TEST_MODE = "AIRFLOW__CORE__UNIT_TEST_MODE"


class ConfigError(ValueError):
    """A [cost_provider] option with a value that cannot be used."""


def _raw(option: str) -> str:
    try:
        if "airflow.configuration" in sys.modules:  # an Airflow process: its conf is loaded already
            value = _from_airflow(option)
        else:
            value = _without_airflow(option)
            if value is None:
                value = _from_airflow(option)
    except configparser.InterpolationError:
        # Airflow's own error quotes the value, and ledger_conn holds a password: not repeated here
        raise ConfigError(
            f"[{SECTION}] {option} in airflow.cfg holds a % that is neither %% nor %(option)s: write a "
            "literal % as %%"
        ) from None
    return "" if value is None else str(value).strip()


def _from_airflow(option: str) -> str | None:
    from airflow.providers.common.compat.sdk import conf

    return conf.get(SECTION, option, fallback=CONFIG_OPTIONS[option]["default"])


def _without_airflow(option: str) -> str | None:
    """The option as Airflow's conf.get would give it: the environment variable, else airflow.cfg, else
    the default. None when only Airflow can read it: a _cmd or _secret variant needs its command runner
    or secrets backend."""
    variable = f"AIRFLOW__{SECTION.upper()}__{option.upper()}"
    if variable in os.environ:
        return _expand(os.environ[variable])
    if any(name in os.environ for name in (f"{variable}_CMD", f"{variable}_SECRET", _UNIT_TEST_MODE)):
        return None
    # Airflow's parser: a ConfigParser with its default interpolation (%% is %), whole-line comments
    # only, and option names matched case-sensitively
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read(_airflow_config_file())
    except (configparser.Error, ValueError):
        return None  # a file Airflow may reject or half-read: let it decide
    if parser.has_option("core", "unit_test_mode"):
        return None  # Airflow may replace airflow.cfg by its unit-test configuration
    if parser.has_option(SECTION, option):
        return _expand(parser.get(SECTION, option))
    if parser.has_option(SECTION, f"{option}_cmd") or parser.has_option(SECTION, f"{option}_secret"):
        return None
    return _expand(CONFIG_OPTIONS[option]["default"])


def _airflow_config_file() -> str:
    """$AIRFLOW_CONFIG, else $AIRFLOW_HOME/airflow.cfg, else ~/airflow/airflow.cfg (airflow.configuration)."""
    config = os.environ.get("AIRFLOW_CONFIG")
    if config is None:
        return os.path.join(_expand(os.environ.get("AIRFLOW_HOME", "~/airflow")), "airflow.cfg")
    return _expand(config)


def _expand(value: str) -> str:
    # Airflow expands $VARIABLES and a leading ~ in every value, again until nothing changes
    while True:
        expanded = os.path.expanduser(os.path.expandvars(value))
        if expanded == value:
            return expanded
        value = expanded


def _bool(option: str) -> bool:
    value = _raw(option)
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"[{SECTION}] {option} = {value!r} is not a boolean: use True or False")


def _decimal(option: str, low: Decimal, high: Decimal, allowed: str, above_low: bool = False) -> Decimal:
    """A number from low (excluded when above_low) to high; `allowed` says so in the error."""
    value = _raw(option)
    try:
        number = to_decimal(value)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} is not a number: use {allowed}") from None
    if number < low or (above_low and number == low) or number > high:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} is out of range: use {allowed}")
    return number


@functools.cache
def enabled() -> bool:
    return _bool("enabled")


@functools.cache
def ledger_conn() -> str:
    value = _raw("ledger_conn")
    if value:
        _check_ledger_conn(value)
    return value


# SQLAlchemy's URL pattern (sqlalchemy.engine.url._parse_url): the URLs make_url parses, without
# importing SQLAlchemy here
_SQLALCHEMY_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)
# Airflow's rule for connection ids (airflow.models.connection.RE_SANITIZE_CONN_ID, at most 250)
_CONN_ID = re.compile(r"[\w#!()\-.:/\\]{1,250}")
_LEDGER_CONN_ALLOWED = (
    "use an SQLAlchemy URL like postgresql://user:password@host:5432/cost or "
    "sqlite:////path/cost_ledger.db, or the id of an Airflow connection"
)


def _check_ledger_conn(value: str) -> None:
    shown = _hide_credentials(value)
    if "://" not in value:
        if not _CONN_ID.fullmatch(value):
            raise ConfigError(
                f"[{SECTION}] ledger_conn = {shown!r} is neither a database URL nor an Airflow connection "
                f"id (at most 250 letters, digits and _-.:/\\#!()); {_LEDGER_CONN_ALLOWED}"
            )
        return
    parsed = _SQLALCHEMY_URL.match(value)
    netloc = value.partition("://")[2].split("/", 1)[0]
    if parsed is None:
        problem = f"{value.partition('://')[0]!r} is not a database kind like postgresql or sqlite"
    elif netloc.count("@") > 1:  # as the ledger store tells it: a raw @ in the user or password
        problem = "the user or password holds an @ (URL-encode it as %40)"
    elif parsed["port"] and not parsed["port"].isdigit():
        problem = f"the port {parsed['port']!r} is not a number"
    else:
        return
    raise ConfigError(
        f"[{SECTION}] ledger_conn = {shown!r} is not a usable database URL: {problem}; {_LEDGER_CONN_ALLOWED}"
    )


def _hide_credentials(value: str) -> str:
    """ledger_conn is sensitive: nothing before the last @ (user and password) goes in a message."""
    if "@" not in value:
        return value
    scheme, separator, _ = value.partition("://")
    return f"{scheme}://***@{value.rsplit('@', 1)[1]}" if separator else f"***@{value.rsplit('@', 1)[1]}"


def default_ledger_url() -> str:
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return f"sqlite:///{Path(home) / 'cost_ledger.db'}"


def cache_dir() -> str:
    """Where the provider keeps what it derives from its inputs to save work in every task process
    (the parsed price book, the budgets' compiled statements): $AIRFLOW_HOME/cost_cache."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return str(Path(home) / "cost_cache")


@functools.cache
def price_book_path() -> str | None:
    return _raw("price_book_path") or None


@functools.cache
def tagging_enabled() -> bool:
    return _bool("tagging_enabled")


@functools.cache
def disabled_sources() -> frozenset[str]:
    return _source_names("disabled_sources")


def source_enabled(source: str) -> bool:
    return source not in disabled_sources()


@functools.cache
def untagged_sources() -> frozenset[str]:
    return _source_names("untagged_sources")


@functools.cache
def correct_estimates() -> frozenset[str]:
    """The sources whose new estimates take the factor reconciling their bill showed; "*" for all."""
    return _source_names("correct_estimates")


def corrects_estimates_of(source: str) -> bool:
    chosen = correct_estimates()
    return "*" in chosen or source in chosen


SOURCE_LISTS = ("disabled_sources", "untagged_sources", "correct_estimates")


def _source_names(option: str) -> frozenset[str]:
    return frozenset(s.strip() for s in _raw(option).split(",") if s.strip())


def check_source_names(option: str, sources: Collection[str], connection_types: Collection[str] = ()) -> None:
    """Raise ConfigError when the source list `option` names neither one of `sources` nor one of
    `connection_types` (a DB-API hook's statements take its connection type as their source: oracle).

    Not done by the getters: the names come from the price book and Airflow's providers, and at run
    time an unknown name only stays unused, where an error would lose every capture."""
    unknown = sorted(_source_names(option) - set(sources) - set(connection_types) - {"*"})
    if unknown:
        types = ", or the connection type of a DB-API hook" if connection_types else ""
        raise ConfigError(
            f"[{SECTION}] {option} = {_raw(option)!r} names unknown source(s) {', '.join(unknown)}: use "
            f"comma-separated names from {', '.join(sorted(sources))}{types}"
        )


def tagging_on(source: str) -> bool:
    return tagging_enabled() and source not in untagged_sources()


def _json_object(option: str) -> dict:
    value = _raw(option) or "{}"
    try:
        parsed = json.loads(value)
    except ValueError as error:
        raise ConfigError(f"[{SECTION}] {option} is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"[{SECTION}] {option} must be a JSON object, got {type(parsed).__name__}")
    return parsed


@functools.cache
def connection_pricing() -> dict[str, dict[str, str]]:
    pricing = _json_object("connection_pricing")
    for conn_id, attributes in pricing.items():
        if not isinstance(attributes, dict) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in attributes.values()
        ):
            raise ConfigError(
                f"[{SECTION}] connection_pricing[{conn_id!r}] must be an object of text or number "
                'values, like {"instance_type": "db.r6g.large"}'
            )
    return {conn_id: {k: str(v) for k, v in attributes.items()} for conn_id, attributes in pricing.items()}


def pricing_for_connection(conn_id: str | None) -> dict[str, str]:
    return dict(connection_pricing().get(conn_id or "", {}))


BIGQUERY_MODELS = ("on_demand", "standard", "enterprise", "enterprise_plus")


@functools.cache
def bigquery_pricing() -> dict[str, str]:
    pricing = _json_object("bigquery_pricing")
    for project, model in pricing.items():
        if model not in BIGQUERY_MODELS:
            raise ConfigError(
                f"[{SECTION}] bigquery_pricing[{project!r}] = {model!r} must be one of {', '.join(BIGQUERY_MODELS)}"
            )
    return pricing


def bigquery_model(project: str | None) -> str:
    pricing = bigquery_pricing()
    return pricing.get(project or "", pricing.get("*", "on_demand"))


SPARK_ENDPOINT_KEYS = ("history_server", "resource_manager")
_URL = re.compile(r"^https?://[^/@\s]+(/\S*)?$")


@functools.cache
def spark_endpoints() -> dict[str, dict[str, str]]:
    """Connection id (or "*") -> {history_server, resource_manager}: URLs without a trailing slash."""
    endpoints = _json_object("spark_endpoints")
    checked: dict[str, dict[str, str]] = {}
    for conn_id, urls in endpoints.items():
        if not isinstance(urls, dict) or not urls or set(urls) - set(SPARK_ENDPOINT_KEYS):
            raise ConfigError(
                f"[{SECTION}] spark_endpoints[{conn_id!r}] must be an object with history_server and/or "
                'resource_manager, like {"history_server": "http://spark-history:18080"}'
            )
        for key, url in urls.items():
            if not isinstance(url, str) or not _URL.match(url.strip()):
                raise ConfigError(
                    f"[{SECTION}] spark_endpoints[{conn_id!r}].{key} must be an http:// or https:// URL "
                    "without credentials in it"
                )
        checked[conn_id] = {key: url.strip().rstrip("/") for key, url in urls.items()}
    return checked


def spark_endpoints_for(conn_id: str | None) -> dict[str, str]:
    endpoints = spark_endpoints()
    return dict(endpoints.get(conn_id or "", endpoints.get("*", {})))


@functools.cache
def finalize_timeout() -> float:
    low, high = FINALIZE_TIMEOUT_SECONDS
    return float(_decimal("finalize_timeout", Decimal(low), Decimal(high), f"seconds from {low} to {high}"))


@functools.cache
def capture_hook_lineage() -> bool:
    return _bool("capture_hook_lineage")


def _worker_rate(option: str, unit: str) -> Decimal:
    allowed = f"a price per {unit} above 0 and at most {WORKER_RATE_MAX} (in worker_rate_currency)"
    return _decimal(option, Decimal(0), Decimal(WORKER_RATE_MAX), allowed, above_low=True)


@functools.cache
def worker_vcpu_hour_rate() -> Decimal:
    return _worker_rate("worker_vcpu_hour_rate", "vCPU-hour")


@functools.cache
def worker_memory_gib_hour_rate() -> Decimal:
    return _worker_rate("worker_memory_gib_hour_rate", "GiB-hour")


@functools.cache
def worker_rate_currency() -> str:
    value = _raw("worker_rate_currency")
    if not is_currency(value):
        raise ConfigError(
            f"[{SECTION}] worker_rate_currency = {value!r} is not an ISO 4217 code: use three capitals like USD"
        )
    return value


@functools.cache
def freeze_heap_for_openlineage() -> bool:
    return _bool("freeze_heap_for_openlineage")


@functools.cache
def listener_order() -> str:
    value = _raw("listener_order")
    if value.lower() not in ("first", "last"):
        raise ConfigError(
            f"[{SECTION}] listener_order = {value!r} is not a listener order: use first or last"
        )
    return value.lower()


@functools.cache
def storage_reimport_days() -> int:
    return _whole_number("storage_reimport_days", STORAGE_REIMPORT_DAYS, "days")


def _whole_number(option: str, bounds: tuple[int, int], unit: str) -> int:
    """An option that is a whole number of `unit` within `bounds`, or a ConfigError naming it."""
    value = _raw(option)
    low, high = bounds
    allowed = f"a whole number of {unit} from {low} to {high}"
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} is not a whole number: use {allowed}") from None
    if not low <= number <= high:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} is out of range: use {allowed}")
    return number


@functools.cache
def storage_allocation() -> dict[str, int | None]:
    allocation = _json_object("storage_allocation")
    for url, size in allocation.items():
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _BIGINT_MAX
        ):
            raise ConfigError(
                f"[{SECTION}] storage_allocation[{url!r}] = {size!r} is not a number of bytes: use a whole "
                f"number from 0 to {_BIGINT_MAX}, or null to list the prefix"
            )
    return allocation


TEAM_MAX_LENGTH = 250  # the ledger's team column


@functools.cache
def team_mapping() -> tuple[tuple[str, str], ...]:
    """(DAG id glob, team) pairs in the order written: the first match names a DAG's team."""
    mapping = _json_object("team_mapping")
    for pattern, team in mapping.items():
        if not pattern.strip():
            raise ConfigError(f"[{SECTION}] team_mapping has an empty DAG id glob: use e.g. marketing_*")
        if not isinstance(team, str) or not team.strip() or len(team.strip()) > TEAM_MAX_LENGTH:
            raise ConfigError(
                f"[{SECTION}] team_mapping[{pattern!r}] = {team!r} is not a team name: use text of 1 to "
                f'{TEAM_MAX_LENGTH} characters, like "marketing"'
            )
    return tuple((pattern, team.strip()) for pattern, team in mapping.items())


@functools.cache
def budgets_path() -> str | None:
    """The budgets file, if any; its content is validated by budgets.model.load_budgets (and by
    `airflow-cost check`), not here: this getter runs at every task end."""
    return _raw("budgets_path") or None


@functools.cache
def spool_dir() -> str:
    value = _raw("spool_dir")
    if not value:
        home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
        return str(Path(home) / "cost_spool")
    if not os.path.isabs(value):
        raise ConfigError(
            f"[{SECTION}] spool_dir = {value!r} is not an absolute path: use e.g. /var/lib/airflow/cost_spool"
        )
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"[{SECTION}] spool_dir = {value!r} is a file, not a folder")
    return value


@functools.cache
def spool_max_mb() -> int:
    return _whole_number("spool_max_mb", SPOOL_MAX_MB, "MB")


@functools.cache
def max_lines_per_task() -> int:
    return _whole_number("max_lines_per_task", MAX_LINES_PER_TASK, "lines")


def _json_value(option: str):
    value = _raw(option)
    if not value or value[0] not in "[{":
        return value  # a plain word: the parser says what is allowed (keep or spread, a JSON list)
    try:
        return json.loads(value)
    except ValueError as error:
        raise ConfigError(f"[{SECTION}] {option} is not valid JSON: {error}") from None


@functools.cache
def billing_resources() -> tuple:
    """The reconcile rules (reconcile.rules.BillingRule), validated."""
    from airflow_cost_provider.reconcile.rules import RuleError, parse_rules

    try:
        return parse_rules(_json_value("billing_resources"))
    except RuleError as error:
        raise ConfigError(f"[{SECTION}] {error}") from None


@functools.cache
def reconcile_mode() -> dict[str, str]:
    """Source -> keep | spread, "*" for the others."""
    from airflow_cost_provider.reconcile.rules import RuleError, parse_modes

    try:
        return parse_modes(_json_value("reconcile_mode"))
    except RuleError as error:
        raise ConfigError(f"[{SECTION}] {error}") from None


@functools.cache
def opencost_url() -> str | None:
    value = _raw("opencost_url").rstrip("/")
    if not value:
        return None
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(
            f"[{SECTION}] opencost_url = {value!r} is not an http(s) URL: use e.g. http://opencost.opencost:9003"
        )
    return value


@functools.cache
def opencost_currency() -> str:
    value = _raw("opencost_currency")
    if not is_currency(value):
        raise ConfigError(
            f"[{SECTION}] opencost_currency = {value!r} is not an ISO 4217 code: use three capitals like USD"
        )
    return value


@functools.cache
def prometheus_url() -> str | None:
    value = _raw("prometheus_url").rstrip("/")
    if not value:
        return None
    if not _URL.match(value):
        raise ConfigError(
            f"[{SECTION}] prometheus_url = {value!r} is not an http(s) URL without credentials: use e.g. "
            "http://prometheus-operated.monitoring.svc:9090"
        )
    return value


_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_MATCHERS = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*$")


@functools.cache
def prometheus_selector() -> str:
    value = _raw("prometheus_selector").strip().strip(",")
    if value and not _MATCHERS.match(value):
        raise ConfigError(
            f"[{SECTION}] prometheus_selector = {value!r} is not a list of PromQL label matchers: use e.g. "
            'cluster="prod-eu" or cluster="prod",region=~"eu-.*"'
        )
    return ",".join(part.strip() for part in re.findall(_MATCHER, value))


# Every option's getter: `airflow-cost check` validates each (tests hold it to CONFIG_OPTIONS).
GETTERS: dict[str, Callable[[], object]] = {
    "enabled": enabled,
    "ledger_conn": ledger_conn,
    "spark_endpoints": spark_endpoints,
    "price_book_path": price_book_path,
    "tagging_enabled": tagging_enabled,
    "untagged_sources": untagged_sources,
    "connection_pricing": connection_pricing,
    "bigquery_pricing": bigquery_pricing,
    "disabled_sources": disabled_sources,
    "finalize_timeout": finalize_timeout,
    "capture_hook_lineage": capture_hook_lineage,
    "worker_vcpu_hour_rate": worker_vcpu_hour_rate,
    "worker_memory_gib_hour_rate": worker_memory_gib_hour_rate,
    "worker_rate_currency": worker_rate_currency,
    "listener_order": listener_order,
    "freeze_heap_for_openlineage": freeze_heap_for_openlineage,
    "storage_reimport_days": storage_reimport_days,
    "storage_allocation": storage_allocation,
    "team_mapping": team_mapping,
    "budgets_path": budgets_path,
    "spool_dir": spool_dir,
    "spool_max_mb": spool_max_mb,
    "max_lines_per_task": max_lines_per_task,
    "billing_resources": billing_resources,
    "reconcile_mode": reconcile_mode,
    "correct_estimates": correct_estimates,
    "opencost_url": opencost_url,
    "opencost_currency": opencost_currency,
    "prometheus_url": prometheus_url,
    "prometheus_selector": prometheus_selector,
}


def clear_cache() -> None:
    """Forget every cached value (tests and long-lived processes that reload configuration)."""
    for getter in GETTERS.values():
        getter.cache_clear()  # type: ignore[attr-defined]
