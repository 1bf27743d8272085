"""Trino statements run through `TrinoHook` (and so `SQLExecuteQueryOperator` on a trino connection).

Tagged twice: the task's identity as Trino client tags (`X-Trino-Client-Tags`, kept in
`system.runtime.queries`, the event listener's QueryCompletedEvent and usable by resource-group
selectors) added to the tags the connection already has, and as the sqlcommenter comment every
DB-API statement gets.

Measured from the coordinator's own statistics: CPU time, physical input bytes, wall and elapsed
time. The client's stats dict is updated in place while the task fetches the rows, so it is read at
the end of the task; a query the task did not read to the end (the cursor was closed first, or it
failed) is looked up once with `GET /v1/query/{queryId}`.

Priced as CPU time at the `trino/cpu_time` rate (a self-hosted cluster has no list price: set your
own per vCPU-hour). A connection whose `[cost_provider] connection_pricing` attributes say
`"billing_metric": "physical_input"` is billed per byte read instead, at a `trino/physical_input`
price you add (per TB, as managed Trino services charge).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
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

SOURCE = "trino"
CPU_TIME = "cpu_time"
PHYSICAL_INPUT = "physical_input"
BILLING_METRIC_ATTRIBUTE = "billing_metric"
# Seconds one `GET /v1/query/{queryId}` may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 5.0
_TERMINAL_STATES = frozenset({"FINISHED", "FAILED"})
# Characters kept as they are in a tag value; `,` separates tags in the header, so it must be encoded.
_TAG_SAFE = "-_.~:+@/"

# Client tags for the trino connection that `TrinoHook.get_conn` is opening in this context.
_connection_tags: ContextVar[list[str] | None] = ContextVar("cost_provider_trino_tags", default=None)


def client_tags(tags: Mapping[str, str]) -> list[str]:
    """The identity as Trino client tags, `key=value`, sorted; values percent-encoded where they hold
    a character a tag cannot (`,`, `%`, spaces, quotes)."""
    return [f"{key}={quote(str(value), safe=_TAG_SAFE)}" for key, value in sorted(tags.items())]


def merge_client_tags(existing: Any, ours: Sequence[str]) -> list[str]:
    """The connection's own client tags first (a list, or a comma-separated string), then ours."""
    if isinstance(existing, str):
        existing = [tag.strip() for tag in existing.split(",") if tag.strip()]
    merged = [str(tag) for tag in existing or ()]
    return merged + [tag for tag in ours if tag not in merged]


# ---------------------------------------------------------------- statistics


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h|d)\s*$")
_DURATION_MS = {
    "ns": Decimal("0.000001"),
    "us": Decimal("0.001"),
    "ms": Decimal(1),
    "s": Decimal(1000),
    "m": Decimal(60_000),
    "h": Decimal(3_600_000),
    "d": Decimal(86_400_000),
}
_DATA_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|MB|GB|TB|PB)\s*$")
_DATA_SIZE_BYTES = {
    unit: Decimal(2) ** (10 * power) for power, unit in enumerate(("B", "kB", "MB", "GB", "TB", "PB"))
}


def duration_ms(text: str) -> Decimal:
    """Milliseconds of an airlift Duration as Trino serializes it ("1.50s", "250.00ms", "2.00m")."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"not a Trino duration: {text!r}")
    return Decimal(match.group(1)) * _DURATION_MS[match.group(2)]


def data_size_bytes(text: str) -> Decimal:
    """Bytes of an airlift DataSize as Trino serializes it ("1234B", "3MB", "1.21GB"; binary units),
    to the whole byte."""
    match = _DATA_SIZE.match(str(text))
    if match is None:
        raise ValueError(f"not a Trino data size: {text!r}")
    return (Decimal(match.group(1)) * _DATA_SIZE_BYTES[match.group(2)]).to_integral_value()


@dataclass(frozen=True)
class QueryStatistics:
    state: str
    cpu_time_ms: Decimal
    wall_time_ms: Decimal
    elapsed_time_ms: Decimal
    physical_input_bytes: Decimal
    read_from: str  # "client": the final result page; "coordinator": GET /v1/query/{queryId}


def final_client_statistics(stats: Mapping[str, Any] | None) -> QueryStatistics | None:
    """The statistics of the query's last result page, or None while it had not finished."""
    if not stats or stats.get("state") not in _TERMINAL_STATES:
        return None
    return QueryStatistics(
        state=str(stats["state"]),
        cpu_time_ms=Decimal(int(stats.get("cpuTimeMillis") or 0)),
        wall_time_ms=Decimal(int(stats.get("wallTimeMillis") or 0)),
        elapsed_time_ms=Decimal(int(stats.get("elapsedTimeMillis") or 0)),
        physical_input_bytes=Decimal(int(stats.get("physicalInputBytes") or 0)),
        read_from="client",
    )


def coordinator_statistics(query_info: Mapping[str, Any]) -> QueryStatistics:
    """The statistics in a QueryInfo document (`GET /v1/query/{queryId}`)."""
    stats = query_info["queryStats"]
    return QueryStatistics(
        state=str(query_info.get("state") or "UNKNOWN"),
        cpu_time_ms=duration_ms(stats["totalCpuTime"]),
        wall_time_ms=duration_ms(stats.get("totalScheduledTime") or "0ms"),
        elapsed_time_ms=duration_ms(stats.get("elapsedTime") or "0ms"),
        physical_input_bytes=data_size_bytes(stats.get("physicalInputDataSize") or "0B"),
        read_from="coordinator",
    )


@dataclass
class TrinoQuery:
    """One statement's query, kept until the task ends."""

    query_id: str
    conn_id: str | None
    start_time: dt.datetime
    client_stats: Mapping[str, Any] | None  # the client's own dict, updated while rows are fetched
    connection: Any  # the trino.dbapi.Connection that ran it, for the coordinator's address and auth
    pricing: dict[str, str] = field(default_factory=dict)
    failed: bool = False

    @property
    def billing_metric(self) -> str:
        return PHYSICAL_INPUT if self.pricing.get(BILLING_METRIC_ATTRIBUTE) == PHYSICAL_INPUT else CPU_TIME

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.query_id, reason, conn_id=self.conn_id, **self.pricing)

    def usage(self, statistics: QueryStatistics) -> Usage:
        attributes: dict[str, Any] = {
            **self.pricing,
            "conn_id": self.conn_id,
            "query_state": statistics.state,
            "cpu_time_ms": str(statistics.cpu_time_ms),
            "wall_time_ms": str(statistics.wall_time_ms),
            "elapsed_time_ms": str(statistics.elapsed_time_ms),
            "physical_input_bytes": str(statistics.physical_input_bytes),
            "statistics_from": statistics.read_from,
        }
        if self.failed:
            attributes["failed"] = True
        if self.billing_metric == PHYSICAL_INPUT:
            metric, quantity, unit = PHYSICAL_INPUT, statistics.physical_input_bytes, "byte"
            attributes[UNPRICED_HINT_ATTRIBUTE] = (
                f"connection {self.conn_id!r} is billed per byte read; add a trino/physical_input price "
                "(e.g. unit TB) to your price book"
            )
        else:
            metric, quantity, unit = CPU_TIME, statistics.cpu_time_ms, "vCPU-ms"
            attributes[METHOD_ATTRIBUTE] = "runtime_rate"
            attributes[UNPRICED_HINT_ATTRIBUTE] = (
                "set your cluster's cost per vCPU-hour as a trino/cpu_time price"
            )
        return Usage(
            source=SOURCE,
            metric=metric,
            quantity=quantity,
            unit=unit,
            resource=self.conn_id,
            external_id=self.query_id,
            start_time=self.start_time,
            end_time=self.start_time + dt.timedelta(milliseconds=float(statistics.elapsed_time_ms)),
            attributes=attributes,
        )


def fetch_query_info(query: TrinoQuery, timeout: float) -> dict[str, Any]:
    """`GET /v1/query/{queryId}` on the coordinator that ran the query, with the connection's own HTTP
    session (its TLS settings and authentication) and user."""
    import requests

    connection = query.connection
    url = f"{connection.http_scheme}://{connection.host}:{connection.port}/v1/query/{quote(query.query_id)}"
    http = getattr(connection, "_http_session", None) or requests
    headers = {"X-Trino-User": str(connection.user)} if getattr(connection, "user", None) else {}
    response = http.get(url, headers=headers, timeout=timeout)
    response.raise_for_status()
    return response.json()


def resolve_queries(queries: list[TrinoQuery], timeout_seconds: float) -> list[Usage]:
    """Each query's usage, from the client's final stats or, for a query not read to the end, one
    look-up on the coordinator; a query whose look-up fails is kept unpriced with the reason."""
    deadline = time.monotonic() + timeout_seconds
    usages = []
    for query in queries:
        statistics = final_client_statistics(query.client_stats)
        if statistics is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                usages.append(
                    query.unresolved("the query had not finished and no time was left to look it up")
                )
                continue
            try:
                statistics = coordinator_statistics(fetch_query_info(query, min(remaining, REQUEST_TIMEOUT)))
            except Exception as error:
                usages.append(
                    query.unresolved(
                        f"GET /v1/query/{query.query_id} failed: {type(error).__name__}: {error}"
                    )
                )
                continue
        usages.append(query.usage(statistics))
    return usages


class TrinoEngine(SqlEngine):
    source = SOURCE

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        cursor = statement.cursor
        query_id = getattr(cursor, "query_id", None)
        if not query_id:
            if not statement.failed:
                session.record(
                    unresolved_usage(
                        SOURCE, None, "the trino client reported no query id", conn_id=statement.conn_id
                    )
                )
            return  # a statement the coordinator never received cost nothing there
        session.defer(
            resolve_queries,
            TrinoQuery(
                query_id=str(query_id),
                conn_id=statement.conn_id,
                start_time=statement.start_time,
                client_stats=getattr(cursor, "stats", None),
                connection=getattr(cursor, "connection", None),
                pricing=conf.pricing_for_connection(statement.conn_id),
                failed=statement.failed,
            ),
        )


SQL_ENGINE = TrinoEngine()


# ---------------------------------------------------------------- client tags


def _get_conn_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE) or not conf.tagging_on(SOURCE):
        return wrapped(*args, **kwargs)
    tags = guarded_step("tagging a trino connection", client_tags, session.tags)
    token = _connection_tags.set(tags)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _connection_tags.reset(token)


def _with_client_tags(kwargs: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    return {**kwargs, "client_tags": merge_client_tags(kwargs.get("client_tags"), tags)}


def _connect_wrapper(wrapped, instance, args, kwargs):
    tags = _connection_tags.get()
    if not tags:
        return wrapped(*args, **kwargs)
    call_kwargs = guarded_step("tagging a trino connection", _with_client_tags, kwargs, tags, default=kwargs)
    return wrapped(*args, **call_kwargs)


class TrinoQueries(Instrumentation):
    """Adds the task's client tags to the connections `TrinoHook.get_conn` opens (its keyword arguments
    to `trino.dbapi.connect`); statements are measured by `SQL_ENGINE` through the DB-API path."""

    name = "trino"
    sources = (SOURCE,)
    modules = ("airflow.providers.trino.hooks.trino",)

    def patch(self, module: Any) -> None:
        import trino.dbapi

        self.wrap(trino.dbapi, "connect", _connect_wrapper)
        self.wrap(module.TrinoHook, "get_conn", _get_conn_wrapper)
