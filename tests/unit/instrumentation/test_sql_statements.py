"""The DB-API statement wrapper, on a real DbApiHook over SQLite: tags, timing, failure isolation,
and patching that is symmetric and idempotent."""

from __future__ import annotations

import logging
import sqlite3
import sys
import types
from decimal import Decimal

import pytest
import wrapt
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import registry
from airflow_cost_provider.instrumentation.base import Instrumentation
from airflow_cost_provider.instrumentation.sql import SqlEngine, SqlStatements


class RecordingConnection(sqlite3.Connection):
    """A real SQLite connection whose cursors remember every statement handed to the driver."""

    received: list[str]

    def cursor(self, *args, **kwargs):
        received = self.received

        class RecordingCursor(sqlite3.Cursor):
            def execute(self, sql, *params):
                received.append(sql)
                return super().execute(sql, *params)

        return super().cursor(RecordingCursor)


class RecordingSqliteHook(DbApiHook):
    """SQLite through DbApiHook.run (which closes its connection after each call)."""

    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "unit_sqlite"
    conn_type = "sqlite"

    def __init__(self, path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = str(path)
        self.received: list[str] = []

    def get_conn(self):
        connection = sqlite3.connect(self.path, factory=RecordingConnection)
        connection.received = self.received
        return connection

    def get_conn_id(self) -> str:
        return "unit_sqlite"


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
    session = open_session(TaskTry("dag*/", "task'\n", "run", 1, -1), worker.sample())
    yield session
    clear_sessions()
    conf.clear_cache()


def test_statements_are_tagged_timed_and_recorded(statements, session, tmp_path):
    hook = RecordingSqliteHook(tmp_path / "unit.db")
    assert hook.get_records("SELECT 41 + 1;") == [(42,)]
    sent = [s for s in hook.received if s.startswith("SELECT 41")]
    assert sent == ["SELECT 41 + 1 /*airflow_dag_id='dag%2A%2F',airflow_map_index='-1',airflow_run_id='run',"
                    "airflow_task_id='task%27%0A',airflow_try_number='1'*/;"]  # fmt: skip
    (usage,) = session.usage
    assert (usage.source, usage.metric, usage.unit, usage.resource) == (
        "sqlite",
        "instance_time",
        "instance-second",
        "unit_sqlite",
    )
    assert Decimal(0) < usage.quantity < Decimal(5)
    assert (
        usage.attributes["instance_type"] == "db.t3.micro"
        and usage.attributes["cost_method"] == "runtime_rate"
    )


def test_each_statement_of_a_list_is_one_usage(statements, session, tmp_path):
    RecordingSqliteHook(tmp_path / "unit.db").run(
        ["CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1)", "SELECT * FROM t"]
    )
    assert len(session.usage) == 3


def test_outside_a_task_or_when_suppressed_nothing_changes(statements, session, tmp_path):
    hook = RecordingSqliteHook(tmp_path / "unit.db")
    with suppress():
        hook.run("SELECT 1")
    clear_sessions()
    hook.run("SELECT 2")
    assert [s for s in hook.received if s.startswith("SELECT")] == ["SELECT 1", "SELECT 2"]
    assert session.usage == []


def test_tagging_switched_off_for_the_source_still_measures(statements, session, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "sqlite")
    conf.clear_cache()
    hook = RecordingSqliteHook(tmp_path / "unit.db")
    hook.run("SELECT 3")
    assert "SELECT 3" in hook.received and len(session.usage) == 1


def test_a_failing_wrapper_runs_the_statement_once_and_warns_once(
    statements, session, monkeypatch, caplog, tmp_path
):
    def broken(*args, **kwargs):
        raise RuntimeError("tagging exploded")

    monkeypatch.setattr(SqlEngine, "tag", broken)
    failures.clear()
    hook = RecordingSqliteHook(tmp_path / "unit.db")
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        results = [hook.get_first(f"SELECT {n}") for n in range(3)]
    assert results == [(0,), (1,), (2,)]
    assert [s for s in hook.received if s.startswith("SELECT")] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cost provider: tagging a sqlite statement failed: RuntimeError: tagging exploded (no impact on the task)"
    ]
    assert len(session.usage) == 3  # measured all the same


def test_the_statements_own_error_propagates_and_is_still_measured(statements, session, tmp_path):
    hook = RecordingSqliteHook(tmp_path / "unit.db")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        hook.run("SELECT * FROM missing")
    (usage,) = session.usage
    assert usage.attributes["failed"] is True
    assert [s for s in hook.received if "missing" in s][0].startswith("SELECT * FROM missing /*")


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = DbApiHook.__dict__["_run_command"]
    instrumentation = SqlStatements()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = DbApiHook.__dict__["_run_command"]
    assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert DbApiHook.__dict__["_run_command"] is original
    instrumentation.instrument()
    assert DbApiHook.__dict__["_run_command"].__wrapped__ is original
    instrumentation.uninstrument()


def test_modules_imported_later_are_patched_on_import(monkeypatch):
    class Greeter(Instrumentation):
        name = "greeter"
        modules = ("cost_provider_test_late_module",)

        def patch(self, module):
            self.wrap(module.Greeting, "text", lambda wrapped, instance, args, kwargs: wrapped().upper())

    instrumentation = Greeter()
    instrumentation.instrument()
    module = types.ModuleType("cost_provider_test_late_module")
    exec("class Greeting:\n    def text(self):\n        return 'hello'\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    import wrapt.importer

    wrapt.importer.notify_module_loaded(module)
    assert module.Greeting().text() == "HELLO"
    instrumentation.uninstrument()
    assert module.Greeting().text() == "hello"


def test_registry_skips_a_missing_provider_with_a_debug_log(monkeypatch, caplog):
    monkeypatch.setitem(
        registry.INSTRUMENTATIONS, "nowhere", ("nowhere.module:Thing", "airflow.providers.nowhere")
    )
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        assert registry.get("nowhere") is None
    assert "airflow.providers.nowhere is not installed" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "nowhere" in r.getMessage())
