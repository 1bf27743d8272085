"""Amazon Athena queries: tagged where they are submitted, priced from the statistics Athena keeps.

`AthenaHook.run_query` (which `AthenaOperator` calls) gets a sqlcommenter comment appended to its
query, and its QueryExecutionId is kept. At the task's end the statistics of all its queries are read
with `BatchGetQueryExecution`, 50 ids a call. Statements run through `AthenaSQLHook` (PyAthena) are
tagged by the DB-API wrapper; PyAthena has already read their statistics while waiting for them, so
they cost no further call unless they failed.

Athena bills the bytes a query scans, rounded up to the megabyte, with a 10 MB minimum per query.
It does not bill DDL statements, failed queries or results it reuses; a cancelled query is billed
for what it scanned (https://aws.amazon.com/athena/pricing/). `data_scanned` is the billed bytes;
the bytes Athena reported are kept in the `scanned_bytes` attribute.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.aws import (
    AwsCalls,
    as_utc,
    describe_error,
    error_code,
    with_region,
)
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import add_sql_comment

SOURCE = "athena"
BATCH_SIZE = 50  # the most ids BatchGetQueryExecution takes in one call
BILLING_INCREMENT_BYTES = 10**6  # scanned bytes are rounded up to the megabyte
MINIMUM_BILLED_BYTES = 10 * BILLING_INCREMENT_BYTES
MAX_QUERY_BYTES = 262_144  # StartQueryExecution rejects a longer QueryString
UNFINISHED_STATES = ("QUEUED", "RUNNING")
# Errors after which asking again, one id at a time, would only make things worse.
THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"})

# Statements Athena runs on its Hive DDL engine, whose parser rejects block comments. They are never
# billed, so they stay untagged rather than risk breaking them.
_HIVE_STATEMENT = re.compile(
    r"""(?:
          ALTER\s+(?:DATABASE|SCHEMA|TABLE)\b
        | CREATE\s+(?:DATABASE|SCHEMA|EXTERNAL\s+TABLE)\b
        | CREATE\s+TABLE\b(?!.*\bAS\s*(?:SELECT|WITH|VALUES|\())
        | DROP\s+(?:DATABASE|SCHEMA|TABLE)\b
        | MSCK\s+REPAIR\b
        | SHOW\b
        | DESC(?:RIBE)?\b
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


def is_hive_statement(query: str) -> bool:
    body = query[_LEADING_COMMENTS.match(query).end() :]
    return _HIVE_STATEMENT.match(body) is not None


def tag_query(query: str, tags: dict[str, str]) -> str:
    """The query with the task's comment, or unchanged where a comment could break it or make it
    too long for Athena."""
    if is_hive_statement(query):
        return query
    tagged = add_sql_comment(query, tags)
    return tagged if len(tagged.encode()) <= MAX_QUERY_BYTES else query


# ---------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class QueryRun:
    """What Athena reports about one query execution."""

    query_execution_id: str
    state: str | None = None
    statement_type: str | None = None
    scanned_bytes: int | None = None
    result_reused: bool = False
    workgroup: str | None = None
    engine_version: str | None = None
    dpu_count: float | None = None
    engine_time_ms: int | None = None
    submitted: dt.datetime | None = None
    completed: dt.datetime | None = None

    @classmethod
    def from_api(cls, execution: dict[str, Any]) -> QueryRun:
        """From a `QueryExecution` of GetQueryExecution or BatchGetQueryExecution."""
        status = execution.get("Status") or {}
        statistics = execution.get("Statistics") or {}
        return cls(
            query_execution_id=execution["QueryExecutionId"],
            state=status.get("State"),
            statement_type=execution.get("StatementType"),
            scanned_bytes=statistics.get("DataScannedInBytes"),
            result_reused=bool((statistics.get("ResultReuseInformation") or {}).get("ReusedPreviousResult")),
            workgroup=execution.get("WorkGroup"),
            engine_version=(execution.get("EngineVersion") or {}).get("EffectiveEngineVersion"),
            dpu_count=statistics.get("DpuCount"),
            engine_time_ms=statistics.get("EngineExecutionTimeInMillis"),
            submitted=as_utc(status.get("SubmissionDateTime")),
            completed=as_utc(status.get("CompletionDateTime")),
        )

    @classmethod
    def from_pyathena(cls, execution: Any) -> QueryRun:
        """From PyAthena's result set (or `AthenaQueryExecution`): both expose the fields of the
        GetQueryExecution response PyAthena read while waiting for the query."""

        def field_(name: str) -> Any:
            return getattr(execution, name, None)

        return cls(
            query_execution_id=field_("query_id"),
            state=field_("state"),
            statement_type=field_("statement_type"),
            scanned_bytes=field_("data_scanned_in_bytes"),
            result_reused=bool(field_("reused_previous_result")),
            workgroup=field_("work_group"),
            engine_version=field_("effective_engine_version"),
            dpu_count=field_("dpu_count"),
            engine_time_ms=field_("engine_execution_time_in_millis"),
            submitted=as_utc(field_("submission_date_time")),
            completed=as_utc(field_("completion_date_time")),
        )


def billed_bytes(run: QueryRun) -> tuple[int, str | None]:
    """The bytes Athena bills for the query and, when it bills nothing, why."""
    if run.state == "FAILED":
        return 0, "failed queries are not billed"
    if run.statement_type == "DDL":
        return 0, "DDL statements are not billed"
    if run.result_reused:
        return 0, "the query reused earlier results"
    scanned = max(run.scanned_bytes or 0, 0)
    if run.state == "CANCELLED" and scanned == 0:
        return 0, "cancelled before scanning any data"
    rounded_up = -(-scanned // BILLING_INCREMENT_BYTES) * BILLING_INCREMENT_BYTES
    return max(rounded_up, MINIMUM_BILLED_BYTES), None


def query_usage(run: QueryRun, **attributes: Any) -> Usage:
    """`data_scanned` in billed bytes; a query that had not finished when the task ended is kept,
    unpriced, with its id."""
    submitted_to = attributes.pop("workgroup", None)
    workgroup = run.workgroup or submitted_to
    if run.state in UNFINISHED_STATES:
        return unresolved_usage(
            SOURCE,
            run.query_execution_id,
            f"the query was still {run.state} when the task ended, so its scanned bytes were not known yet",
            workgroup=workgroup,
            state=run.state,
            **attributes,
        )
    billed, not_billed = billed_bytes(run)
    details = {
        "workgroup": workgroup,
        "state": run.state,
        "statement_type": run.statement_type,
        "scanned_bytes": run.scanned_bytes,
        "result_reused": run.result_reused or None,
        "engine_version": run.engine_version,
        "dpu_count": run.dpu_count,
        "engine_time_ms": run.engine_time_ms,
        "not_billed": not_billed,
        **attributes,
    }
    return Usage(
        source=SOURCE,
        metric="data_scanned",
        quantity=Decimal(billed),
        unit="byte",
        resource=workgroup,
        external_id=run.query_execution_id,
        start_time=run.submitted,
        end_time=run.completed,
        attributes={key: value for key, value in details.items() if value is not None},
    )


# --------------------------------------------------------------------------------- AWS calls in time


# ---------------------------------------------------------------------------------- pending queries


# This process's ways to read statistics, by key: through the very hook (or PyAthena connection) that
# ran the query. A query carried across a deferral, into a process that has none, is read through a
# new hook on its Airflow connection.
_live_clients: dict[str, Callable[[Any], Any]] = {}


@dataclass(frozen=True)
class PendingQuery:
    """A query whose statistics are read at the task's end; plain values, so it survives a deferral."""

    query_execution_id: str
    client_key: str
    aws_conn_id: str | None = None
    region_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.query_execution_id, reason, **self.attributes)


def hook_client(hook: Any) -> str:
    """Statistics read through the hook's own connection, region and endpoint."""

    def create(config: Any) -> Any:
        return hook.get_client_type(region_name=hook.region_name, config=hook.config.merge(config))

    key = f"hook:{getattr(hook, 'aws_conn_id', None)}:{hook.region_name}"
    _live_clients[key] = create
    return key


def pyathena_client(connection: Any) -> str:
    """Statistics read through the session of a PyAthena connection."""

    def create(config: Any) -> Any:
        base = getattr(connection, "config", None)
        return connection.session.client(
            "athena",
            region_name=connection.region_name,
            endpoint_url=connection.client.meta.endpoint_url,
            config=base.merge(config) if base is not None else config,
        )

    key = f"pyathena:{id(connection)}"
    _live_clients[key] = create
    return key


def connection_client(aws_conn_id: str | None, region_name: str | None) -> Callable[[Any], Any]:
    def create(config: Any) -> Any:
        from airflow.providers.amazon.aws.hooks.athena import AthenaHook

        hook = AthenaHook(aws_conn_id=aws_conn_id, region_name=region_name)
        return hook.get_client_type(region_name=hook.region_name, config=hook.config.merge(config))

    return create


def resolve_queries(items: list[PendingQuery], timeout_seconds: float) -> list[Usage]:
    """The usage of every pending query, one BatchGetQueryExecution per 50 queries of a connection."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[str, dict[str, PendingQuery]] = {}
    for item in items:
        groups.setdefault(item.client_key, {}).setdefault(item.query_execution_id, item)
    usages: list[Usage] = []
    for key, pending in groups.items():
        first = next(iter(pending.values()))
        create = _live_clients.get(key) or connection_client(first.aws_conn_id, first.region_name)
        calls = AwsCalls(create, deadline)
        usages += with_region(_resolve_group(calls, pending), calls)
    return usages


def _resolve_group(calls: AwsCalls, pending: dict[str, PendingQuery]) -> list[Usage]:
    runs: dict[str, QueryRun] = {}
    problems: dict[str, str] = {}
    for chunk in _chunks(list(pending), BATCH_SIZE):
        try:
            response = calls("batch_get_query_execution", QueryExecutionIds=chunk)
        except Exception as error:
            code = error_code(error)
            if code and code not in THROTTLING_CODES:
                # Athena answered, but not to this call: e.g. a role allowed athena:GetQueryExecution
                # only. Ask for each query on its own.
                _get_one_by_one(calls, chunk, runs, problems)
            else:  # no answer, no time left or throttled: more calls would not help
                reason = f"BatchGetQueryExecution failed: {describe_error(error)}"
                problems.update(dict.fromkeys(chunk, reason))
            continue
        for execution in response.get("QueryExecutions", []):
            run = QueryRun.from_api(execution)
            runs[run.query_execution_id] = run
        for unprocessed in response.get("UnprocessedQueryExecutionIds", []):
            problems[unprocessed.get("QueryExecutionId", "")] = (
                f"Athena did not return the query: {unprocessed.get('ErrorCode')}: {unprocessed.get('ErrorMessage')}"
            )
    usages = []
    for query_execution_id, item in pending.items():
        run = runs.get(query_execution_id)
        if run is None:
            reason = problems.get(query_execution_id, "Athena did not return the query's statistics")
            usages.append(item.unresolved(reason))
        else:
            usages.append(query_usage(run, **item.attributes))
    return usages


def _get_one_by_one(
    calls: AwsCalls, ids: list[str], runs: dict[str, QueryRun], problems: dict[str, str]
) -> None:
    for query_execution_id in ids:
        try:
            execution = calls("get_query_execution", QueryExecutionId=query_execution_id)["QueryExecution"]
        except Exception as error:
            problems[query_execution_id] = f"GetQueryExecution failed: {describe_error(error)}"
            continue
        runs[query_execution_id] = QueryRun.from_api(execution)


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# ----------------------------------------------------------------------------- AthenaHook.run_query


def _run_query_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    call_args, call_kwargs, workgroup = guarded_step(
        "tagging an Athena query",
        _tagged_call,
        wrapped,
        session,
        args,
        kwargs,
        default=(args, kwargs, None),
    )
    query_execution_id = wrapped(*call_args, **call_kwargs)
    guarded_step("capturing an Athena query", _keep_query, session, instance, query_execution_id, workgroup)
    return query_execution_id


def _tagged_call(wrapped: Any, session: CaptureSession, args: tuple, kwargs: dict):
    bound = inspect.signature(wrapped).bind(*args, **kwargs)
    query = bound.arguments.get("query")
    # A client request token makes the submission idempotent across retries: a new try's comment
    # would change the query text and turn the retry into an error, so such queries go untagged.
    if isinstance(query, str) and not bound.arguments.get("client_request_token") and conf.tagging_on(SOURCE):
        bound.arguments["query"] = tag_query(query, session.tags)
    return bound.args, bound.kwargs, bound.arguments.get("workgroup")


def _keep_query(session: CaptureSession, hook: Any, query_execution_id: Any, workgroup: Any) -> None:
    if isinstance(query_execution_id, str) and query_execution_id:
        attributes = {"workgroup": workgroup} if isinstance(workgroup, str) else {}
        pending = PendingQuery(
            query_execution_id,
            hook_client(hook),
            getattr(hook, "aws_conn_id", None),
            hook.region_name,
            attributes,
        )
        session.defer(resolve_queries, pending)


# --------------------------------------------------------------------------- AthenaSQLHook (PyAthena)


class AthenaSqlEngine(SqlEngine):
    source = SOURCE

    def tag(self, sql: str, session: CaptureSession, hook: Any) -> str:
        # PyAthena's %-formatting with parameters is handled for every driver in instrumentation/sql.py
        return tag_query(sql, session.tags)

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        cursor = statement.cursor
        query_execution_id = getattr(cursor, "query_id", None)
        if not query_execution_id:
            return  # nothing reached Athena
        attributes = {"conn_id": statement.conn_id} if statement.conn_id else {}
        run = _pyathena_run(cursor)
        if run is None or run.query_execution_id != query_execution_id:
            # a failed or cancelled query leaves no statistics on the cursor: read them at the end
            connection = cursor.connection
            hook = statement.hook
            pending = PendingQuery(
                query_execution_id,
                pyathena_client(connection),
                getattr(hook, "aws_conn_id", None),
                getattr(connection, "region_name", None),
                attributes,
            )
            session.defer(resolve_queries, pending)
            return
        if run.submitted is not None and run.submitted < statement.start_time - dt.timedelta(seconds=1):
            # PyAthena's own cache answered with an earlier query: nothing new ran
            run = replace(run, result_reused=True)
            attributes["answered_by"] = "pyathena_cache"
        session.record(query_usage(run, **attributes))


def _pyathena_run(cursor: Any) -> QueryRun | None:
    result_set = getattr(cursor, "result_set", None)
    return QueryRun.from_pyathena(result_set) if result_set is not None else None


class AthenaQueries(Instrumentation):
    name = "athena"
    sources = (SOURCE,)
    modules = ("airflow.providers.amazon.aws.hooks.athena",)

    def patch(self, module: Any) -> None:
        self.wrap(module.AthenaHook, "run_query", _run_query_wrapper)


SQL_ENGINE = AthenaSqlEngine()
