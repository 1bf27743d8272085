"""Trino through the provider's real TrinoHook and the trino client, against the fake coordinator on
127.0.0.1: client tags and comments, statistics from the final page or the coordinator, failure
isolation, and patching that is symmetric and idempotent."""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from urllib.parse import unquote

import pytest
import trino.dbapi
import wrapt
from airflow.providers.common.sql.hooks.handlers import fetch_all_handler
from airflow.providers.trino.hooks.trino import TrinoHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import trino as trino_instrumentation
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.instrumentation.trino import (
    QueryStatistics,
    TrinoQueries,
    TrinoQuery,
    client_tags,
    coordinator_statistics,
    data_size_bytes,
    duration_ms,
    final_client_statistics,
    merge_client_tags,
    resolve_queries,
)
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from tests.support.fake_trino import airlift_data_size, airlift_duration, fake_trino
from tests.support.http_recorder import closed_port

HOSTILE = TaskTry(
    dag_id="sales,daily",
    task_id="load 'orders' 100%",
    run_id="manual__2026-11-20T00:00:00+00:00",
    try_number=2,
    map_index=3,
    ol_run_id="019b7c01-0400-72a9-abc4-aa8a1d01f065",
)


@pytest.fixture
def coordinator(monkeypatch):
    with fake_trino() as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TRINO_UNIT",
            json.dumps(
                {
                    "conn_type": "trino",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "login": "analyst",
                    "extra": {"client_tags": ["nightly"]},
                }
            ),
        )
        yield server


@pytest.fixture
def instrumented():
    statements, queries = SqlStatements(), TrinoQueries()
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


def our_tags(query) -> dict[str, str]:
    return {key: unquote(value) for key, value in (t.split("=", 1) for t in query.client_tags if "=" in t)}


# ---------------------------------------------------------------- pure parts


def test_client_tags_hold_the_identity_without_a_separator():
    tags = client_tags(HOSTILE.tags())
    assert all("," not in tag and " " not in tag for tag in tags)
    assert {key: unquote(value) for key, value in (t.split("=", 1) for t in tags)} == HOSTILE.tags()
    # the run id stays readable: `:` and `+` need no encoding in a tag
    assert "airflow_run_id=manual__2026-11-20T00:00:00+00:00" in tags


def test_merge_keeps_the_connections_tags_first_and_adds_ours_once():
    assert merge_client_tags(["nightly"], ["a=1", "b=2"]) == ["nightly", "a=1", "b=2"]
    assert merge_client_tags("nightly, etl", ["a=1"]) == ["nightly", "etl", "a=1"]
    assert merge_client_tags(None, ["a=1"]) == ["a=1"]
    assert merge_client_tags(["a=1"], ["a=1"]) == ["a=1"]


@pytest.mark.parametrize("milliseconds", [0, 7, 999, 1000, 2500, 90_000, 3_600_000, 129_600_000])
def test_durations_in_trinos_format_are_read_back(milliseconds):
    parsed = duration_ms(airlift_duration(milliseconds))
    # two decimals in the most succinct unit: exact for these values
    assert parsed == milliseconds


def test_data_sizes_are_binary_units_to_the_byte():
    assert data_size_bytes("0B") == 0
    assert data_size_bytes("1234B") == 1234
    assert data_size_bytes("3MB") == 3 * 2**20
    assert data_size_bytes(airlift_data_size(5 * 2**30)) == 5 * 2**30
    assert data_size_bytes("1.50kB") == 1536
    for bad in ("", "12", "3 parsecs", "-1B"):
        with pytest.raises(ValueError):
            data_size_bytes(bad)
    with pytest.raises(ValueError):
        duration_ms("soon")


def test_client_statistics_count_only_once_the_query_ended():
    running = {"state": "RUNNING", "cpuTimeMillis": 10, "physicalInputBytes": 5}
    assert final_client_statistics(running) is None
    assert final_client_statistics({}) is None and final_client_statistics(None) is None
    final = final_client_statistics(
        {
            "state": "FINISHED",
            "cpuTimeMillis": 1500,
            "wallTimeMillis": 2000,
            "elapsedTimeMillis": 750,
            "physicalInputBytes": 4096,
        }
    )
    assert final == QueryStatistics(
        "FINISHED", Decimal(1500), Decimal(2000), Decimal(750), Decimal(4096), "client"
    )


def test_coordinator_statistics_come_from_query_stats():
    info = {
        "state": "FAILED",
        "queryStats": {
            "totalCpuTime": "4.50s",
            "totalScheduledTime": "6.00s",
            "elapsedTime": "2.25s",
            "physicalInputDataSize": "9MB",
        },
    }
    assert coordinator_statistics(info) == QueryStatistics(
        "FAILED", Decimal(4500), Decimal(6000), Decimal(2250), Decimal(9 * 2**20), "coordinator"
    )


def _query(pricing=None, **fields) -> TrinoQuery:
    defaults = dict(
        query_id="20260102_101500_00001_fake1",
        conn_id="trino_unit",
        start_time=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        client_stats=None,
        connection=None,
    )
    return TrinoQuery(**{**defaults, **fields}, pricing=pricing or {})


def test_billing_metric_switches_cpu_time_for_bytes_read():
    statistics = QueryStatistics(
        "FINISHED", Decimal(1500), Decimal(2000), Decimal(750), Decimal(4096), "client"
    )
    cpu = _query().usage(statistics)
    assert (cpu.metric, cpu.quantity, cpu.unit) == ("cpu_time", Decimal(1500), "vCPU-ms")
    assert cpu.attributes["cost_method"] == "runtime_rate"
    assert cpu.end_time - cpu.start_time == dt.timedelta(milliseconds=750)
    by_bytes = _query({"billing_metric": "physical_input", "cluster": "lake"}).usage(statistics)
    assert (by_bytes.metric, by_bytes.quantity, by_bytes.unit) == ("physical_input", Decimal(4096), "byte")
    assert by_bytes.attributes["cluster"] == "lake" and by_bytes.attributes["cpu_time_ms"] == "1500"
    assert "trino/physical_input" in by_bytes.attributes[UNPRICED_HINT_ATTRIBUTE]


# ---------------------------------------------------------------- the real hook, the fake coordinator


def test_statements_carry_client_tags_and_the_comment(coordinator, instrumented, session):
    result = TrinoHook(trino_conn_id="trino_unit").run("SELECT 5", handler=fetch_all_handler)
    assert result == [[5]]
    (query,) = coordinator.statements()
    assert query.client_tags[0] == "nightly"  # the connection's own tag, kept
    assert our_tags(query) == HOSTILE.tags()
    assert "/*airflow_dag_id='sales%2Cdaily'" in query.statement
    (pending,) = session.pending[resolve_queries]
    assert pending.query_id == query.query_id


def test_final_statistics_are_read_after_the_rows_were_fetched(coordinator, instrumented, session):
    TrinoHook(trino_conn_id="trino_unit").run("SELECT 5", handler=fetch_all_handler)
    (query,) = coordinator.statements()
    (usage,) = resolve_queries(session.pending[resolve_queries], 5.0)
    # execute() returned with a third of the work reported; the last page had all of it
    assert usage.quantity == query.cpu_time_ms and usage.external_id == query.query_id
    assert usage.attributes["statistics_from"] == "client"
    assert Decimal(usage.attributes["physical_input_bytes"]) == query.physical_input_bytes
    assert ("GET", f"/v1/query/{query.query_id}") not in query.requests


def test_a_cancelled_query_is_looked_up_once_on_the_coordinator(coordinator, instrumented, session):
    TrinoHook(trino_conn_id="trino_unit").run("SELECT 7")  # no handler: closed before the rows are read
    (query,) = coordinator.statements()
    assert query.state == "FAILED"
    (usage,) = resolve_queries(session.pending[resolve_queries], 5.0)
    assert usage.attributes["statistics_from"] == "coordinator"
    assert usage.quantity == query.cpu_time_ms
    assert Decimal(usage.attributes["wall_time_ms"]) == query.wall_time_ms
    assert query.requests.count(("GET", f"/v1/query/{query.query_id}")) == 1
    info_request = [h for m, p, h in coordinator.requests if p == f"/v1/query/{query.query_id}"]
    assert info_request[0]["X-Trino-User"] == "analyst"


def test_a_coordinator_that_cannot_be_reached_leaves_the_query_unpriced(coordinator, instrumented, session):
    TrinoHook(trino_conn_id="trino_unit").run("SELECT 7")
    (pending,) = session.pending[resolve_queries]
    pending.connection.port = closed_port()
    (usage,) = resolve_queries([pending], 5.0)
    assert usage.metric == "queries" and usage.external_id == pending.query_id
    assert f"GET /v1/query/{pending.query_id} failed" in usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    (late,) = resolve_queries([pending], 0)
    assert "no time was left" in late.attributes[UNPRICED_HINT_ATTRIBUTE]


def test_no_session_and_suppressed_calls_are_untouched(coordinator, instrumented, session):
    clear_sessions()
    TrinoHook(trino_conn_id="trino_unit").run("SELECT 1", handler=fetch_all_handler)
    other = open_session(HOSTILE, worker.sample())
    with suppress():
        TrinoHook(trino_conn_id="trino_unit").run("SELECT 2", handler=fetch_all_handler)
    for query in coordinator.statements():
        assert query.client_tags == ["nightly"]
        assert "/*" not in query.statement
    assert not other.pending


def test_tagging_can_be_switched_off_for_trino(coordinator, instrumented, session, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "trino")
    conf.clear_cache()
    TrinoHook(trino_conn_id="trino_unit").run("SELECT 1", handler=fetch_all_handler)
    (query,) = coordinator.statements()
    assert query.client_tags == ["nightly"] and "/*" not in query.statement
    assert session.pending[resolve_queries]  # still measured


def test_a_failing_wrapper_still_runs_the_call_once(coordinator, instrumented, session, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tagging bug")

    monkeypatch.setattr(trino_instrumentation, "client_tags", broken)
    caplog.set_level(logging.DEBUG, logger="airflow_cost_provider")
    hook = TrinoHook(trino_conn_id="trino_unit")
    assert hook.run("SELECT 5", handler=fetch_all_handler) == [[5]]
    assert hook.run("SELECT 6", handler=fetch_all_handler) == [[6]]
    assert [q.statement.split(" /*")[0] for q in coordinator.statements()] == ["SELECT 5", "SELECT 6"]
    assert all(q.client_tags == ["nightly"] for q in coordinator.statements())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "tagging a trino" in r.message]
    assert len(warnings) == 1 and failures["tagging a trino connection"] == 2


def test_errors_of_the_call_itself_propagate_unchanged(coordinator, instrumented, session):
    from airflow.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException):
        TrinoHook(trino_conn_id="trino_missing").get_conn()
    # nothing of that call is left behind: a connection opened outside the hook gets no tags
    connection = trino.dbapi.connect(host="127.0.0.1", port=coordinator.port, user="analyst")
    cursor = connection.cursor()
    cursor.execute("SELECT 3")
    cursor.fetchall()
    assert [q.client_tags for q in coordinator.statements()] == [[]]


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    import airflow.providers.trino.hooks.trino as hooks

    original_get_conn = hooks.TrinoHook.__dict__["get_conn"]
    original_connect = trino.dbapi.__dict__["connect"]
    instrumentation = TrinoQueries()
    instrumentation.instrument()
    instrumentation.instrument()
    try:
        for owner, name, original in (
            (hooks.TrinoHook, "get_conn", original_get_conn),
            (trino.dbapi, "connect", original_connect),
        ):
            patched = owner.__dict__[name]
            assert isinstance(patched, wrapt.FunctionWrapper) and patched.__wrapped__ is original
    finally:
        instrumentation.uninstrument()
        instrumentation.uninstrument()
    assert hooks.TrinoHook.__dict__["get_conn"] is original_get_conn
    assert trino.dbapi.__dict__["connect"] is original_connect


def test_get_df_statements_are_tagged_and_resolved_like_run(coordinator, instrumented, session):
    # TrinoHook's own _get_pandas_df executes on a cursor of get_conn(), not through _run_command
    frame = TrinoHook(trino_conn_id="trino_unit").get_df("SELECT 5")
    assert frame.values.tolist() == [[5]]
    (query,) = coordinator.statements()
    assert our_tags(query) == HOSTILE.tags()
    assert "/*airflow_dag_id='sales%2Cdaily'" in query.statement
    (pending,) = session.pending[resolve_queries]
    assert pending.query_id == query.query_id
    (usage,) = resolve_queries(session.pending[resolve_queries], 5.0)
    assert usage.quantity == query.cpu_time_ms and usage.external_id == query.query_id
