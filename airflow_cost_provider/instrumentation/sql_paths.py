"""Statements a DB-API hook runs without `_run_command`: dataframes (`get_df`, `get_df_by_chunks`,
`get_pandas_df`, `get_pandas_df_by_chunks`), `insert_rows`, SQLAlchemy engines made by
`get_sqlalchemy_engine()` or from `get_uri()`, and hook classes whose own `_run_command` or `run`
replaces the provider's.

Each is tagged and measured like a statement through `_run_command`, by the same engine handler
(sql.py), one statement per cursor `execute` / `executemany`:

- while one of those methods runs, the connection the hook opens (`get_conn`, shadowed on the hook
  instance for that time) is handed out behind a proxy whose cursors tag and time their statements;
- an engine made by `get_sqlalchemy_engine()`, or created from the URI `get_uri()` returned, is known
  by its hook; SQLAlchemy's `before_cursor_execute` / `after_cursor_execute` / `handle_error` events
  tag and time its statements;
- a hook class's own `_run_command` is wrapped like the provider's, its own `run` scoped like the
  methods above.

A statement is captured once: inside `_run_command` the cursor proxy and the engine events stand
aside, and the engine events stand aside for a cursor the proxy already captures. A scoped call that
captured nothing although it was given SQL (its statements ran on a connection the hook did not open)
is kept as one unpriced query with the reason.

Hook classes are instrumented when their first instance is created (a class a DAG file defines is
covered as well as the providers'); uninstrument() restores every method.
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any

import wrapt

from airflow_cost_provider import conf
from airflow_cost_provider.capture.safety import report_failure
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import guarded_step, seconds, task_session, unresolved_usage
from airflow_cost_provider.instrumentation.sql import (
    Scope,
    SqlEngine,
    Statement,
    _escaped,
    _in_statement,
    _percent_placeholders,
    _run_command_wrapper,
    _scope,
    conn_id_of,
    count_captured,
    engine_for,
)

# Methods whose statements run on a connection from `get_conn` (or an engine from
# `get_sqlalchemy_engine`) instead of through `_run_command`.
SCOPED_METHODS = (
    "get_pandas_df",
    "get_pandas_df_by_chunks",
    "get_df",
    "get_df_by_chunks",
    "_get_pandas_df",
    "_get_polars_df",
    "_get_pandas_df_by_chunks",
    "_get_polars_df_by_chunks",
    "insert_rows",
)
PROVIDER_MODULES = "airflow.providers."
ENGINE_HOOK_ATTRIBUTE = "_cost_provider_hook"
CAPTURE_ATTRIBUTE = "_cost_provider_capture"
# URIs handed out by get_uri() that an engine may be created from; the newest are kept
MAX_REMEMBERED_URIS = 64
_PARAMETER_KEYWORDS = ("params", "parameters", "vars", "args", "seq_of_parameters")


# ---------------------------------------------------------------- scoped methods


def _given_sql(path: str, args: tuple, kwargs: dict) -> bool:
    """Whether the call asked for at least one statement (an insert_rows of no rows runs none)."""
    if path == "insert_rows":
        rows = args[1] if len(args) >= 2 else kwargs.get("rows")
        return isinstance(rows, (list, tuple)) and len(rows) > 0
    sql = args[0] if args else kwargs.get("sql")
    if isinstance(sql, str):
        return bool(sql.strip())
    return isinstance(sql, (list, tuple)) and any(isinstance(s, str) and s.strip() for s in sql)


def _scope_wrapper(wrapped, instance, args, kwargs):
    outer = _scope.get()
    if outer is not None and outer.hook is instance:
        return wrapped(*args, **kwargs)
    scope = outer or Scope(getattr(wrapped, "__name__", "sql"), instance)
    with _scoped(scope, instance):
        result = wrapped(*args, **kwargs)
    if outer is not None:  # another hook's method inside a scope: its statements count there
        return result
    if inspect.isgenerator(result):
        # get_df_by_chunks: the statement runs while the caller iterates
        return _scoped_iteration(result, scope, instance, _given_sql(scope.path, args, kwargs))
    if _given_sql(scope.path, args, kwargs):
        guarded_step("capturing a SQL statement", _record_uncaptured, scope)
    return result


@contextmanager
def _scoped(scope: Scope, hook: Any):
    """The scope set, and the hook's `get_conn` shadowed on the instance (not patched on its class,
    which other instrumentations wrap too): the connections it opens meanwhile capture their statements."""
    token = _scope.set(scope)
    shadowed = guarded_step("capturing a SQL connection", _shadow_get_conn, hook, default=False)
    try:
        yield
    finally:
        _scope.reset(token)
        if shadowed:
            hook.__dict__.pop("get_conn", None)


def _shadow_get_conn(hook: Any) -> bool:
    instance_attributes = getattr(hook, "__dict__", None)
    if instance_attributes is None or "get_conn" in instance_attributes:
        return False  # already shadowed (by an outer scope) or set by the user
    get_conn = type(hook).get_conn

    def capturing_get_conn(*args: Any, **kwargs: Any) -> Any:
        connection = get_conn(hook, *args, **kwargs)
        if _scope.get() is None or isinstance(connection, CapturingConnection) or task_session() is None:
            return connection  # e.g. kept as an engine's creator= and called after the method returned
        return guarded_step(
            "capturing a SQL connection", CapturingConnection, connection, hook, default=connection
        )

    instance_attributes["get_conn"] = capturing_get_conn
    return True


def _scoped_iteration(generator: Any, scope: Scope, hook: Any, given_sql: bool):
    try:
        while True:
            with _scoped(scope, hook):
                try:
                    item = next(generator)
                except StopIteration:
                    break
            yield item
        if given_sql:
            guarded_step("capturing a SQL statement", _record_uncaptured, scope)
    finally:
        generator.close()


def _record_uncaptured(scope: Scope) -> None:
    """A scoped call that ran SQL the proxies never saw: one query, unpriced, with the reason."""
    if scope.captured:
        return
    session = task_session()
    if session is None:
        return
    engine = engine_for(scope.hook)
    if not conf.source_enabled(engine.source):
        return
    hook_class = type(scope.hook).__name__
    session.record(
        unresolved_usage(
            engine.source,
            None,
            f"{hook_class}.{scope.path} ran its SQL on a connection the hook did not open through "
            "get_conn() or get_sqlalchemy_engine(): it was neither tagged nor measured",
            conn_id=conn_id_of(scope.hook),
            sql_path=scope.path,
        )
    )


# ---------------------------------------------------------------- connections and cursors


class CapturingConnection(wrapt.ObjectProxy):
    """A hook's DB-API connection whose cursors capture their statements."""

    def __init__(self, connection: Any, hook: Any) -> None:
        super().__init__(connection)
        self._self_hook = hook

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return CapturingCursor(self.__wrapped__.cursor(*args, **kwargs), self._self_hook)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        # sqlite3 and psycopg connections run a statement on a cursor of their own: make it ours
        if not hasattr(self.__wrapped__, "execute"):
            raise AttributeError("execute")
        return self.cursor().execute(*args, **kwargs)

    def __enter__(self) -> Any:
        entered = self.__wrapped__.__enter__()
        return self if entered is self.__wrapped__ else entered


class CapturingCursor(wrapt.ObjectProxy):
    """A DB-API cursor tagging, timing and recording each statement it executes."""

    def __init__(self, cursor: Any, hook: Any) -> None:
        super().__init__(cursor)
        self._self_hook = hook

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_capture(self.__wrapped__.execute, args, kwargs, False)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_capture(self.__wrapped__.executemany, args, kwargs, True)

    def __enter__(self) -> Any:
        entered = self.__wrapped__.__enter__()
        return self if entered is self.__wrapped__ else entered

    def _self_capture(self, method: Any, args: tuple, kwargs: dict, many: bool) -> Any:
        session = task_session()
        if session is None or _in_statement.get():
            return self._self_same(method(*args, **kwargs))
        hook = self._self_hook
        engine = guarded_step("capturing a SQL statement", engine_for, hook)
        if engine is None or not conf.source_enabled(engine.source):
            return self._self_same(method(*args, **kwargs))
        args, kwargs = guarded_step(
            f"tagging a {engine.source} statement",
            _tagged_call,
            engine,
            session,
            hook,
            self.__wrapped__,
            args,
            kwargs,
            default=(args, kwargs),
        )
        token = _in_statement.set(True)
        start_time = dt.datetime.now(dt.timezone.utc)
        started = time.perf_counter_ns()
        failed = True
        try:
            result = method(*args, **kwargs)
            failed = False
            return self._self_same(result)
        finally:
            elapsed = time.perf_counter_ns() - started
            _in_statement.reset(token)
            guarded_step(
                f"capturing a {engine.source} statement",
                _measure,
                engine,
                session,
                hook,
                self.__wrapped__,
                start_time,
                elapsed,
                failed,
                {"executemany": True} if many else {},
            )

    def _self_same(self, result: Any) -> Any:
        """psycopg's execute returns its cursor: return this proxy instead, so chained calls stay ours."""
        return self if result is self.__wrapped__ else result


def _tagged_call(
    engine: SqlEngine, session: CaptureSession, hook: Any, cursor: Any, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    if not conf.tagging_on(engine.source) or not args or not isinstance(args[0], str):
        return args, kwargs
    parameters = (
        args[1] if len(args) >= 2 else next((kwargs[k] for k in _PARAMETER_KEYWORDS if k in kwargs), None)
    )
    # %-style drivers format the statement whenever parameters are given, even empty ones
    escape = parameters is not None and _percent_placeholders(cursor)
    return (_escaped(engine.tag(args[0], session, hook), escape), *args[1:]), kwargs


def _measure(
    engine: SqlEngine,
    session: CaptureSession,
    hook: Any,
    cursor: Any,
    start_time: dt.datetime,
    elapsed_ns: int,
    failed: bool,
    attributes: dict[str, Any],
) -> None:
    path = count_captured()
    statement = Statement(hook, cursor, conn_id_of(hook), start_time, seconds(elapsed_ns), failed)
    statement.attributes.update(attributes)
    statement.attributes["sql_path"] = path or "sqlalchemy"
    engine.measure(session, statement)


# ---------------------------------------------------------------- SQLAlchemy engines

_remembered_uris: OrderedDict[tuple, Any] = OrderedDict()
_listening = False


def _url_key(url: Any) -> tuple:
    """Where an engine connects: backend, host, port, database and user (the driver may differ)."""
    return (url.get_backend_name(), url.host, url.port, url.database, url.username)


def _get_sqlalchemy_engine_wrapper(wrapped, instance, args, kwargs):
    engine = wrapped(*args, **kwargs)
    guarded_step("capturing a SQLAlchemy engine", _adopt_engine, engine, instance)
    return engine


def _adopt_engine(engine: Any, hook: Any) -> None:
    if engine.__dict__.get(ENGINE_HOOK_ATTRIBUTE) is None:
        setattr(engine, ENGINE_HOOK_ATTRIBUTE, hook)
    listen()


def _get_uri_wrapper(wrapped, instance, args, kwargs):
    uri = wrapped(*args, **kwargs)
    if task_session() is not None:
        guarded_step("capturing a SQLAlchemy engine", _remember_uri, uri, instance)
    return uri


def _remember_uri(uri: str, hook: Any) -> None:
    from sqlalchemy.engine import make_url

    key = _url_key(make_url(uri))
    _remembered_uris[key] = hook
    _remembered_uris.move_to_end(key)
    while len(_remembered_uris) > MAX_REMEMBERED_URIS:
        _remembered_uris.popitem(last=False)
    listen()


def _hook_of(engine: Any) -> Any:
    hook = engine.__dict__.get(ENGINE_HOOK_ATTRIBUTE)
    if hook is None and _remembered_uris:
        hook = _remembered_uris.get(_url_key(engine.url))
        if hook is not None:
            setattr(engine, ENGINE_HOOK_ATTRIBUTE, hook)
    return hook


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    if context is None or _in_statement.get() or isinstance(cursor, CapturingCursor):
        # no execution context, inside _run_command, or on a cursor that captures for itself
        return statement, parameters
    session = task_session()
    if session is None:
        return statement, parameters
    try:
        return _begin(conn, statement, parameters, context, executemany, session)
    except Exception as error:  # an event handler raising would fail the user's statement
        report_failure("capturing a SQLAlchemy statement", error, once=True)
        return statement, parameters


def _begin(conn, statement, parameters, context, executemany, session):
    hook = _hook_of(conn.engine)
    if hook is None:
        return statement, parameters
    engine = engine_for(hook)
    if not conf.source_enabled(engine.source):
        return statement, parameters
    tagged = guarded_step(
        f"tagging a {engine.source} statement",
        _tagged_sqlalchemy_statement,
        engine,
        session,
        hook,
        statement,
        parameters,
        context,
        default=statement,
    )
    capture = (engine, session, hook, executemany, dt.datetime.now(dt.timezone.utc), time.perf_counter_ns())
    setattr(context, CAPTURE_ATTRIBUTE, capture)
    return tagged, parameters


def _tagged_sqlalchemy_statement(engine, session, hook, statement, parameters, context) -> str:
    if not conf.tagging_on(engine.source) or not isinstance(statement, str):
        return statement
    # SQLAlchemy hands %-style drivers the parameters (an empty dict when there are none), so they
    # format the statement, unless the no_parameters execution option is set and there are none
    formatted = not (context.no_parameters and not parameters)
    escape = formatted and context.dialect.paramstyle in ("format", "pyformat")
    return _escaped(engine.tag(statement, session, hook), escape)


def _finish(context, cursor, failed: bool) -> None:
    try:
        capture = context.__dict__.pop(CAPTURE_ATTRIBUTE, None) if context is not None else None
        if capture is None:
            return
        if cursor is None:
            cursor = getattr(context, "cursor", None)
        engine, session, hook, many, start_time, started = capture
        elapsed = time.perf_counter_ns() - started
        _measure(
            engine, session, hook, cursor, start_time, elapsed, failed, {"executemany": True} if many else {}
        )
    except Exception as error:
        report_failure("capturing a SQLAlchemy statement", error, once=True)


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    _finish(context, cursor, False)


def _handle_error(exception_context):
    _finish(getattr(exception_context, "execution_context", None), None, True)


_LISTENERS = (
    ("before_cursor_execute", _before_cursor_execute, {"retval": True}),
    ("after_cursor_execute", _after_cursor_execute, {}),
    ("handle_error", _handle_error, {}),
)


def listen() -> None:
    """Listen to every engine's statements (only those of a hook's engines are captured): installed
    the first time a hook makes an engine or hands out its URI."""
    global _listening
    if _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for name, function, options in _LISTENERS:
        event.listen(Engine, name, function, **options)
    _listening = True


def stop_listening() -> None:
    global _listening
    _remembered_uris.clear()
    if not _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for name, function, _options in _LISTENERS:
        if event.contains(Engine, name, function):
            event.remove(Engine, name, function)
    _listening = False


# ---------------------------------------------------------------- which methods of which classes

# method name -> the wrapper for a class that defines it
WRAPPERS = {
    **{name: _scope_wrapper for name in SCOPED_METHODS},
    "get_sqlalchemy_engine": _get_sqlalchemy_engine_wrapper,
    "get_uri": _get_uri_wrapper,
    "_run_command": _run_command_wrapper,
}


def wrappers_for(klass: type) -> list[tuple[str, Any]]:
    """The methods `klass` itself defines that get wrapped, with their wrappers. A `run` of the
    project's own code (not a provider's, whose `run` goes through `_run_command`) is scoped too."""
    own = klass.__dict__
    found = [(name, wrapper) for name, wrapper in WRAPPERS.items() if inspect.isfunction(own.get(name))]
    if inspect.isfunction(own.get("run")) and not klass.__module__.startswith(PROVIDER_MODULES):
        found.append(("run", _scope_wrapper))
    return found
