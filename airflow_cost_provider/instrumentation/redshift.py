"""Amazon Redshift statements: tagged where they are sent, priced as the compute they held.

Data API (`RedshiftDataHook.execute_query`, which `RedshiftDataOperator` calls): every SQL text gets
a sqlcommenter comment, the statement gets a `StatementName` (`dag.task.try`) unless the caller gave
one, and its id is kept. At the task's end DescribeStatement gives each statement's duration, its
Redshift query ids and where it ran:

- Redshift Serverless: `rpu_time` = the workgroup's base capacity (GetWorkgroup) x the duration, in
  RPU-seconds.
- a provisioned cluster: `node_time` = the cluster's nodes (DescribeClusters) x the duration, in
  node-seconds, priced per node-hour of its node type.

Both are the statement's share of compute the warehouse is billed for whatever runs on it, so their
method is `allocated`. Workgroups and clusters are looked up once per process and kept for an hour.

`RedshiftSQLHook` (redshift_connector): the DB-API wrapper tags and times each statement; its query id
comes from `PG_LAST_QUERY_ID()` on the same connection, and it is priced as node-seconds when
`[cost_provider] connection_pricing` gives the connection's `node_type` and `nodes`.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.aws import AwsCalls, as_utc, describe_error
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    seconds,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import add_sql_comment, statement_name

SOURCE = "redshift"
UNFINISHED_STATUSES = ("SUBMITTED", "PICKED", "STARTED")
CAPACITY_TTL_SECONDS = 3600.0  # clusters are resized and base capacity changed rarely


# ------------------------------------------------------------------------------------ capacity cache

_capacity: dict[tuple[Any, ...], tuple[float, Any]] = {}
_capacity_lock = threading.Lock()


def _cached(key: tuple[Any, ...], look_up: Any) -> Any:
    now = time.monotonic()
    with _capacity_lock:
        hit = _capacity.get(key)
    if hit is not None and now - hit[0] < CAPACITY_TTL_SECONDS:
        return hit[1]
    value = look_up()
    with _capacity_lock:
        _capacity[key] = (now, value)
    return value


def clear_capacity_cache() -> None:
    with _capacity_lock:
        _capacity.clear()


class Capacity:
    """The compute behind a workgroup or a cluster, read through the hook's connection; a failed
    look-up is not repeated for the other statements of the same finalize."""

    def __init__(self, hook: Any, deadline: float) -> None:
        self._key = connection_key(hook)
        self._clusters = AwsCalls(_service_client(hook, "redshift"), deadline)
        self._workgroups = AwsCalls(_service_client(hook, "redshift-serverless"), deadline)
        self._failed: dict[tuple[str, str], str] = {}

    def base_rpus(self, workgroup: str) -> Decimal:
        def look_up() -> Decimal:
            found = self._workgroups("get_workgroup", workgroupName=workgroup)["workgroup"]
            return Decimal(str(found["baseCapacity"]))

        return self._once("GetWorkgroup", workgroup, look_up)

    def nodes(self, cluster: str) -> tuple[str, int]:
        def look_up() -> tuple[str, int]:
            (found,) = self._clusters("describe_clusters", ClusterIdentifier=cluster)["Clusters"]
            return str(found["NodeType"]), int(found["NumberOfNodes"])

        return self._once("DescribeClusters", cluster, look_up)

    def _once(self, operation: str, name: str, look_up: Any) -> Any:
        if (operation, name) in self._failed:
            raise LookupError(self._failed[operation, name])
        try:
            return _cached((*self._key, operation, name), look_up)
        except Exception as error:
            self._failed[operation, name] = f"{operation} for {name!r} failed: {describe_error(error)}"
            raise LookupError(self._failed[operation, name]) from None


def connection_key(hook: Any) -> tuple[Any, ...]:
    return (getattr(hook, "aws_conn_id", None), hook.region_name)


def _data_client(hook: Any) -> Any:
    def create(config: Any) -> Any:
        return hook.get_client_type(region_name=hook.region_name, config=hook.config.merge(config))

    return create


def _service_client(hook: Any, service: str) -> Any:
    """A client of another service through the hook's connection, its per-service endpoint included."""

    def create(config: Any) -> Any:
        return hook.get_session(region_name=hook.region_name).client(
            service,
            region_name=hook.region_name,
            endpoint_url=hook.conn_config.get_service_endpoint_url(service_name=service),
            config=hook.config.merge(config),
            verify=hook.verify,
        )

    return create


# ------------------------------------------------------------------------------- pending statements


# This process's hooks, by connection: statistics are read through the hook that sent the statement.
# A statement carried across a deferral, into a process that has none, is read through a new hook on
# its Airflow connection.
_live_hooks: dict[str, Any] = {}


@dataclass(frozen=True)
class PendingStatement:
    """A Data API statement whose statistics are read at the task's end; plain values, so it
    survives a deferral."""

    statement_id: str
    aws_conn_id: str | None = None
    region_name: str | None = None
    cluster_identifier: str | None = None
    workgroup_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def connection(self) -> str:
        return f"{self.aws_conn_id}:{self.region_name}"

    def unresolved(self, reason: str, **attributes: Any) -> Usage:
        return unresolved_usage(SOURCE, self.statement_id, reason, **{**self.attributes, **attributes})


def keep_hook(hook: Any) -> tuple[str | None, str | None]:
    aws_conn_id, region_name = getattr(hook, "aws_conn_id", None), hook.region_name
    _live_hooks[f"{aws_conn_id}:{region_name}"] = hook
    return aws_conn_id, region_name


def _hook_for(item: PendingStatement) -> Any:
    hook = _live_hooks.get(item.connection)
    if hook is None:
        from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook

        hook = RedshiftDataHook(aws_conn_id=item.aws_conn_id, region_name=item.region_name)
    return hook


def resolve_statements(items: list[PendingStatement], timeout_seconds: float) -> list[Usage]:
    """DescribeStatement for each statement (the Data API has no batch form), then the capacity of
    each workgroup or cluster they ran on, once."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[str, list[PendingStatement]] = {}
    for item in items:
        groups.setdefault(item.connection, []).append(item)
    usages: list[Usage] = []
    for group in groups.values():
        hook = _hook_for(group[0])
        describe = AwsCalls(_data_client(hook), deadline)
        capacity = Capacity(hook, deadline)
        for item in group:
            try:
                described = describe("describe_statement", Id=item.statement_id)
            except Exception as error:
                usages.append(item.unresolved(f"DescribeStatement failed: {describe_error(error)}"))
                continue
            usages.append(statement_usage(item, described, capacity))
    return usages


def statement_usage(item: PendingStatement, described: dict[str, Any], capacity: Capacity) -> Usage:
    status = described.get("Status")
    attributes: dict[str, Any] = {**item.attributes, "status": status}
    attributes.update(query_id_attributes(_redshift_query_ids(described)))
    if status in UNFINISHED_STATUSES:
        return item.unresolved(
            f"the statement was still {status} when the task ended, so its duration was not known yet",
            **attributes,
        )
    timing = {
        "external_id": item.statement_id,
        "start_time": as_utc(described.get("CreatedAt")),
        "end_time": as_utc(described.get("UpdatedAt")),
    }
    duration_ns = described.get("Duration")
    if isinstance(duration_ns, int) and duration_ns >= 0:
        duration = seconds(duration_ns)
    elif timing["start_time"] and timing["end_time"]:
        # a failed or aborted statement may report no duration: its time on the warehouse still counts
        duration = Decimal(str((timing["end_time"] - timing["start_time"]).total_seconds()))
        attributes["duration_from"] = "CreatedAt..UpdatedAt"
    else:
        return item.unresolved(
            f"DescribeStatement reported no duration for a {status} statement", **attributes
        )
    workgroup = described.get("WorkgroupName") or item.workgroup_name
    cluster = described.get("ClusterIdentifier") or item.cluster_identifier
    if workgroup:
        try:
            base_rpus = capacity.base_rpus(workgroup)
        except LookupError as error:
            return execution_time(
                duration,
                workgroup,
                attributes,
                f"the workgroup's base capacity is unknown: {error}",
                **timing,
            )
        return Usage(
            source=SOURCE,
            metric="rpu_time",
            quantity=base_rpus * duration,
            unit="RPU-second",
            resource=workgroup,
            attributes={
                **attributes,
                "workgroup": workgroup,
                "base_capacity": str(base_rpus),
                METHOD_ATTRIBUTE: "allocated",
            },
            **timing,
        )
    if cluster:
        try:
            node_type, nodes = capacity.nodes(cluster)
        except LookupError as error:
            return execution_time(
                duration, cluster, attributes, f"the cluster's nodes are unknown: {error}", **timing
            )
        return node_time(
            duration, cluster, node_type, nodes, {**attributes, "cluster_identifier": cluster}, **timing
        )
    return execution_time(
        duration, None, attributes, "DescribeStatement named neither a workgroup nor a cluster", **timing
    )


def node_time(
    duration: Decimal,
    resource: str | None,
    node_type: str,
    nodes: int,
    attributes: dict[str, Any],
    **timing: Any,
) -> Usage:
    """The cluster's nodes held for the statement's duration, priced per node-hour of its node type."""
    return Usage(
        source=SOURCE,
        metric="node_time",
        quantity=nodes * duration,
        unit="node-second",
        resource=resource,
        attributes={**attributes, "node_type": node_type, "nodes": nodes, METHOD_ATTRIBUTE: "allocated"},
        **timing,
    )


def execution_time(
    duration: Decimal, resource: str | None, attributes: dict[str, Any], why: str, **timing: Any
) -> Usage:
    """The statement's duration alone, when the compute it ran on is not known: kept, unpriced."""
    return Usage(
        source=SOURCE,
        metric="execution_time",
        quantity=duration,
        unit="second",
        resource=resource,
        attributes={**attributes, UNPRICED_HINT_ATTRIBUTE: why},
        **timing,
    )


def _redshift_query_ids(described: dict[str, Any]) -> list[int]:
    """The ids to find the statement by in SYS_QUERY_HISTORY and STL_QUERY (one per SQL of a batch);
    0 or -1 mean the statement ran on the leader node only."""
    candidates = [described.get("RedshiftQueryId")]
    candidates += [sub.get("RedshiftQueryId") for sub in described.get("SubStatements") or []]
    return [value for value in candidates if isinstance(value, int) and value > 0]


def query_id_attributes(query_ids: list[int]) -> dict[str, Any]:
    """`redshift_query_id`, or `redshift_query_ids` ("1,2,3") for a batch: scalar attributes."""
    if len(query_ids) == 1:
        return {"redshift_query_id": query_ids[0]}
    return {"redshift_query_ids": ",".join(map(str, query_ids))} if query_ids else {}


# -------------------------------------------------------------------- RedshiftDataHook.execute_query


@dataclass
class _Submission:
    statement_id: str | None = None


# The statement being waited for inside execute_query: if it fails, execute_query raises before it
# returns the id, and the statement's compute is spent all the same.
_submission: ContextVar[_Submission | None] = ContextVar("cost_provider_redshift_submission", default=None)


def _execute_query_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    call_args, call_kwargs, details = guarded_step(
        "tagging a Redshift statement",
        _tagged_call,
        wrapped,
        session,
        args,
        kwargs,
        default=(args, kwargs, {}),
    )
    submission = _Submission()
    token = _submission.set(submission)
    try:
        result = wrapped(*call_args, **call_kwargs)
    except BaseException:
        if submission.statement_id:
            guarded_step(
                "capturing a Redshift statement", _keep, session, instance, submission.statement_id, details
            )
        raise
    finally:
        _submission.reset(token)
    statement_id = getattr(result, "statement_id", result)  # older providers return the id itself
    guarded_step("capturing a Redshift statement", _keep, session, instance, statement_id, details)
    return result


def _wait_for_results_wrapper(wrapped, instance, args, kwargs):
    submission = _submission.get()
    if submission is not None:
        guarded_step("capturing a Redshift statement", _note_statement, submission, args, kwargs)
    return wrapped(*args, **kwargs)


def _note_statement(submission: _Submission, args: tuple, kwargs: dict) -> None:
    statement_id = args[0] if args else kwargs.get("statement_id")
    if isinstance(statement_id, str):
        submission.statement_id = statement_id


def _tagged_call(wrapped: Any, session: CaptureSession, args: tuple, kwargs: dict):
    signature = inspect.signature(wrapped)
    bound = signature.bind(*args, **kwargs)
    arguments = bound.arguments
    if conf.tagging_on(SOURCE):
        sql = arguments.get("sql")
        if isinstance(sql, str):
            arguments["sql"] = add_sql_comment(sql, session.tags)
        elif isinstance(sql, list) and all(isinstance(each, str) for each in sql):
            arguments["sql"] = [add_sql_comment(each, session.tags) for each in sql]
        if "statement_name" in signature.parameters and not arguments.get("statement_name"):
            arguments["statement_name"] = statement_name(session.tags)
    details = {
        "cluster_identifier": arguments.get("cluster_identifier"),
        "workgroup_name": arguments.get("workgroup_name"),
        "attributes": {
            key: value
            for key, value in (
                ("database", arguments.get("database")),
                ("statement_name", arguments.get("statement_name")),
            )
            if isinstance(value, str)
        },
    }
    return bound.args, bound.kwargs, details


def _keep(session: CaptureSession, hook: Any, statement_id: Any, details: dict[str, Any]) -> None:
    if isinstance(statement_id, str) and statement_id:
        aws_conn_id, region_name = keep_hook(hook)
        session.defer(resolve_statements, PendingStatement(statement_id, aws_conn_id, region_name, **details))


# ------------------------------------------------------------------ RedshiftSQLHook (redshift_connector)


class RedshiftSqlEngine(SqlEngine):
    source = SOURCE

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        attributes: dict[str, Any] = {"conn_id": statement.conn_id}
        query_id = None
        if not statement.failed:  # an aborted transaction answers nothing until it is rolled back
            query_id = guarded_step("reading a Redshift query id", last_query_id, statement.cursor)
        if query_id is not None:
            attributes["redshift_query_id"] = query_id
        if (rows := statement.row_count()) is not None:
            attributes["row_count"] = rows
        if statement.failed:
            attributes["failed"] = True
        timing = {
            "external_id": str(query_id) if query_id is not None else None,
            "start_time": statement.start_time,
            "end_time": statement.end_time,
        }
        pricing = conf.pricing_for_connection(statement.conn_id)
        node_type, nodes = pricing.get("node_type"), _positive_int(pricing.get("nodes"))
        if node_type and nodes:
            session.record(
                node_time(statement.elapsed, statement.conn_id, node_type, nodes, attributes, **timing)
            )
            return
        why = (
            f"connection {statement.conn_id!r} has no node_type and nodes in [cost_provider] connection_pricing; "
            'set e.g. {"' + str(statement.conn_id) + '": {"node_type": "ra3.xlplus", "nodes": "2"}}'
        )
        session.record(execution_time(statement.elapsed, statement.conn_id, attributes, why, **timing))


def last_query_id(cursor: Any) -> int | None:
    """The Redshift query id of the statement the connection just ran. Asked on a second cursor of the
    same connection (the id is per session): the statement's own cursor still holds the rows the
    hook is about to fetch."""
    connection = getattr(cursor, "connection", None)
    if connection is None:
        return None
    with suppress(), contextlib.closing(connection.cursor()) as lookup:
        lookup.execute("SELECT PG_LAST_QUERY_ID()")
        row = lookup.fetchone()
    value = row[0] if row else None
    return value if isinstance(value, int) and value > 0 else None


def _positive_int(value: Any) -> int | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return int(number) if number > 0 and number == number.to_integral_value() else None


class RedshiftQueries(Instrumentation):
    name = "redshift"
    sources = (SOURCE,)
    modules = ("airflow.providers.amazon.aws.hooks.redshift_data",)

    def patch(self, module: Any) -> None:
        self.wrap(module.RedshiftDataHook, "execute_query", _execute_query_wrapper)
        self.wrap(module.RedshiftDataHook, "wait_for_results", _wait_for_results_wrapper)


SQL_ENGINE = RedshiftSqlEngine()
