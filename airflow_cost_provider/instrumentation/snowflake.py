"""Snowflake: statements run through `SnowflakeHook` (the Python connector) and through
`SnowflakeSqlApiHook` (the SQL API, POST /api/v2/statements), tagged and costed in warehouse credits.

Tagging. Every session the connector opens for a task carries the task's identity as a JSON
`QUERY_TAG`, set through the session parameters the hook hands to `snowflake.connector.connect` (a
`QUERY_TAG` the connection already sets is kept inside it); every statement also gets the
sqlcommenter comment (added by instrumentation/sql.py for the connector, here for the SQL API, whose
requests carry the tag in `parameters.query_tag`).

Usage. Each query's id is kept; at the end of the task one look-up per connection reads the queries'
warehouse, warehouse size and execution time from `SNOWFLAKE.INFORMATION_SCHEMA.QUERY_HISTORY`. A
query is costed as `credits` = the size's credits per hour (price book factor table
`snowflake_warehouse_credits_per_hour`) x its execution time, priced at the connection's edition
from `[cost_provider] connection_pricing`. When the history cannot be read, the client-measured
elapsed time stands in and the warehouse size comes from `SHOW WAREHOUSES` (once per warehouse per
process) or from the connection's `warehouse_size`; attributes say which. Cloud-services credits are
billed per day above 10% of warehouse credits and are not attributed to queries here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement, conn_id_of
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import add_sql_comment, format_comment, snowflake_query_tag
from airflow_cost_provider.tagging.sql_comment import SQL_TOKENS

SOURCE = "snowflake"
CREDITS_FACTOR_TABLE = "snowflake_warehouse_credits_per_hour"
# credits are kept to 12 decimal places: a millionth of a nano-dollar at any edition's price
CREDIT_QUANTUM = Decimal("1e-12")
MS_PER_HOUR = Decimal(3_600_000)
# the provider's own look-ups are tagged so they can be told apart from the task's queries
LOOKUP_QUERY_TAG = json.dumps({"airflow_cost_provider": "statistics"}, separators=(",", ":"))
HISTORY_MARGIN = dt.timedelta(minutes=5)  # clock skew between the worker and Snowflake
HISTORY_RESULT_LIMIT = 10_000  # the table function's maximum; its default of 100 would miss queries
IDS_PER_LOOKUP = 1_000
# INFORMATION_SCHEMA.QUERY_HISTORY's EXECUTION_STATUS of a query that has not ended
UNFINISHED_STATUSES = frozenset({"RUNNING", "QUEUED", "BLOCKED", "RESUMING_WAREHOUSE"})
_QUERY_ID = re.compile(r"\A[0-9A-Za-z-]{1,100}\Z")
_SIZE_ALIASES = {
    "X2LARGE": "XXLARGE",
    "2XLARGE": "XXLARGE",
    "X3LARGE": "XXXLARGE",
    "3XLARGE": "XXXLARGE",
    "4XLARGE": "X4LARGE",
    "XXXXLARGE": "X4LARGE",
    "5XLARGE": "X5LARGE",
    "6XLARGE": "X6LARGE",
}


# --------------------------------------------------------------------------- tagging (pure)


def with_query_tag(params: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """Connection parameters whose session parameters carry the tags as QUERY_TAG, keeping (inside
    the JSON) a QUERY_TAG the connection already sets. The input is not modified."""
    session_parameters: dict[str, Any] = {}
    existing = None
    for key, value in (params.get("session_parameters") or {}).items():
        if str(key).upper() == "QUERY_TAG":
            existing = None if value is None else str(value)
        else:
            session_parameters[key] = value
    session_parameters["QUERY_TAG"] = snowflake_query_tag(tags, existing)
    return {**params, "session_parameters": session_parameters}


_COMMENT_STARTS = ("/*", "--", "#")


def _has_sql(text: str) -> bool:
    """Whether a piece of a script holds more than whitespace and comments."""
    code, last = [], 0
    for match in SQL_TOKENS.finditer(text):
        if match.group(0).startswith(_COMMENT_STARTS):
            code.append(text[last : match.start()])
            last = match.end()
    code.append(text[last:])
    return bool("".join(code).strip())


def _statement_ends(sql: str) -> list[int]:
    """Positions of the `;` that end statements: not those inside strings, identifiers or comments."""
    ends, last = [], 0
    for match in SQL_TOKENS.finditer(sql):
        ends += [last + i for i, char in enumerate(sql[last : match.start()]) if char == ";"]
        last = match.end()
    return ends + [last + i for i, char in enumerate(sql[last:]) if char == ";"]


def comment_each_statement(sql: str, tags: Mapping[str, str]) -> str:
    """The sqlcommenter comment before the `;` of every statement of a script (a SQL API request
    may hold several), so each statement's own query text carries it."""
    if not format_comment(tags):
        return sql
    pieces, start = [], 0
    for end in _statement_ends(sql):
        statement = sql[start:end]
        pieces += [add_sql_comment(statement, tags) if _has_sql(statement) else statement, ";"]
        start = end + 1
    rest = sql[start:]
    pieces.append(add_sql_comment(rest, tags) if _has_sql(rest) else rest)
    return "".join(pieces)


# --------------------------------------------------------------------------- statistics (pure)


def warehouse_credits_key(size: str | None, warehouse_type: str | None = None) -> str | None:
    """The price book's key for a warehouse size as Snowflake writes it ('X-Small', '2X-Large',
    'XXLARGE', ...). Other warehouse types than STANDARD are keyed `TYPE/SIZE`
    (e.g. `SNOWPARK-OPTIMIZED/MEDIUM`): they bill other rates, which a price book may add."""
    if not size or not str(size).strip():
        return None
    key = re.sub(r"[\s_-]", "", str(size).upper())
    key = _SIZE_ALIASES.get(key, key)
    kind = str(warehouse_type or "STANDARD").strip().upper()
    return key if kind in ("", "STANDARD") else f"{kind}/{key}"


def history_sql(query_ids: Iterable[str], since: dt.datetime) -> str:
    """One look-up of the given queries in the table function with no latency. Ids are checked to
    be Snowflake query ids before they are written into the statement."""
    ids = ", ".join(f"'{query_id}'" for query_id in query_ids if _QUERY_ID.match(query_id))
    since_ms = int(since.timestamp() * 1000)
    return (
        "SELECT QUERY_ID, WAREHOUSE_NAME, WAREHOUSE_SIZE, WAREHOUSE_TYPE, EXECUTION_STATUS, EXECUTION_TIME, "
        "DATE_PART(EPOCH_MILLISECOND, START_TIME) AS START_EPOCH_MS, "
        "DATE_PART(EPOCH_MILLISECOND, END_TIME) AS END_EPOCH_MS "
        "FROM TABLE(SNOWFLAKE.INFORMATION_SCHEMA.QUERY_HISTORY("
        f"END_TIME_RANGE_START => TO_TIMESTAMP_LTZ({since_ms}, 3), RESULT_LIMIT => {HISTORY_RESULT_LIMIT})) "
        f"WHERE QUERY_ID IN ({ids})"
    )


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    query_id: str
    warehouse_name: str | None
    warehouse_size: str | None
    warehouse_type: str | None
    execution_status: str | None
    execution_ms: Decimal
    start_time: dt.datetime | None
    end_time: dt.datetime | None


def _upper_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).upper(): value for key, value in row.items()}


def _epoch_ms(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    return dt.datetime.fromtimestamp(float(Decimal(str(value)) / 1000), dt.timezone.utc)


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def parse_history(rows: Iterable[Mapping[str, Any]]) -> dict[str, HistoryRow]:
    """QUERY_HISTORY rows by query id. Values come typed from the connector and as text from the
    SQL API; column names in any case."""
    history = {}
    for raw in rows:
        row = _upper_keys(raw)
        query_id = str(row["QUERY_ID"])
        history[query_id] = HistoryRow(
            query_id=query_id,
            warehouse_name=_text(row.get("WAREHOUSE_NAME")),
            warehouse_size=_text(row.get("WAREHOUSE_SIZE")),
            warehouse_type=_text(row.get("WAREHOUSE_TYPE")),
            execution_status=_text(row.get("EXECUTION_STATUS")),
            execution_ms=Decimal(str(row.get("EXECUTION_TIME") or 0)),
            start_time=_epoch_ms(row.get("START_EPOCH_MS")),
            end_time=_epoch_ms(row.get("END_EPOCH_MS")),
        )
    return history


def show_warehouses_sql(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("'", "''")
    return f"SHOW WAREHOUSES LIKE '{escaped}'"


@dataclasses.dataclass(frozen=True)
class Warehouse:
    name: str
    size: str
    type: str = "STANDARD"
    size_source: str = "show_warehouses"


def parse_show_warehouses(rows: Iterable[Mapping[str, Any]], name: str) -> Warehouse | None:
    """The named warehouse among SHOW WAREHOUSES rows (LIKE is a pattern: `_` matches any
    character, so other warehouses may be listed too)."""
    for raw in rows:
        row = {str(key).lower(): value for key, value in raw.items()}
        if str(row.get("name", "")).upper() == name.upper() and _text(row.get("size")):
            return Warehouse(str(row["name"]), str(row["size"]), str(row.get("type") or "STANDARD"))
    return None


# --------------------------------------------------------------------------- queries awaiting statistics


@dataclasses.dataclass
class PendingQuery:
    """A query (or SQL API request) whose statistics are read at the end of the task."""

    query_id: str | None
    conn_id: str | None
    account: str | None
    warehouse: str | None
    start_time: dt.datetime
    elapsed: Decimal | None  # seconds, as the client saw it; None when it did not see the end
    failed: bool = False
    hook: Any = dataclasses.field(default=None, repr=False, compare=False)
    # the statements of a multi-statement SQL API request, once a status poll has listed them
    children: list[str] = dataclasses.field(default_factory=list)

    def lookup_ids(self) -> list[str]:
        ids = self.children or ([self.query_id] if self.query_id else [])
        return [query_id for query_id in ids if _QUERY_ID.match(query_id)]

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.query_id, reason, conn_id=self.conn_id, warehouse=self.warehouse)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _static_params(hook: Any) -> Mapping[str, Any]:
    """The connection's parameters without OAuth token refreshes (cached by the hook)."""
    try:
        params = hook._get_static_conn_params
    except Exception:
        return {}
    return params if isinstance(params, Mapping) else {}


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


# --------------------------------------------------------------------------- look-ups


def _seconds_left(deadline: float) -> int:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no time left within finalize_timeout={conf.finalize_timeout()}s")
    return max(1, int(left))


class ConnectorLookup:
    """The provider's own session through the Python connector, with timeouts from the budget."""

    def __init__(self, hook: Any, deadline: float) -> None:
        from snowflake.connector import connect

        self.deadline = deadline
        seconds = _seconds_left(deadline)
        params = dict(hook._get_conn_params())
        session_parameters = {
            key: value
            for key, value in (params.get("session_parameters") or {}).items()
            if str(key).upper() != "QUERY_TAG"
        }
        session_parameters["QUERY_TAG"] = LOOKUP_QUERY_TAG
        params.update(
            session_parameters=session_parameters,
            login_timeout=seconds,
            network_timeout=seconds,
            socket_timeout=seconds,
        )
        self.connection = connect(**params)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        with closing(self.connection.cursor()) as cursor:
            cursor.execute(sql, timeout=_seconds_left(self.deadline))
            columns = [column[0] for column in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.connection.close()


class SqlApiLookup:
    """The provider's own statements through the SQL API, synchronously, with the hook's credentials."""

    _REQUEST_OWNED = {"method", "url", "headers", "params", "json", "data", "timeout"}

    def __init__(self, hook: Any, deadline: float) -> None:
        self.hook = hook
        self.deadline = deadline
        self.url = f"{hook.account_identifier}.snowflakecomputing.com/api/v2/statements"
        config = hook._get_conn_params()
        self.context = {
            name: value
            for name in ("database", "schema", "warehouse", "role")
            if (value := getattr(hook, name, None) or config.get(name))
        }

    def rows(self, sql: str) -> list[dict[str, Any]]:
        import requests

        seconds = _seconds_left(self.deadline)
        extra = {
            key: value
            for key, value in (getattr(self.hook, "http_request_kwargs", None) or {}).items()
            if key not in self._REQUEST_OWNED
        }
        response = requests.post(
            self.url,
            params={"requestId": str(uuid.uuid4())},
            json={
                "statement": sql,
                "timeout": seconds,
                "resultSetMetaData": {"format": "json"},
                "parameters": {"query_tag": LOOKUP_QUERY_TAG},
                **self.context,
            },
            headers=self.hook.get_headers(),
            timeout=(min(seconds, 10), seconds),
            **extra,
        )
        if response.status_code == 202:
            raise TimeoutError("the SQL API was still running the look-up")
        if response.status_code == 422:
            raise RuntimeError(response.json().get("message") or "SQL compilation error")
        response.raise_for_status()
        document = response.json()
        columns = [column["name"] for column in document["resultSetMetaData"]["rowType"]]
        return [dict(zip(columns, row, strict=True)) for row in document.get("data") or []]

    def close(self) -> None:
        pass


# (account, WAREHOUSE) -> what SHOW WAREHOUSES said; sizes change rarely, look each up once
_warehouses: dict[tuple[str, str], Warehouse | None] = {}
_warehouses_lock = threading.Lock()


def clear_warehouse_cache() -> None:
    with _warehouses_lock:
        _warehouses.clear()


class WarehouseSizes:
    """The size of each warehouse the statements ran on, when the history did not say it."""

    def __init__(self, lookup: Any, lookup_error: str | None) -> None:
        self.lookup = lookup
        self.lookup_error = lookup_error

    def find(self, item: PendingQuery) -> Warehouse | str:
        """The warehouse, or why its size is unknown."""
        configured = conf.pricing_for_connection(item.conn_id).get("warehouse_size")
        problem = "the connection names no warehouse"
        if item.warehouse:
            found, problem = self._shown(item.account or "", item.warehouse)
            if found is not None:
                return found
        if configured:
            return Warehouse(item.warehouse or "", configured, size_source="connection_pricing")
        return (
            f"the size of warehouse {item.warehouse!r} is unknown ({problem}); set "
            f'"warehouse_size" for connection {item.conn_id!r} in [cost_provider] connection_pricing'
        )

    def _shown(self, account: str, name: str) -> tuple[Warehouse | None, str]:
        key = (account.upper(), name.upper())
        with _warehouses_lock:
            if key in _warehouses:
                return _warehouses[key], "SHOW WAREHOUSES does not list it"
        if self.lookup is None:
            return None, f"SHOW WAREHOUSES could not run: {self.lookup_error}"
        try:
            found = parse_show_warehouses(self.lookup.rows(show_warehouses_sql(name)), name)
        except Exception as error:
            return None, f"SHOW WAREHOUSES failed: {_short(error)}"
        with _warehouses_lock:
            _warehouses[key] = found
        return found, "SHOW WAREHOUSES does not list it"


def resolve_connector_queries(items: list[PendingQuery], timeout: float) -> list[Usage]:
    return _resolve(items, timeout, ConnectorLookup)


def resolve_sql_api_statements(items: list[PendingQuery], timeout: float) -> list[Usage]:
    return _resolve(items, timeout, SqlApiLookup)


def _price_book():
    from airflow_cost_provider.tracker import price_book

    return price_book()


def _resolve(
    items: list[PendingQuery], timeout: float, open_lookup: Callable[[Any, float], Any]
) -> list[Usage]:
    """One session per connection reads the history of all its queries, then each is costed."""
    deadline = time.monotonic() + timeout
    book = _price_book()
    groups: dict[tuple[str | None, str | None], list[PendingQuery]] = {}
    for item in items:
        groups.setdefault((item.conn_id, item.account), []).append(item)
    usages: list[Usage] = []
    for group in groups.values():
        lookup, lookup_error, history, history_error = None, None, {}, None
        try:
            lookup = open_lookup(group[0].hook, deadline)
        except Exception as error:
            lookup_error = history_error = f"no session for the look-up: {_short(error)}"
        try:
            if lookup is not None:
                history, history_error = _read_history(lookup, group)
            sizes = WarehouseSizes(lookup, lookup_error)
            for item in group:
                usages += _usages_for(item, history, history_error, sizes, book)
        finally:
            if lookup is not None:
                guarded_step("closing a Snowflake look-up session", lookup.close)
    return usages


def _read_history(lookup: Any, group: list[PendingQuery]) -> tuple[dict[str, HistoryRow], str | None]:
    ids = sorted({query_id for item in group for query_id in item.lookup_ids()})
    if not ids:
        return {}, "no query id to look up"
    since = min(item.start_time for item in group) - HISTORY_MARGIN
    history: dict[str, HistoryRow] = {}
    try:
        for start in range(0, len(ids), IDS_PER_LOOKUP):
            history.update(
                parse_history(lookup.rows(history_sql(ids[start : start + IDS_PER_LOOKUP], since)))
            )
    except Exception as error:
        return history, f"QUERY_HISTORY look-up failed: {_short(error)}"
    return history, None


def _usages_for(
    item: PendingQuery,
    history: Mapping[str, HistoryRow],
    history_error: str | None,
    sizes: WarehouseSizes,
    book: Any,
) -> list[Usage]:
    if item.children:
        rows = [history.get(child) for child in item.children]
        if all(rows):
            # the request's own id carries no warehouse time of its own: its statements do
            parent = _credits_usage(
                item,
                item.query_id,
                None,
                None,
                Decimal(0),
                "query_history",
                book,
                statement_handles=",".join(item.children),
            )
            return [parent] + [_from_history(item, row, book) for row in rows if row]
    elif item.query_id and (row := history.get(item.query_id)):
        return [_from_history(item, row, book)]
    return [_from_client(item, history_error or "not found in QUERY_HISTORY", sizes, book)]


def _from_history(item: PendingQuery, row: HistoryRow, book: Any) -> Usage:
    status = (row.execution_status or "").upper()
    if status in UNFINISHED_STATUSES:
        return dataclasses.replace(item, query_id=row.query_id).unresolved(
            f"the query was still {status} when the task ended; look it up later by its id"
        )
    warehouse = Warehouse(
        row.warehouse_name or "", row.warehouse_size or "", row.warehouse_type or "STANDARD"
    )
    usage_item = dataclasses.replace(
        item, query_id=row.query_id, warehouse=row.warehouse_name or item.warehouse
    )
    extra: dict[str, Any] = {}
    if item.children:
        extra["statement_of"] = item.query_id
    if status and status != "SUCCESS":
        extra["execution_status"] = row.execution_status
        extra["failed"] = True
    if not row.warehouse_size:
        # metadata-only statements and result-cache hits run in cloud services, on no warehouse
        extra["ran_on_warehouse"] = False
        return _credits_usage(
            usage_item, row.query_id, None, None, row.execution_ms, "query_history", book, row, **extra
        )
    return _credits_usage(
        usage_item,
        row.query_id,
        warehouse,
        "query_history",
        row.execution_ms,
        "query_history",
        book,
        row,
        **extra,
    )


def _from_client(item: PendingQuery, history_problem: str, sizes: WarehouseSizes, book: Any) -> Usage:
    if item.elapsed is None:
        return item.unresolved(f"execution time unknown: {history_problem}; the client did not see it end")
    warehouse = sizes.find(item)
    if isinstance(warehouse, str):
        return item.unresolved(f"{history_problem}; {warehouse}")
    extra: dict[str, Any] = {"query_history_unavailable": history_problem}
    if item.failed:
        extra["failed"] = True
    if item.children:
        extra["statement_handles"] = ",".join(item.children)
    return _credits_usage(
        item, item.query_id, warehouse, warehouse.size_source, item.elapsed * 1000, "client", book, **extra
    )


def _credits_usage(
    item: PendingQuery,
    query_id: str | None,
    warehouse: Warehouse | None,
    size_source: str | None,
    execution_ms: Decimal,
    time_source: str,
    book: Any,
    row: HistoryRow | None = None,
    **extra: Any,
) -> Usage:
    """Warehouse credits of one query: the size's credits per hour x its execution time."""
    pricing = conf.pricing_for_connection(item.conn_id)
    attributes: dict[str, Any] = {"conn_id": item.conn_id, **pricing}
    if item.account:  # the account identifier: the console's address of the query
        attributes["account"] = item.account
    credits = Decimal(0)
    if warehouse is not None:
        key = warehouse_credits_key(warehouse.size, warehouse.type)
        per_hour = book.factor(CREDITS_FACTOR_TABLE, key) if key else None
        if per_hour is None:
            return dataclasses.replace(item, query_id=query_id).unresolved(
                f"no credits per hour for {warehouse.type} warehouse size {warehouse.size!r} (key {key!r}): "
                f"add it to factors.{CREDITS_FACTOR_TABLE} in your price book"
            )
        credits = (per_hour * execution_ms / MS_PER_HOUR).quantize(CREDIT_QUANTUM)
        attributes.update(
            warehouse_size=key, warehouse_size_source=size_source, credits_per_hour=str(per_hour)
        )
    attributes.update(
        {
            "warehouse": item.warehouse,
            "execution_ms": execution_ms,
            "execution_time_source": time_source,
            METHOD_ATTRIBUTE: "list_price",
            **extra,
        }
    )
    if "edition" not in pricing:
        attributes[UNPRICED_HINT_ATTRIBUTE] = (
            f"connection {item.conn_id!r} has no Snowflake edition in [cost_provider] connection_pricing; "
            'set e.g. {"' + str(item.conn_id) + '": {"edition": "enterprise"}}'
        )
    start_time = row.start_time if row and row.start_time else item.start_time
    end_time = row.end_time if row and row.end_time else None
    if end_time is None:
        end_time = start_time + dt.timedelta(milliseconds=float(execution_ms))
    return Usage(
        source=SOURCE,
        metric="credits",
        quantity=credits,
        unit="credit",
        resource=item.warehouse,
        external_id=query_id,
        start_time=start_time,
        end_time=end_time,
        attributes=attributes,
    )


# --------------------------------------------------------------------------- the connector (DbApiHook path)


class SnowflakeEngine(SqlEngine):
    """Statements run through `SnowflakeHook._run_command`: kept by query id for the look-up."""

    source = SOURCE

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        query_id = getattr(statement.cursor, "sfqid", None)
        if query_id is None and statement.failed:
            return  # it never reached Snowflake
        params = _static_params(statement.hook)
        session.defer(
            resolve_connector_queries,
            PendingQuery(
                query_id=str(query_id) if query_id else None,
                conn_id=statement.conn_id,
                account=params.get("account") or None,
                warehouse=params.get("warehouse") or None,
                start_time=statement.start_time,
                elapsed=statement.elapsed,
                failed=statement.failed,
                hook=statement.hook,
            ),
        )


SQL_ENGINE = SnowflakeEngine()


def _tagging(session: CaptureSession | None) -> bool:
    return session is not None and conf.source_enabled(SOURCE) and conf.tagging_on(SOURCE)


def _conn_params_wrapper(wrapped, instance, args, kwargs):
    """`SnowflakeHook._get_conn_params`: the sessions a task opens carry its QUERY_TAG."""
    params = wrapped(*args, **kwargs)
    session = task_session()
    if session is None or not isinstance(params, Mapping):
        return params
    if not guarded_step("tagging a snowflake session", _tagging, session, default=False):
        return params
    return guarded_step("tagging a snowflake session", with_query_tag, params, session.tags, default=params)


# --------------------------------------------------------------------------- the SQL API


def _tag_request(session: CaptureSession, wrapped: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The `execute_query` arguments with the statements commented and the QUERY_TAG set."""
    if not _tagging(session):
        return args, kwargs
    bound = inspect.signature(wrapped).bind(*args, **kwargs)
    bound.arguments["sql"] = comment_each_statement(bound.arguments["sql"], session.tags)
    bound.arguments["query_tag"] = snowflake_query_tag(session.tags, bound.arguments.get("query_tag") or None)
    return bound.args, bound.kwargs


def _defer_statements(session: CaptureSession, hook: Any, handles: Any, submitted: dt.datetime) -> None:
    if not conf.source_enabled(SOURCE) or not isinstance(handles, list):
        return
    params = _static_params(hook)
    for handle in handles:
        session.defer(
            resolve_sql_api_statements,
            PendingQuery(
                query_id=str(handle),
                conn_id=conn_id_of(hook),
                account=getattr(hook, "account", None) or params.get("account") or None,
                warehouse=getattr(hook, "warehouse", None) or params.get("warehouse") or None,
                start_time=submitted,
                elapsed=None,
                hook=hook,
            ),
        )


def _execute_query_wrapper(wrapped, instance, args, kwargs):
    """`SnowflakeSqlApiHook.execute_query`: tag the request, keep its statement handles."""
    session = task_session()
    if session is None:
        return wrapped(*args, **kwargs)
    call_args, call_kwargs = guarded_step(
        "tagging a snowflake SQL API request",
        _tag_request,
        session,
        wrapped,
        args,
        kwargs,
        default=(args, kwargs),
    )
    submitted = _now()
    handles = wrapped(*call_args, **call_kwargs)
    guarded_step(
        "capturing snowflake SQL API statements", _defer_statements, session, instance, handles, submitted
    )
    return handles


def _note_status(session: CaptureSession, query_id: Any, status: Any) -> None:
    """The first poll that finds a request finished ends its client-measured time and lists the
    statements of a multi-statement request."""
    if not isinstance(status, Mapping) or status.get("status") not in ("success", "error"):
        return
    for item in list(session.pending.get(resolve_sql_api_statements, ())):
        if item.query_id != query_id or item.elapsed is not None:
            continue
        item.elapsed = Decimal(str((_now() - item.start_time).total_seconds()))
        item.failed = status["status"] == "error"
        handles = [str(h) for h in status.get("statement_handles") or ()]
        if handles and handles != [query_id]:
            item.children = handles


def _query_status_wrapper(wrapped, instance, args, kwargs):
    """`SnowflakeSqlApiHook.get_sql_api_query_status`: when the operator's polls see the end."""
    status = wrapped(*args, **kwargs)
    session = task_session()
    if session is not None:
        query_id = args[0] if args else kwargs.get("query_id")
        guarded_step("capturing a snowflake SQL API status", _note_status, session, query_id, status)
    return status


class SnowflakeQueries(Instrumentation):
    name = "snowflake"
    sources = (SOURCE,)
    modules = (
        "airflow.providers.snowflake.hooks.snowflake",
        "airflow.providers.snowflake.hooks.snowflake_sql_api",
    )

    def patch(self, module: Any) -> None:
        if module.__name__.endswith(".snowflake_sql_api"):
            hook = module.SnowflakeSqlApiHook
            self.wrap(hook, "execute_query", _execute_query_wrapper)
            self.wrap(hook, "get_sql_api_query_status", _query_status_wrapper)
        else:
            self.wrap(module.SnowflakeHook, "_get_conn_params", _conn_params_wrapper)
