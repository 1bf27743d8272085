"""Statements that bypass `DbApiHook._run_command` (dataframes, insert_rows, SQLAlchemy engines, hook
classes with their own `_run_command` or `run`), on a real DbApiHook over SQLite: each statement SQLite
ran is tagged and recorded exactly once, with the method it came through."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa
import wrapt
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import sql_paths
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE

TAG = "/*airflow_dag_id='paths',airflow_map_index='-1',airflow_run_id='run',airflow_task_id='t',airflow_try_number='1'*/"


class SqliteHook(DbApiHook):
    """SQLite through DbApiHook; every statement SQLite runs is traced (what the engine really got)."""

    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "unit_sqlite"
    conn_type = "sqlite"
    placeholder = "?"

    def __init__(self, path, traced: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = str(path)
        self.traced = traced

    def get_conn(self):
        connection = sqlite3.connect(self.path)
        connection.set_trace_callback(self.traced.append)
        return connection

    def get_conn_id(self) -> str:
        return "unit_sqlite"

    def get_uri(self) -> str:
        return f"sqlite:///{self.path}"

    @property
    def sqlalchemy_url(self):
        return sa.engine.make_url(self.get_uri())


class OwnRunCommandHook(SqliteHook):
    """A hook a user wrote: its own _run_command, not calling the provider's."""

    def _run_command(self, cur, sql_statement, parameters):
        cur.execute(sql_statement, parameters or ())


class SuperRunCommandHook(SqliteHook):
    """Its own _run_command that ends in the provider's: still one statement."""

    def _run_command(self, cur, sql_statement, parameters):
        self.log.info("audit: %s", sql_statement)
        super()._run_command(cur, sql_statement, parameters)


class OwnRunHook(SqliteHook):
    """Its own run, executing on the hook's connection without _run_command."""

    def run(self, sql, autocommit=False, parameters=None, handler=None, **kwargs):
        with closing(self.get_conn()) as conn:
            cur = conn.cursor()
            for statement in [sql] if isinstance(sql, str) else sql:
                cur.execute(statement)
            conn.commit()
            return handler(cur) if handler else None


class SuperRunHook(SqliteHook):
    def run(self, sql, *args, **kwargs):
        return super().run(sql, *args, **kwargs)


class ForeignConnectionHook(SqliteHook):
    """Its own run on a connection it opens itself: nothing to tag, so kept unpriced with the reason."""

    def run(self, sql, *args, **kwargs):
        with closing(sqlite3.connect(self.path)) as conn:
            conn.execute(sql)


class CreatorEngineHook(SqliteHook):
    """An engine whose connections come from get_conn, used by get_df: both ways in see each statement."""

    def get_sqlalchemy_engine(self, engine_kwargs=None):
        return sa.create_engine("sqlite://", creator=self.get_conn)

    def _get_pandas_df(self, sql, parameters=None, **kwargs):
        with self.get_sqlalchemy_engine().connect() as conn:
            return pd.read_sql(sa.text(sql), conn, params=parameters)


@pytest.fixture
def statements():
    instrumentation = SqlStatements()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", '{"unit_sqlite": {"instance_type": "db.t3.micro"}}'
    )
    conf.clear_cache()
    session = open_session(TaskTry("paths", "t", "run", 1, -1), worker.sample())
    yield session
    clear_sessions()
    conf.clear_cache()


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "unit.db"
    # insert_rows reads the connection's extras for its statement format
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, amount REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(n, n * 1.5) for n in range(1, 6)])
        conn.commit()
    return path


def traced_tagged(traced: list[str]) -> list[str]:
    return [s for s in traced if s.endswith(TAG) or s.endswith(TAG + ";")]


def assert_statement_usage(usage, path: str) -> None:
    assert (usage.source, usage.metric, usage.unit, usage.resource) == (
        "sqlite",
        "instance_time",
        "instance-second",
        "unit_sqlite",
    )
    assert Decimal(0) < usage.quantity < Decimal(5)
    assert usage.attributes["sql_path"] == path
    assert usage.attributes["instance_type"] == "db.t3.micro"
    assert usage.attributes["cost_method"] == "runtime_rate"


def test_get_df_is_tagged_and_recorded_once(statements, session, db):
    traced: list[str] = []
    frame = SqliteHook(db, traced).get_df("SELECT id, amount FROM orders WHERE id <= ?", parameters=(2,))
    assert frame.to_dict("list") == {"id": [1, 2], "amount": [1.5, 3.0]}
    assert traced_tagged(traced) == [f"SELECT id, amount FROM orders WHERE id <= 2 {TAG}"]
    (usage,) = session.usage
    assert_statement_usage(usage, "get_df")


def test_get_pandas_df_is_recorded_under_its_own_name(statements, session, db):
    traced: list[str] = []
    frame = SqliteHook(db, traced).get_pandas_df("SELECT count(*) AS n FROM orders")
    assert frame["n"].tolist() == [5]
    assert len(traced_tagged(traced)) == 1
    (usage,) = session.usage
    assert_statement_usage(usage, "get_pandas_df")


def test_get_df_by_chunks_is_recorded_while_the_caller_iterates(statements, session, db):
    traced: list[str] = []
    chunks = SqliteHook(db, traced).get_df_by_chunks("SELECT id FROM orders ORDER BY id", chunksize=2)
    assert session.usage == []  # nothing ran yet: the generator runs the statement
    assert [c["id"].tolist() for c in chunks] == [[1, 2], [3, 4], [5]]
    assert traced_tagged(traced) == [f"SELECT id FROM orders ORDER BY id {TAG}"]
    (usage,) = session.usage
    assert_statement_usage(usage, "get_df_by_chunks")
    traced.clear()
    chunks = SqliteHook(db, traced).get_pandas_df_by_chunks("SELECT id FROM orders", chunksize=10)
    assert [c["id"].tolist() for c in chunks] == [[1, 2, 3, 4, 5]]
    assert session.usage[-1].attributes["sql_path"] == "get_pandas_df_by_chunks"
    assert len(session.usage) == 2


def test_insert_rows_records_one_statement_per_execute(statements, session, db):
    traced: list[str] = []
    hook = SqliteHook(db, traced)
    hook.insert_rows("orders", [(6, 9.0), (7, 10.5), (8, 12.0)], target_fields=["id", "amount"])
    inserts = traced_tagged(traced)
    # DbApiHook serialises each cell to text; SQLite's trace shows the bound values
    assert inserts == [
        f"INSERT INTO orders (id, amount) VALUES ('{n}','{a}') {TAG}"
        for n, a in ((6, 9.0), (7, 10.5), (8, 12.0))
    ]
    assert len(session.usage) == 3
    for usage in session.usage:
        assert_statement_usage(usage, "insert_rows")
    # executemany: one statement per chunk of commit_every rows (3 rows, chunks of 2 -> 2 calls)
    hook.insert_rows(
        "orders", [(9, 1.0), (10, 2.0), (11, 3.0)], ["id", "amount"], commit_every=2, executemany=True
    )
    assert len(session.usage) == 5
    assert [u.attributes.get("executemany") for u in session.usage[3:]] == [True, True]
    assert pd.read_sql("SELECT count(*) AS n FROM orders", sqlite3.connect(db))["n"].tolist() == [11]


def test_insert_rows_of_nothing_records_nothing(statements, session, db):
    SqliteHook(db, []).insert_rows("orders", [])
    assert session.usage == []


def test_an_engine_from_get_sqlalchemy_engine(statements, session, db):
    traced: list[str] = []
    engine = SqliteHook(db, traced).get_sqlalchemy_engine()
    sa.event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.set_trace_callback(traced.append))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT sum(id) FROM orders")).scalar() == 15
        assert conn.execute(sa.text("SELECT id FROM orders WHERE id = :i"), {"i": 3}).scalar() == 3
    assert traced_tagged(traced) == [
        f"SELECT sum(id) FROM orders {TAG}",
        f"SELECT id FROM orders WHERE id = 3 {TAG}",
    ]
    assert len(session.usage) == 2
    for usage in session.usage:
        assert_statement_usage(usage, "sqlalchemy")
    engine.dispose()


def test_an_engine_created_from_get_uri(statements, session, db):
    traced: list[str] = []
    engine = sa.create_engine(SqliteHook(db, []).get_uri())
    sa.event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.set_trace_callback(traced.append))
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert traced_tagged(traced) == [f"SELECT 1 {TAG}"]
    (usage,) = session.usage
    assert_statement_usage(usage, "sqlalchemy")
    engine.dispose()


def test_an_engine_from_get_uri_with_another_driver_is_the_hooks_too(statements, session, db):
    uri = SqliteHook(db, []).get_uri()
    assert uri.startswith("sqlite:///")
    engine = sa.create_engine(uri.replace("sqlite://", "sqlite+pysqlite://", 1))  # same database
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    (usage,) = session.usage
    assert_statement_usage(usage, "sqlalchemy")
    engine.dispose()


def test_other_engines_are_left_alone(statements, session, db, tmp_path):
    SqliteHook(db, []).get_uri()  # the hook's URI is known; this engine is elsewhere
    traced: list[str] = []
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    sa.event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.set_trace_callback(traced.append))
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 2"))
    assert "SELECT 2" in traced and session.usage == []
    engine.dispose()


def test_a_failing_statement_propagates_and_is_recorded_failed(statements, session, db):
    hook = SqliteHook(db, [])
    with pytest.raises(Exception, match="no such table"):
        hook.get_df("SELECT * FROM missing")
    (usage,) = session.usage
    assert usage.attributes["failed"] is True and usage.attributes["sql_path"] == "get_df"
    engine = hook.get_sqlalchemy_engine()
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM missing"))
    assert len(session.usage) == 2 and session.usage[1].attributes["failed"] is True
    engine.dispose()


@pytest.mark.parametrize("hook_class", [OwnRunCommandHook, SuperRunCommandHook, OwnRunHook, SuperRunHook])
def test_user_hooks_with_their_own_run_command_or_run(statements, session, db, hook_class):
    traced: list[str] = []
    hook = hook_class(db, traced)
    hook.run(["UPDATE orders SET amount = amount * 2", "DELETE FROM orders WHERE id = 5"])
    assert hook.get_first("SELECT count(*) FROM orders") == (4,)
    assert traced_tagged(traced) == [
        f"UPDATE orders SET amount = amount * 2 {TAG}",
        f"DELETE FROM orders WHERE id = 5 {TAG}",
        f"SELECT count(*) FROM orders {TAG}",
    ]
    assert len(session.usage) == 3
    for usage in session.usage:
        assert usage.source == "sqlite" and usage.quantity > 0


def test_a_run_on_a_connection_the_hook_did_not_open_is_kept_unpriced(statements, session, db):
    ForeignConnectionHook(db, []).run("DELETE FROM orders")
    (usage,) = session.usage
    assert (usage.source, usage.metric, usage.quantity, usage.unit) == ("sqlite", "queries", 1, "query")
    assert usage.attributes["sql_path"] == "run" and usage.attributes["conn_id"] == "unit_sqlite"
    assert (
        "ForeignConnectionHook.run ran its SQL on a connection the hook did not open"
        in (usage.attributes[UNPRICED_HINT_ATTRIBUTE])
    )


def test_an_engine_on_the_hooks_own_connections_counts_each_statement_once(statements, session, db):
    traced: list[str] = []
    frame = CreatorEngineHook(db, traced).get_df("SELECT max(id) AS m FROM orders")
    assert frame["m"].tolist() == [5]
    tagged = traced_tagged(traced)
    # SQLAlchemy's own set-up statements on the new connection (PRAGMAs) ran on it too and count
    assert [s for s in tagged if not s.startswith("PRAGMA")] == [f"SELECT max(id) AS m FROM orders {TAG}"]
    assert len(session.usage) == len(tagged)  # one usage per statement SQLite ran, none twice
    assert all(u.attributes["sql_path"] == "get_df" for u in session.usage)


def test_outside_a_task_or_when_suppressed_nothing_changes(statements, session, db):
    traced: list[str] = []
    hook = SqliteHook(db, traced)
    with suppress():
        hook.get_df("SELECT 1")
        hook.insert_rows("orders", [(20, 1.0)], ["id", "amount"])
    clear_sessions()
    hook.get_df("SELECT 2")
    engine = hook.get_sqlalchemy_engine()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 3"))
    engine.dispose()
    assert "SELECT 1" in traced and "SELECT 2" in traced and not traced_tagged(traced)
    assert session.usage == []


def test_the_run_command_path_is_unchanged_by_the_connection_proxy(statements, session, db):
    traced: list[str] = []
    hook = SqliteHook(db, traced)
    hook.run("SELECT 1")
    (usage,) = session.usage
    assert "sql_path" not in usage.attributes  # the provider's own path, as before


def test_uninstrument_restores_every_method_and_listener(db):
    instrumentation = SqlStatements()
    instrumentation.instrument()
    originals = {name: OwnRunHook.__dict__[name] for name in ("run",)}
    OwnRunHook(db, []).get_uri()  # creating an instance instruments its class
    engine = SqliteHook(db, []).get_sqlalchemy_engine()
    assert isinstance(OwnRunHook.__dict__["run"], wrapt.FunctionWrapper)
    assert isinstance(DbApiHook.__dict__["get_df"], wrapt.FunctionWrapper)
    assert isinstance(SqliteHook.__dict__["get_uri"], wrapt.FunctionWrapper)
    # get_conn is shadowed on the instance while a method runs, never patched on the class
    hook = SqliteHook(db, [])
    hook.get_df("SELECT 1")
    assert "get_conn" not in vars(hook) and not isinstance(
        SqliteHook.__dict__["get_conn"], wrapt.FunctionWrapper
    )
    assert sa.event.contains(sa.engine.Engine, "before_cursor_execute", sql_paths._before_cursor_execute)
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert OwnRunHook.__dict__["run"] is originals["run"]
    assert not isinstance(DbApiHook.__dict__["get_df"], wrapt.FunctionWrapper)
    assert not isinstance(SqliteHook.__dict__["get_uri"], wrapt.FunctionWrapper)
    assert not isinstance(DbApiHook.__dict__["__init__"], wrapt.FunctionWrapper)
    assert not sa.event.contains(sa.engine.Engine, "before_cursor_execute", sql_paths._before_cursor_execute)
    engine.dispose()


def test_a_failing_capture_never_reaches_the_task(statements, session, db, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("capture exploded")

    monkeypatch.setattr(sql_paths, "_measure", broken)
    monkeypatch.setattr(sql_paths, "_tagged_sqlalchemy_statement", broken)
    monkeypatch.setattr(sql_paths, "_tagged_call", broken)
    traced: list[str] = []
    hook = SqliteHook(db, traced)
    assert hook.get_df("SELECT count(*) AS n FROM orders")["n"].tolist() == [5]
    hook.insert_rows("orders", [(6, 9.0)], ["id", "amount"])
    engine = hook.get_sqlalchemy_engine()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 6
    engine.dispose()
    assert "SELECT count(*) AS n FROM orders" in traced and not traced_tagged(traced)
    assert "capture exploded" in caplog.text
