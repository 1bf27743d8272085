"""The only reader of the [cost_provider] configuration section: one cached getter per option.

Bad values raise ConfigError naming the option; callers decide whether that disables cost tracking.
"""

from __future__ import annotations

import functools
import json
import os
from decimal import Decimal
from pathlib import Path

from airflow_cost_provider.get_provider_info import CONFIG_OPTIONS
from airflow_cost_provider.pricing.money import is_currency, to_decimal

SECTION = "cost_provider"
_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


class ConfigError(ValueError):
    """A [cost_provider] option with a value that cannot be used."""


def _raw(option: str) -> str:
    from airflow.providers.common.compat.sdk import conf

    value = conf.get(SECTION, option, fallback=CONFIG_OPTIONS[option]["default"])
    return "" if value is None else str(value).strip()


def _bool(option: str) -> bool:
    value = _raw(option).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"[{SECTION}] {option} = {value!r} is not a boolean (True or False)")


def _decimal(option: str, positive: bool = True) -> Decimal:
    value = _raw(option)
    try:
        number = to_decimal(value)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} is not a number") from None
    if positive and number <= 0:
        raise ConfigError(f"[{SECTION}] {option} = {value!r} must be greater than zero")
    return number


@functools.cache
def enabled() -> bool:
    return _bool("enabled")


@functools.cache
def ledger_conn() -> str:
    return _raw("ledger_conn")


def default_ledger_url() -> str:
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return f"sqlite:///{Path(home) / 'cost_ledger.db'}"


@functools.cache
def price_book_path() -> str | None:
    return _raw("price_book_path") or None


@functools.cache
def tagging_enabled() -> bool:
    return _bool("tagging_enabled")


@functools.cache
def disabled_sources() -> frozenset[str]:
    return frozenset(s.strip() for s in _raw("disabled_sources").split(",") if s.strip())


def source_enabled(source: str) -> bool:
    return source not in disabled_sources()


@functools.cache
def untagged_sources() -> frozenset[str]:
    return frozenset(s.strip() for s in _raw("untagged_sources").split(",") if s.strip())


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


@functools.cache
def finalize_timeout() -> float:
    return float(_decimal("finalize_timeout"))


@functools.cache
def capture_hook_lineage() -> bool:
    return _bool("capture_hook_lineage")


@functools.cache
def worker_vcpu_hour_rate() -> Decimal:
    return _decimal("worker_vcpu_hour_rate")


@functools.cache
def worker_memory_gib_hour_rate() -> Decimal:
    return _decimal("worker_memory_gib_hour_rate")


@functools.cache
def worker_rate_currency() -> str:
    value = _raw("worker_rate_currency")
    if not is_currency(value):
        raise ConfigError(f"[{SECTION}] worker_rate_currency = {value!r} is not an ISO 4217 code like USD")
    return value


@functools.cache
def listener_order() -> str:
    value = _raw("listener_order").lower()
    if value not in ("first", "last"):
        raise ConfigError(f"[{SECTION}] listener_order = {value!r} must be 'first' or 'last'")
    return value


@functools.cache
def storage_reimport_days() -> int:
    value = _raw("storage_reimport_days")
    try:
        days = int(value)
    except ValueError:
        raise ConfigError(
            f"[{SECTION}] storage_reimport_days = {value!r} is not a whole number of days"
        ) from None
    if days < 0:
        raise ConfigError(f"[{SECTION}] storage_reimport_days = {value!r} must be 0 or more")
    return days


@functools.cache
def storage_allocation() -> dict[str, int | None]:
    allocation = _json_object("storage_allocation")
    for url, size in allocation.items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ConfigError(
                f"[{SECTION}] storage_allocation[{url!r}] = {size!r} must be a number of bytes, or null to "
                "list the prefix"
            )
    return allocation


def clear_cache() -> None:
    """Forget every cached value (tests and long-lived processes that reload configuration)."""
    for getter in (
        enabled,
        ledger_conn,
        price_book_path,
        tagging_enabled,
        disabled_sources,
        untagged_sources,
        connection_pricing,
        bigquery_pricing,
        finalize_timeout,
        capture_hook_lineage,
        worker_vcpu_hour_rate,
        worker_memory_gib_hour_rate,
        worker_rate_currency,
        listener_order,
        storage_reimport_days,
        storage_allocation,
    ):
        getter.cache_clear()
