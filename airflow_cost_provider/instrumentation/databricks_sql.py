"""Databricks SQL statements run through `DatabricksSqlHook` (`DatabricksSqlOperator`, and the hook's
own `run`, `get_records`, `get_first`).

Tagged twice: the task's identity as Databricks query tags (the `QUERY_TAGS` session parameter,
kept in `system.query.history.query_tags`), merged with the tags the hook or operator already sets,
and as the sqlcommenter comment every DB-API statement gets.

Measured at the end of the task: the query ids of all its statements are looked up in one call to
the Query History API for their durations, and each warehouse's size and type once per process. A
statement's cost is the warehouse's DBUs per hour (price book factor table
`databricks_sql_warehouse_dbu_per_hour`, by cluster size) x its duration, in DBU, priced at the
`databricks/dbu` list price of the warehouse's compute type (sql_classic, sql_pro, sql_serverless).
An estimate: the warehouse is billed for its uptime, which concurrent queries share and idle time adds to.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.pricing.money import EXACT

SOURCE = "databricks"
DBU_FACTOR_TABLE = "databricks_sql_warehouse_dbu_per_hour"
HISTORY_PATH = "/api/2.0/sql/history/queries"
WAREHOUSE_PATH = "/api/2.0/sql/warehouses/{}"
# Statement ids per Query History request: the API's default page size, so every id fits one page.
HISTORY_BATCH = 100
# Seconds one REST call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
# DBUs are kept to a trillionth: far below what is billed, and exact in the ledger's text column.
DBU_QUANTUM = Decimal("1e-12")
MS_PER_HOUR = Decimal(3_600_000)
_WAREHOUSE_IN_PATH = re.compile(r"/sql/1\.0/(?:warehouses|endpoints)/([^/?#]+)")

# (API base URL, warehouse id) -> the warehouse as GET /api/2.0/sql/warehouses/{id} returned it
_warehouses: dict[tuple[str, str], dict[str, Any]] = {}
_warehouses_lock = threading.Lock()


# ---------------------------------------------------------------- pure helpers


def _escape_tag_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def query_tags_text(tags: Mapping[str, Any]) -> str:
    """`key:value,...` as the `QUERY_TAGS` session parameter takes it, `\\`, `,` and `:` in values escaped."""
    return ",".join(
        f"{key}:{_escape_tag_value(str(value))}" for key, value in tags.items() if value is not None
    )


def warehouse_id_from_http_path(http_path: str | None) -> str | None:
    """`/sql/1.0/warehouses/<id>` (or the older `/endpoints/<id>`); None for a cluster's path."""
    match = _WAREHOUSE_IN_PATH.search(http_path or "")
    return match.group(1) if match else None


def compute_type(warehouse: Mapping[str, Any]) -> str:
    """The price book's compute_type of a SQL warehouse: serverless, else pro or classic."""
    if warehouse.get("enable_serverless_compute"):
        return "sql_serverless"
    if str(warehouse.get("warehouse_type") or "").upper() == "PRO":
        return "sql_pro"
    return "sql_classic"


def dbus(dbu_per_hour: Decimal, duration_ms: Decimal) -> Decimal:
    return EXACT.divide(EXACT.multiply(dbu_per_hour, duration_ms), MS_PER_HOUR).quantize(
        DBU_QUANTUM, context=EXACT
    )


def _from_epoch_ms(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.timezone.utc)


def _dbu_per_hour(cluster_size: str) -> Decimal | None:
    from airflow_cost_provider import tracker

    return tracker.price_book().factor(DBU_FACTOR_TABLE, cluster_size)


# ---------------------------------------------------------------- statistics


@dataclass
class DatabricksQuery:
    """One statement's query, kept until the task ends."""

    query_id: str
    conn_id: str | None
    api_base: str  # scheme://host[:port] of the workspace, as the provider's own REST calls use
    http_path_warehouse_id: str | None
    start_time: dt.datetime
    hook: Any = field(repr=False)  # holds the connection's credentials: never shown
    failed: bool = False

    def unresolved(self, reason: str) -> Usage:
        attributes = {"conn_id": self.conn_id}
        if self.http_path_warehouse_id:
            attributes["warehouse_id"] = self.http_path_warehouse_id
        return unresolved_usage(SOURCE, self.query_id, reason, **attributes)

    def usage(self, entry: Mapping[str, Any], warehouse: Mapping[str, Any], warehouse_id: str) -> Usage:
        duration = Decimal(int(entry["duration"]))
        size = str(warehouse.get("cluster_size") or "")
        kind = compute_type(warehouse)
        warehouse_type = (
            "SERVERLESS" if kind == "sql_serverless" else str(warehouse.get("warehouse_type") or "")
        )
        attributes: dict[str, Any] = {
            "conn_id": self.conn_id,
            "compute_type": kind,
            "warehouse_id": warehouse_id,
            "warehouse_size": size,
            "warehouse_type": warehouse_type,
            "duration_ms": str(duration),
            "query_status": str(entry.get("status") or ""),
            METHOD_ATTRIBUTE: "list_price",
        }
        if entry.get("statement_type"):
            attributes["statement_type"] = str(entry["statement_type"])
        if self.failed:
            attributes["failed"] = True
        start = _from_epoch_ms(entry.get("query_start_time_ms")) or self.start_time
        end = _from_epoch_ms(entry.get("query_end_time_ms"))
        if end is None:
            end = start + dt.timedelta(milliseconds=float(duration))
        rate = _dbu_per_hour(size)
        if rate is None:
            attributes[UNPRICED_HINT_ATTRIBUTE] = (
                f"no DBU rate for warehouse size {size!r} in the price book's factors.{DBU_FACTOR_TABLE}"
            )
            metric, quantity, unit = "warehouse_time", duration, "ms"
        else:
            attributes["dbu_per_hour"] = str(rate)
            attributes[UNPRICED_HINT_ATTRIBUTE] = f"add a databricks/dbu price for compute_type {kind}"
            metric, quantity, unit = "dbu", dbus(rate, duration), "DBU"
        return Usage(
            source=SOURCE,
            metric=metric,
            quantity=quantity,
            unit=unit,
            resource=warehouse_id,
            external_id=self.query_id,
            start_time=start,
            end_time=end,
            attributes=attributes,
        )


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left within the finalize budget")
        return min(remaining, REQUEST_TIMEOUT)


def _get(api_base: str, path: str, token: str, timeout: float, params: Any = None) -> dict[str, Any]:
    import requests

    response = requests.get(
        f"{api_base}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )
    response.raise_for_status()
    return response.json()


def fetch_history(
    api_base: str, token: str, query_ids: list[str], budget: _Budget
) -> dict[str, dict[str, Any]]:
    """The Query History entries of these statements (one request per 100), by query id."""
    entries: dict[str, dict[str, Any]] = {}
    for start in range(0, len(query_ids), HISTORY_BATCH):
        batch = query_ids[start : start + HISTORY_BATCH]
        params = [("filter_by.statement_ids", query_id) for query_id in batch]
        params.append(("max_results", str(len(batch))))
        page = _get(api_base, HISTORY_PATH, token, budget.timeout(), params)
        entries.update({str(e["query_id"]): e for e in page.get("res") or [] if e.get("query_id")})
    return entries


def warehouse_info(api_base: str, token: str, warehouse_id: str, budget: _Budget) -> dict[str, Any]:
    """The warehouse's description, fetched once per process: its size and type rarely change."""
    key = (api_base, warehouse_id)
    with _warehouses_lock:
        cached = _warehouses.get(key)
    if cached is None:
        cached = _get(api_base, WAREHOUSE_PATH.format(quote(warehouse_id, safe="")), token, budget.timeout())
        with _warehouses_lock:
            _warehouses[key] = cached
    return cached


def clear_warehouse_cache() -> None:
    with _warehouses_lock:
        _warehouses.clear()


def resolve_queries(queries: list[DatabricksQuery], timeout_seconds: float) -> list[Usage]:
    """Each query's DBUs, from one Query History call per workspace and the warehouses' sizes."""
    budget = _Budget(timeout_seconds)
    by_workspace: dict[str, list[DatabricksQuery]] = {}
    for query in queries:
        by_workspace.setdefault(query.api_base, []).append(query)
    usages: list[Usage] = []
    for api_base, group in by_workspace.items():
        try:
            token = group[0].hook._get_token(raise_error=True)
            entries = fetch_history(api_base, token, [q.query_id for q in group], budget)
        except Exception as error:
            reason = f"query history look-up failed: {type(error).__name__}: {error}"
            usages += [query.unresolved(reason) for query in group]
            continue
        for query in group:
            usages.append(_usage_of(query, entries.get(query.query_id), api_base, token, budget))
    return usages


def _usage_of(
    query: DatabricksQuery, entry: dict | None, api_base: str, token: str, budget: _Budget
) -> Usage:
    if entry is None or entry.get("duration") is None:
        return query.unresolved("the query history has no duration for this statement yet")
    warehouse_id = entry.get("warehouse_id") or entry.get("endpoint_id") or query.http_path_warehouse_id
    if not warehouse_id:
        return query.unresolved("the statement ran on no SQL warehouse")
    try:
        warehouse = warehouse_info(api_base, token, str(warehouse_id), budget)
    except Exception as error:
        return query.unresolved(f"warehouse {warehouse_id} look-up failed: {type(error).__name__}: {error}")
    try:
        return query.usage(entry, warehouse, str(warehouse_id))
    except Exception as error:  # an entry or price book we cannot read: keep the query, unpriced
        return query.unresolved(f"cannot compute its DBUs: {type(error).__name__}: {error}")


def api_base_of(hook: Any) -> str:
    """The workspace's REST base URL, built as the provider builds it (connection schema, host, port)."""
    connection = hook.databricks_conn
    port = f":{connection.port}" if connection.port else ""
    return f"{connection.schema or 'https'}://{hook.host}{port}"


class DatabricksSqlEngine(SqlEngine):
    source = SOURCE

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        query_id = getattr(statement.cursor, "query_id", None)
        if not query_id:
            if not statement.failed:
                session.record(
                    unresolved_usage(
                        SOURCE,
                        None,
                        "the Databricks connector reported no query id",
                        conn_id=statement.conn_id,
                    )
                )
            return  # a statement the warehouse never received cost nothing there
        hook = statement.hook
        session.defer(
            resolve_queries,
            DatabricksQuery(
                query_id=str(query_id),
                conn_id=statement.conn_id,
                api_base=api_base_of(hook),
                http_path_warehouse_id=warehouse_id_from_http_path(getattr(hook, "_http_path", None)),
                start_time=statement.start_time,
                hook=hook,
                failed=statement.failed,
            ),
        )


SQL_ENGINE = DatabricksSqlEngine()


# ---------------------------------------------------------------- query tags


def _add_query_tags(hook: Any, tags: Mapping[str, str]):
    """Put the identity in the query tags of the session `get_conn` opens; returns how to undo it.
    Tags the hook already has (the operator's own, the user's) win on a shared key."""
    if "query_tags" in vars(hook):  # providers that send `hook.query_tags` as QUERY_TAGS themselves
        original_tags = hook.query_tags
        hook.query_tags = {**tags, **(original_tags or {})}
        return lambda: setattr(hook, "query_tags", original_tags)
    original_config = hook.session_config
    config = dict(original_config or hook.databricks_conn.extra_dejson.get("session_configuration") or {})
    ours = query_tags_text(tags)
    config["QUERY_TAGS"] = f"{config['QUERY_TAGS']},{ours}" if config.get("QUERY_TAGS") else ours
    hook.session_config = config
    return lambda: setattr(hook, "session_config", original_config)


def _get_conn_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE) or not conf.tagging_on(SOURCE):
        return wrapped(*args, **kwargs)
    undo = guarded_step("tagging a databricks session", _add_query_tags, instance, session.tags)
    try:
        return wrapped(*args, **kwargs)
    finally:
        if undo is not None:
            guarded_step("tagging a databricks session", undo)


class DatabricksSqlQueries(Instrumentation):
    """Adds the task's query tags to the sessions `DatabricksSqlHook.get_conn` opens; statements are
    measured by `SQL_ENGINE` through the DB-API path."""

    name = "databricks_sql"
    sources = (SOURCE,)
    modules = ("airflow.providers.databricks.hooks.databricks_sql",)

    def patch(self, module: Any) -> None:
        self.wrap(module.DatabricksSqlHook, "get_conn", _get_conn_wrapper)
