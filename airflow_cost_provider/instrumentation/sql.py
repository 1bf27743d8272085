"""Statements run through a DB-API hook (`DbApiHook._run_command`, which `run`, `get_records`,
`get_first` and `SQLExecuteQueryOperator` all go through): tagged with a sqlcommenter comment, timed,
and measured by the engine's own handler.

Statements that bypass `_run_command` (dataframes, `insert_rows`, SQLAlchemy engines, hook classes
with their own `_run_command` or `run`) are captured by sql_paths.py through the same engines.

Engines with their own statistics (Snowflake, Trino, Databricks SQL, Athena, Redshift, Azure SQL)
provide a `SqlEngine` in their module; every other engine (PostgreSQL, MySQL, ...) is priced as the
instance rate of its connection x the statement's execution time.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import wrapt

from airflow_cost_provider import conf
from airflow_cost_provider.capture.hook_lineage import source_of
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import Instrumentation, guarded_step, seconds, task_session
from airflow_cost_provider.instrumentation.registry import TRIGGERS
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import append_comment

# source -> module holding that engine's `SQL_ENGINE`
ENGINE_MODULES = {
    "bigquery": "airflow_cost_provider.instrumentation.bigquery",
    "snowflake": "airflow_cost_provider.instrumentation.snowflake",
    "trino": "airflow_cost_provider.instrumentation.trino",
    "databricks": "airflow_cost_provider.instrumentation.databricks_sql",
    "athena": "airflow_cost_provider.instrumentation.athena",
    "redshift": "airflow_cost_provider.instrumentation.redshift",
    "azure_sql": "airflow_cost_provider.instrumentation.azure_sql",
    "dremio": "airflow_cost_provider.instrumentation.dremio",
}

# Hook modules whose classes define their own `_run_command`; each is patched when it is imported.
HOOK_MODULES = TRIGGERS["sql"]

# Every comment the provider appends starts with the first identity key, in sorted order.
COMMENT_START = "/*airflow_dag_id="

# True while a statement is being run: an override calling super()._run_command is one statement.
_in_statement: ContextVar[bool] = ContextVar("cost_provider_in_statement", default=False)


@dataclass
class Scope:
    """The outermost hook method running whose statements may bypass `_run_command` (sql_paths.py):
    its name, its hook and how many statements it captured."""

    path: str
    hook: Any
    captured: int = 0


_scope: ContextVar[Scope | None] = ContextVar("cost_provider_sql_scope", default=None)


def count_captured() -> str | None:
    """Count a captured statement in the running scope; the scope's method name, or None."""
    scope = _scope.get()
    if scope is None:
        return None
    scope.captured += 1
    return scope.path


@dataclass
class Statement:
    """One statement as the wrapper saw it."""

    hook: Any
    cursor: Any
    conn_id: str | None
    start_time: dt.datetime
    elapsed: Decimal  # seconds, measured by the client around execute()
    failed: bool
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def end_time(self) -> dt.datetime:
        return self.start_time + dt.timedelta(seconds=float(self.elapsed))

    def row_count(self) -> int | None:
        count = getattr(self.cursor, "rowcount", None)
        return count if isinstance(count, int) and count >= 0 else None


class SqlEngine:
    """How one engine's statements are tagged and measured. The default prices execution time at the
    rate of the connection's instance, from [cost_provider] connection_pricing."""

    source = "sql"

    def __init__(self, source: str | None = None) -> None:
        if source:
            self.source = source

    def tag(self, sql: str, session: CaptureSession, hook: Any) -> str:
        return append_comment(sql, session.sql_comment)

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        session.record(runtime_usage(self.source, statement))


def runtime_usage(source: str, statement: Statement, **attributes: Any) -> Usage:
    """`instance_time` in instance-seconds: the statement held the instance for its execution time."""
    pricing = conf.pricing_for_connection(statement.conn_id)
    usage_attributes: dict[str, Any] = {
        "conn_id": statement.conn_id,
        METHOD_ATTRIBUTE: "runtime_rate",
        UNPRICED_HINT_ATTRIBUTE: f"connection {statement.conn_id!r} has no instance in [cost_provider] "
        'connection_pricing; set e.g. {"' + str(statement.conn_id) + '": {"instance_type": "db.r6g.large"}}',
        **pricing,
        **statement.attributes,
        **attributes,
    }
    if (rows := statement.row_count()) is not None:
        usage_attributes["row_count"] = rows
    if statement.failed:
        usage_attributes["failed"] = True
    return Usage(
        source=source,
        metric="instance_time",
        quantity=statement.elapsed,
        unit="instance-second",
        resource=statement.conn_id,
        start_time=statement.start_time,
        end_time=statement.end_time,
        attributes=usage_attributes,
    )


_engines: dict[type, SqlEngine] = {}


def engine_for(hook: Any) -> SqlEngine:
    engine = _engines.get(type(hook))
    if engine is None:
        source = source_of(hook)
        module = ENGINE_MODULES.get(source)
        engine = importlib.import_module(module).SQL_ENGINE if module else SqlEngine(source)
        _engines[type(hook)] = engine
    return engine


def conn_id_of(hook: Any) -> str | None:
    try:
        return hook.get_conn_id()
    except Exception:
        return getattr(hook, getattr(hook, "conn_name_attr", ""), None)


class TimedCursor(wrapt.ObjectProxy):
    """The hook's cursor, timing its execute calls: a statement's cost is its execution, not the
    hook's logging and lineage work around it."""

    def __init__(self, cursor: Any) -> None:
        super().__init__(cursor)
        self._self_start_time: dt.datetime | None = None
        self._self_elapsed_ns = 0

    def _self_timed(self, method: Any, args: tuple, kwargs: dict) -> Any:
        if self._self_start_time is None:
            self._self_start_time = dt.datetime.now(dt.timezone.utc)
        started = time.perf_counter_ns()
        try:
            return method(*args, **kwargs)
        finally:
            self._self_elapsed_ns += time.perf_counter_ns() - started

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_timed(self.__wrapped__.execute, args, kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_timed(self.__wrapped__.executemany, args, kwargs)


def _prepare_call(engine: SqlEngine, session: CaptureSession, hook: Any, args: tuple, kwargs: dict):
    """The call's arguments with the cursor timed and the statement tagged."""
    args, kwargs = list(args), dict(kwargs)
    cursor = None
    if args:
        cursor = args[0] = TimedCursor(args[0])
    elif kwargs.get("cur") is not None:
        cursor = kwargs["cur"] = TimedCursor(kwargs["cur"])
    if conf.tagging_on(engine.source):
        parameters = args[2] if len(args) >= 3 else kwargs.get("parameters")
        # drivers with %-style placeholders format the statement when given parameters: the comment's
        # URL-encoded `%` must reach the server as itself
        escape = bool(parameters) and _percent_placeholders(args[0] if args else kwargs.get("cur"))
        if len(args) >= 2 and isinstance(args[1], str):
            args[1] = _escaped(engine.tag(args[1], session, hook), escape)
        elif isinstance(kwargs.get("sql_statement"), str):
            kwargs["sql_statement"] = _escaped(engine.tag(kwargs["sql_statement"], session, hook), escape)
    return tuple(args), kwargs, cursor


@functools.cache
def _driver_paramstyle(cursor_type: type) -> str | None:
    driver = sys.modules.get(cursor_type.__module__.split(".")[0])
    return getattr(driver, "paramstyle", None)


def _percent_placeholders(cursor: Any) -> bool:
    while hasattr(cursor, "__wrapped__"):  # our own proxies, possibly nested
        cursor = cursor.__wrapped__
    return _driver_paramstyle(type(cursor)) in ("format", "pyformat")


def _escaped(tagged: str, escape: bool) -> str:
    """Double the `%` of the appended comment (and only of it)."""
    if not escape:
        return tagged
    start = tagged.rfind(COMMENT_START)
    end = tagged.find("*/", start)
    if start < 0 or end < 0:
        return tagged
    return tagged[:start] + tagged[start:end].replace("%", "%%") + tagged[end:]


def _run_command_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or _in_statement.get():
        return wrapped(*args, **kwargs)
    engine = guarded_step("capturing a SQL statement", engine_for, instance)
    if engine is None or not conf.source_enabled(engine.source):
        return wrapped(*args, **kwargs)
    call_args, call_kwargs, cursor = guarded_step(
        f"tagging a {engine.source} statement",
        _prepare_call,
        engine,
        session,
        instance,
        args,
        kwargs,
        default=(args, kwargs, None),
    )
    token = _in_statement.set(True)
    start_time = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter_ns()
    failed = True
    try:
        result = wrapped(*call_args, **call_kwargs)
        failed = False
        return result
    finally:
        elapsed = time.perf_counter_ns() - started
        _in_statement.reset(token)
        guarded_step(
            f"capturing a {engine.source} statement",
            _measure,
            engine,
            session,
            instance,
            cursor,
            start_time,
            elapsed,
            failed,
        )


def _measure(engine, session, hook, cursor, start_time, elapsed, failed) -> None:
    if isinstance(cursor, TimedCursor) and cursor._self_start_time is not None:
        start_time, elapsed = cursor._self_start_time, cursor._self_elapsed_ns
        cursor = cursor.__wrapped__
    statement = Statement(hook, cursor, conn_id_of(hook), start_time, seconds(elapsed), failed)
    if (path := count_captured()) is not None:
        statement.attributes["sql_path"] = path
    engine.measure(session, statement)


class SqlStatements(Instrumentation):
    name = "sql"
    modules = HOOK_MODULES

    def __init__(self) -> None:
        super().__init__()
        self._classes: set[type] = set()  # hook classes whose own methods are instrumented

    def patch(self, module: Any) -> None:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        for value in list(vars(module).values()):
            if (
                isinstance(value, type)
                and issubclass(value, DbApiHook)
                and value.__module__ == module.__name__
                and "_run_command" in value.__dict__
            ):
                self.wrap(value, "_run_command", _run_command_wrapper)
        if module.__name__ == HOOK_MODULES[0]:
            # the statements that bypass _run_command (sql_paths.py): each hook class is instrumented
            # when its first instance is created
            self.wrap(DbApiHook, "__init__", self._hook_created)

    def _hook_created(self, wrapped, instance, args, kwargs):
        result = wrapped(*args, **kwargs)
        if type(instance) not in self._classes:
            guarded_step("instrumenting a DB-API hook class", self.instrument_class, type(instance))
        return result

    def instrument_class(self, cls: type) -> None:
        """Wrap the methods of `cls` and its hook bases through which statements bypass _run_command."""
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        from airflow_cost_provider.instrumentation import sql_paths

        with self._lock:
            if not self.active or cls in self._classes:
                return
            for klass in cls.__mro__:
                if isinstance(klass, type) and issubclass(klass, DbApiHook) and klass not in self._classes:
                    for attribute, wrapper in sql_paths.wrappers_for(klass):
                        self.wrap(klass, attribute, wrapper)  # once: what this wrapped is skipped
                    self._classes.add(klass)

    def uninstrument(self) -> None:
        with self._lock:
            super().uninstrument()
            self._classes.clear()
            if "airflow_cost_provider.instrumentation.sql_paths" in sys.modules:
                sys.modules["airflow_cost_provider.instrumentation.sql_paths"].stop_listening()
