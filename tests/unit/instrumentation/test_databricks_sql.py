"""Databricks SQL through the provider's real DatabricksSqlHook and databricks-sql-connector, against
the fake warehouse on 127.0.0.1 (the connector's own Thrift service plus the REST APIs): query tags and
comments, DBUs from the Query History and the warehouse's size, failure isolation, and patching that
is symmetric and idempotent."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
import wrapt
from airflow.providers.common.sql.hooks.handlers import fetch_all_handler
from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import databricks_sql
from airflow_cost_provider.instrumentation.databricks_sql import (
    DatabricksSqlQueries,
    clear_warehouse_cache,
    compute_type,
    dbus,
    query_tags_text,
    resolve_queries,
    warehouse_id_from_http_path,
)
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from tests.support.fake_databricks import fake_databricks

TOKEN = "dapi-unit-token-0b1c"
HOSTILE = TaskTry(
    dag_id="sales:daily,v2",
    task_id="load\\orders",
    run_id="manual__2026-11-20T00:00:00+00:00",
    try_number=2,
    map_index=3,
    ol_run_id="019b7c01-0400-72a9-abc4-aa8a1d01f065",
)
WAREHOUSES = {
    "wh_pro": {"cluster_size": "Medium", "warehouse_type": "PRO", "enable_serverless_compute": False},
    "wh_classic": {"cluster_size": "2X-Small", "warehouse_type": "CLASSIC"},
}


def parse_query_tags(text: str) -> dict[str, str | None]:
    tags: dict[str, str | None] = {}
    key, current, escaped = None, "", False
    for char in text + ",":
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and key is None:
            key, current = current, ""
        elif char == ",":
            tags[key if key is not None else current] = current if key is not None else None
            key, current = None, ""
        else:
            current += char
    return tags


@pytest.fixture
def warehouse(monkeypatch):
    clear_warehouse_cache()
    with fake_databricks(TOKEN, WAREHOUSES) as server:
        for warehouse_id in WAREHOUSES:
            monkeypatch.setenv(
                f"AIRFLOW_CONN_DBX_{warehouse_id.upper()}", json.dumps(server.connection(warehouse_id))
            )
        yield server
    clear_warehouse_cache()


@pytest.fixture
def instrumented():
    statements, queries = SqlStatements(), DatabricksSqlQueries()
    statements.instrument()
    queries.instrument()
    yield queries
    queries.uninstrument()
    statements.uninstrument()


@pytest.fixture
def session():
    session = open_session(HOSTILE, worker.sample())
    yield session
    clear_sessions()


# ---------------------------------------------------------------- pure parts


def test_query_tags_text_escapes_what_separates_tags():
    text = query_tags_text(HOSTILE.tags())
    assert parse_query_tags(text) == HOSTILE.tags()
    assert "airflow_dag_id:sales\\:daily\\,v2" in text
    assert query_tags_text({"a": None, "b": "1"}) == "b:1"


def test_warehouse_ids_come_from_warehouse_paths_only():
    assert warehouse_id_from_http_path("/sql/1.0/warehouses/abc123") == "abc123"
    assert warehouse_id_from_http_path("/sql/1.0/endpoints/abc123") == "abc123"
    assert warehouse_id_from_http_path("sql/protocolv1/o/1234/0123-456789-abc") is None
    assert warehouse_id_from_http_path(None) is None


def test_compute_type_follows_the_warehouse_kind():
    assert compute_type({"warehouse_type": "PRO", "enable_serverless_compute": True}) == "sql_serverless"
    assert compute_type({"warehouse_type": "PRO"}) == "sql_pro"
    assert compute_type({"warehouse_type": "CLASSIC"}) == "sql_classic"
    assert compute_type({}) == "sql_classic"


def test_dbus_are_rate_times_duration_to_a_trillionth():
    assert dbus(Decimal(24), Decimal(1500)) == Decimal("0.01")
    assert dbus(Decimal(4), Decimal(1900)) == Decimal("0.002111111111")


# ---------------------------------------------------------------- the real hook, the fake warehouse


def test_sessions_carry_query_tags_and_statements_the_comment(warehouse, instrumented, session):
    hook = DatabricksSqlHook("dbx_wh_pro", query_tags={"team": "finance", "airflow_task_id": "mine"})
    assert hook.run("SELECT 42", handler=fetch_all_handler)[0][0] == 42
    (executed,) = warehouse.statements
    tags = parse_query_tags(executed.session_configuration["QUERY_TAGS"])
    assert tags == {**HOSTILE.tags(), "team": "finance", "airflow_task_id": "mine"}  # the hook's own tags win
    assert "/*airflow_dag_id='sales%3Adaily%2Cv2'" in executed.statement
    assert hook.query_tags == {"team": "finance", "airflow_task_id": "mine"}  # put back after the call
    (pending,) = session.pending[resolve_queries]
    assert pending.query_id == executed.query_id and pending.http_path_warehouse_id == "wh_pro"


def test_providers_without_query_tags_get_them_in_the_session_configuration(
    warehouse, instrumented, session, monkeypatch
):
    monkeypatch.setattr(DatabricksSqlHook, "query_tags", None, raising=False)
    hook = DatabricksSqlHook(
        "dbx_wh_pro", session_configuration={"QUERY_TAGS": "team:finance", "ansi_mode": "true"}
    )
    del hook.query_tags  # as a provider before query_tags existed
    hook.run("SELECT 1", handler=fetch_all_handler)
    (executed,) = warehouse.statements
    assert parse_query_tags(executed.session_configuration["QUERY_TAGS"]) == {
        "team": "finance",
        **HOSTILE.tags(),
    }
    assert executed.session_configuration["ansi_mode"] == "true"
    assert hook.session_config == {"QUERY_TAGS": "team:finance", "ansi_mode": "true"}


def test_usage_is_dbus_from_one_history_call_and_the_warehouse_size(warehouse, instrumented, session):
    hook = DatabricksSqlHook("dbx_wh_pro")
    hook.run(["SELECT 1", "SELECT 2"], handler=fetch_all_handler)
    DatabricksSqlHook("dbx_wh_classic").run("SELECT 3", handler=fetch_all_handler)
    usages = {u.external_id: u for u in resolve_queries(session.pending[resolve_queries], 5.0)}
    assert len(warehouse.history_requests()) == 1
    (call,) = warehouse.history_requests()
    assert sorted(call.query["filter_by.statement_ids"]) == sorted(s.query_id for s in warehouse.statements)
    assert call.authorization == f"Bearer {TOKEN}"
    rates = {"Medium": Decimal(24), "2X-Small": Decimal(4)}  # the shipped factor table
    for executed in warehouse.statements:
        usage = usages[executed.query_id]
        size = WAREHOUSES[executed.warehouse_id]["cluster_size"]
        assert usage.metric == "dbu" and usage.unit == "DBU" and usage.resource == executed.warehouse_id
        assert usage.quantity == (rates[size] * executed.duration_ms / 3_600_000).quantize(Decimal("1e-12"))
        assert usage.attributes["compute_type"] == compute_type(WAREHOUSES[executed.warehouse_id])
        assert usage.attributes["duration_ms"] == str(executed.duration_ms)
        assert usage.attributes["cost_method"] == "list_price"
    # each warehouse described once, and not again for the next task in this process
    resolve_queries(session.pending[resolve_queries], 5.0)
    assert sorted(r.path for r in warehouse.warehouse_requests()) == [
        "/api/2.0/sql/warehouses/wh_classic",
        "/api/2.0/sql/warehouses/wh_pro",
    ]


def test_many_statements_are_asked_for_in_pages_of_the_history(warehouse, instrumented, session, monkeypatch):
    monkeypatch.setattr(databricks_sql, "HISTORY_BATCH", 2)
    DatabricksSqlHook("dbx_wh_pro").run(["SELECT 1", "SELECT 2", "SELECT 3"], handler=fetch_all_handler)
    usages = resolve_queries(session.pending[resolve_queries], 5.0)
    assert [len(c.query["filter_by.statement_ids"]) for c in warehouse.history_requests()] == [2, 1]
    assert [c.query["max_results"] for c in warehouse.history_requests()] == [["2"], ["1"]]
    assert sorted(u.external_id for u in usages if u.metric == "dbu") == sorted(
        s.query_id for s in warehouse.statements
    )


def test_a_failed_history_call_keeps_the_queries_unpriced_without_the_token(
    warehouse, instrumented, session, monkeypatch
):
    DatabricksSqlHook("dbx_wh_pro").run("SELECT 1", handler=fetch_all_handler)
    monkeypatch.setattr(warehouse, "token", "rotated")  # the REST API now refuses the task's token
    (usage,) = resolve_queries(session.pending[resolve_queries], 5.0)
    assert usage.metric == "queries" and usage.external_id == warehouse.statements[0].query_id
    reason = usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    assert "query history look-up failed" in reason and "401" in reason and TOKEN not in reason
    (late,) = resolve_queries(session.pending[resolve_queries], 0)
    assert "no time left" in late.attributes[UNPRICED_HINT_ATTRIBUTE]


def test_a_query_missing_from_the_history_is_unpriced(warehouse, instrumented, session, monkeypatch):
    DatabricksSqlHook("dbx_wh_pro").run("SELECT 1", handler=fetch_all_handler)
    monkeypatch.setattr(warehouse, "statements", [])  # not in the history yet
    (usage,) = resolve_queries(session.pending[resolve_queries], 5.0)
    assert "no duration" in usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    assert usage.attributes["warehouse_id"] == "wh_pro"


def test_no_session_and_suppressed_calls_are_untouched(warehouse, instrumented, session):
    clear_sessions()
    DatabricksSqlHook("dbx_wh_pro").run("SELECT 1", handler=fetch_all_handler)
    other = open_session(HOSTILE, worker.sample())
    with suppress():
        DatabricksSqlHook("dbx_wh_pro").run("SELECT 2", handler=fetch_all_handler)
    for executed in warehouse.statements:
        assert "QUERY_TAGS" not in executed.session_configuration
        assert "/*" not in executed.statement
    assert not other.pending


def test_tagging_can_be_switched_off_for_databricks(warehouse, instrumented, session, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "databricks")
    conf.clear_cache()
    DatabricksSqlHook("dbx_wh_pro").run("SELECT 1", handler=fetch_all_handler)
    (executed,) = warehouse.statements
    assert "QUERY_TAGS" not in executed.session_configuration and "/*" not in executed.statement
    assert session.pending[resolve_queries]  # still measured


def test_a_failing_wrapper_still_runs_the_call_once(warehouse, instrumented, session, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tagging bug")

    monkeypatch.setattr(databricks_sql, "_add_query_tags", broken)
    caplog.set_level(logging.DEBUG, logger="airflow_cost_provider")
    hook = DatabricksSqlHook("dbx_wh_pro")
    assert hook.run("SELECT 5", handler=fetch_all_handler)[0][0] == 5
    assert hook.run("SELECT 6", handler=fetch_all_handler)[0][0] == 6
    assert [s.statement.split(" /*")[0] for s in warehouse.statements] == ["SELECT 5", "SELECT 6"]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "tagging a databricks" in r.message
    ]
    assert len(warnings) == 1 and failures["tagging a databricks session"] == 2


def test_errors_of_the_call_itself_propagate_unchanged(warehouse, instrumented, session):
    from airflow.exceptions import AirflowNotFoundException

    hook = DatabricksSqlHook("dbx_missing", http_path="/sql/1.0/warehouses/wh_pro")
    with pytest.raises(AirflowNotFoundException, match="dbx_missing"):
        hook.get_conn()
    assert hook.query_tags is None  # put back even when the call failed
    assert not warehouse.statements


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    import airflow.providers.databricks.hooks.databricks_sql as hooks

    original = hooks.DatabricksSqlHook.__dict__["get_conn"]
    instrumentation = DatabricksSqlQueries()
    instrumentation.instrument()
    instrumentation.instrument()
    try:
        patched = hooks.DatabricksSqlHook.__dict__["get_conn"]
        assert isinstance(patched, wrapt.FunctionWrapper) and patched.__wrapped__ is original
    finally:
        instrumentation.uninstrument()
        instrumentation.uninstrument()
    assert hooks.DatabricksSqlHook.__dict__["get_conn"] is original
