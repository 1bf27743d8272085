"""Athena: the billing rules, the tagging of AthenaHook.run_query and of AthenaSQLHook statements, and
the statistics look-up at finalize, on the real hooks, PyAthena and boto3 clients whose requests a
botocore Stubber checks against the Athena API model (no network)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import replace
from decimal import Decimal

import boto3
import pytest
import wrapt
from airflow.providers.amazon.aws.hooks.athena import AthenaHook
from airflow.providers.amazon.aws.hooks.athena_sql import AthenaSQLHook
from botocore.stub import ANY, Stubber

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import athena
from airflow_cost_provider.instrumentation.athena import (
    AthenaQueries,
    PendingQuery,
    QueryRun,
    billed_bytes,
    resolve_queries,
    tag_query,
)
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.tagging import format_comment

MB = 10**6
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)
RESULTS = {"OutputLocation": "s3://results/"}
TAGS = TaskTry("sales", "load", "scheduled__2026-11-20T00:00:00+00:00", 2, -1, "0192-ol").tags()


def athena_client():
    return boto3.client("athena", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")


def execution(
    qid: str, state="SUCCEEDED", scanned=0, statement_type="DML", reused=False, query="SELECT 1", submitted=T0
):
    return {
        "QueryExecutionId": qid,
        "Query": query,
        "StatementType": statement_type,
        "WorkGroup": "analysts",
        "Status": {
            "State": state,
            "SubmissionDateTime": submitted,
            "CompletionDateTime": submitted + dt.timedelta(seconds=3),
        },
        "Statistics": {
            "DataScannedInBytes": scanned,
            "EngineExecutionTimeInMillis": 2500,
            "ResultReuseInformation": {"ReusedPreviousResult": reused},
        },
        "EngineVersion": {
            "SelectedEngineVersion": "AUTO",
            "EffectiveEngineVersion": "Athena engine version 3",
        },
    }


@pytest.fixture
def session():
    session = open_session(
        TaskTry("sales", "load", "scheduled__2026-11-20T00:00:00+00:00", 2, -1, "0192-ol"), worker.sample()
    )
    yield session
    clear_sessions()


@pytest.fixture
def queries():
    instrumentation = AthenaQueries()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def hook():
    """A real AthenaHook whose boto3 client answers from a Stubber."""
    hook = AthenaHook(aws_conn_id=None, region_name="us-east-1", log_query=False)
    client = athena_client()
    hook.__dict__["conn"] = client
    with Stubber(client) as stubber:
        hook.stubber = stubber
        yield hook


def expect_start(hook, query: str, qid: str, workgroup: str = "primary", token: str | None = None) -> None:
    params = {
        "QueryString": query,
        "QueryExecutionContext": {"Database": "shop"},
        "ResultConfiguration": RESULTS,
        "WorkGroup": workgroup,
    }
    if token:
        params["ClientRequestToken"] = token
    hook.stubber.add_response("start_query_execution", {"QueryExecutionId": qid}, params)


# ------------------------------------------------------------------------------------------ pure rules


@pytest.mark.parametrize(
    ("run", "billed", "why"),
    [
        (QueryRun("q", "SUCCEEDED", "DML", scanned_bytes=0), 10 * MB, None),  # 10 MB minimum
        (QueryRun("q", "SUCCEEDED", "DML", scanned_bytes=10 * MB + 1), 11 * MB, None),  # up to the MB
        (QueryRun("q", "SUCCEEDED", "DML", scanned_bytes=1_234_567_891), 1_235 * MB, None),
        (QueryRun("q", "SUCCEEDED", "DML", scanned_bytes=42 * MB), 42 * MB, None),
        (QueryRun("q", "SUCCEEDED", "UTILITY", scanned_bytes=None), 10 * MB, None),
        (QueryRun("q", "CANCELLED", "DML", scanned_bytes=23_456_789), 24 * MB, None),
        (QueryRun("q", "CANCELLED", "DML", scanned_bytes=0), 0, "cancelled before scanning any data"),
        (QueryRun("q", "FAILED", "DML", scanned_bytes=5 * MB), 0, "failed queries are not billed"),
        (QueryRun("q", "SUCCEEDED", "DDL", scanned_bytes=0), 0, "DDL statements are not billed"),
        (
            QueryRun("q", "SUCCEEDED", "DML", scanned_bytes=0, result_reused=True),
            0,
            "the query reused earlier results",
        ),
    ],
)
def test_billed_bytes_follow_athenas_rules(run, billed, why):
    assert billed_bytes(run) == (billed, why)


@pytest.mark.parametrize(
    "query",
    [
        "CREATE EXTERNAL TABLE t (a int) LOCATION 's3://b/t/'",
        "  -- partitions\n/* nightly */ MSCK REPAIR TABLE t",
        "create table t (a int) partitioned by (d string) location 's3://b/' tblproperties ('table_type'='ICEBERG')",
        "ALTER TABLE t ADD PARTITION (d='2026-01-01')",
        "DROP TABLE IF EXISTS t",
        "CREATE DATABASE shop",
        "SHOW PARTITIONS t",
        "DESCRIBE t",
    ],
)
def test_hive_ddl_is_left_as_written(query):
    assert tag_query(query, TAGS) == query


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "CREATE TABLE t2 WITH (format = 'PARQUET') AS SELECT * FROM t",
        "create table t2 as (select 1)",
        "INSERT INTO t SELECT * FROM s",
        "UNLOAD (SELECT * FROM t) TO 's3://b/u/' WITH (format = 'PARQUET')",
        "CREATE OR REPLACE VIEW v AS SELECT 1",
    ],
)
def test_billable_statements_are_tagged(query):
    assert tag_query(query, TAGS) == f"{query} {format_comment(TAGS)}"


def test_a_query_the_comment_would_make_too_long_goes_untagged():
    query = "SELECT '" + "x" * (athena.MAX_QUERY_BYTES - 20) + "'"
    assert tag_query(query, TAGS) == query


# ----------------------------------------------------------------------------- AthenaHook.run_query


def test_run_query_is_tagged_and_its_id_kept_for_the_end(queries, session, hook):
    qid = str(uuid.uuid4())
    expect_start(hook, f"SELECT * FROM orders {format_comment(session.tags)};", qid, "analysts")
    assert hook.run_query("SELECT * FROM orders;", {"Database": "shop"}, RESULTS, workgroup="analysts") == qid
    hook.stubber.assert_no_pending_responses()
    ((resolve, (item,)),) = session.pending.items()
    assert resolve is resolve_queries
    assert item.query_execution_id == qid and item.attributes == {"workgroup": "analysts"}
    assert (item.client_key, item.aws_conn_id, item.region_name) == ("hook:None:us-east-1", None, "us-east-1")


def test_a_client_request_token_leaves_the_query_as_written(queries, session, hook):
    # a retry with the same token must send the same text, or Athena rejects it
    qid = str(uuid.uuid4())
    expect_start(hook, "SELECT 1", qid, token="token-0123456789-0123456789-0123456789")
    hook.run_query("SELECT 1", {"Database": "shop"}, RESULTS, "token-0123456789-0123456789-0123456789")
    assert [i.query_execution_id for i in session.pending[resolve_queries]] == [qid]


def test_outside_a_task_or_when_suppressed_nothing_changes(queries, session, hook):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    expect_start(hook, "SELECT 1", first)
    expect_start(hook, "SELECT 2", second)
    with suppress():
        assert hook.run_query("SELECT 1", {"Database": "shop"}, RESULTS) == first
    clear_sessions()
    assert hook.run_query("SELECT 2", {"Database": "shop"}, RESULTS) == second
    assert session.pending == {}


def test_a_source_switched_off_is_neither_tagged_nor_captured(queries, session, hook, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "athena")
    conf.clear_cache()
    expect_start(hook, "SELECT 1", qid := str(uuid.uuid4()))
    assert hook.run_query("SELECT 1", {"Database": "shop"}, RESULTS) == qid
    assert session.pending == {}


def test_a_failing_wrapper_runs_the_query_once_and_warns_once(queries, session, hook, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tagging exploded")

    monkeypatch.setattr(athena, "tag_query", broken)
    failures.clear()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, qid in enumerate(ids):
        expect_start(hook, f"SELECT {n}", qid)
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        returned = [hook.run_query(f"SELECT {n}", {"Database": "shop"}, RESULTS) for n in range(3)]
    assert returned == ids  # each sent exactly once, as written
    hook.stubber.assert_no_pending_responses()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cost provider: tagging an Athena query failed: RuntimeError: tagging exploded (no impact on the task)"
    ]
    assert [i.query_execution_id for i in session.pending[resolve_queries]] == ids  # still captured


def test_the_querys_own_error_propagates_unchanged(queries, session, hook):
    hook.stubber.add_client_error("start_query_execution", "InvalidRequestException", "line 1:8: bad column")
    with pytest.raises(Exception) as raised:
        hook.run_query("SELECT nope", {"Database": "shop"}, RESULTS)
    assert raised.value.response["Error"]["Code"] == "InvalidRequestException"
    assert session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = AthenaHook.__dict__["run_query"]
    instrumentation = AthenaQueries()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = AthenaHook.__dict__["run_query"]
    assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert AthenaHook.__dict__["run_query"] is original


# ------------------------------------------------------------------------------ statistics at the end


class StubbedSource:
    """A client source whose client answers from a Stubber; remembers the configs it was built with."""

    def __init__(self) -> None:
        self.client = athena_client()
        self.stubber = Stubber(self.client)
        self.stubber.activate()
        self.configs = []
        self.key = f"test:{id(self)}"
        athena._live_clients[self.key] = self.create

    def create(self, config):
        self.configs.append(config)
        return self.client

    def pending(self, *ids: str) -> list[PendingQuery]:
        return [PendingQuery(qid, self.key, None, "us-east-1", {"workgroup": "analysts"}) for qid in ids]


def test_statistics_are_read_fifty_queries_a_call():
    stubbed = StubbedSource()
    ids = [str(uuid.uuid4()) for _ in range(60)]
    for chunk in (ids[:50], ids[50:]):
        stubbed.stubber.add_response(
            "batch_get_query_execution",
            {
                "QueryExecutions": [execution(qid, scanned=(n + 1) * MB) for n, qid in enumerate(chunk)],
                "UnprocessedQueryExecutionIds": [],
            },
            {"QueryExecutionIds": chunk},
        )
    usages = resolve_queries(stubbed.pending(*ids), timeout_seconds=4.0)
    stubbed.stubber.assert_no_pending_responses()
    assert [u.external_id for u in usages] == ids
    first = usages[0]
    assert (first.metric, first.unit, first.quantity, first.resource) == (
        "data_scanned",
        "byte",
        Decimal(10 * MB),
        "analysts",
    )
    assert usages[10].quantity == Decimal(11 * MB)
    assert (
        first.attributes["scanned_bytes"] == MB
        and first.attributes["engine_version"] == "Athena engine version 3"
    )
    assert (first.start_time, first.end_time) == (T0, T0 + dt.timedelta(seconds=3))
    # our own calls: no retries, and timeouts within the time left
    (config,) = stubbed.configs
    assert config.retries == {"total_max_attempts": 1}
    assert 0 < config.connect_timeout <= 2.0 and 0 < config.read_timeout <= 2.0


def test_a_query_athena_does_not_return_is_kept_unpriced_with_the_reason():
    stubbed = StubbedSource()
    known, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    stubbed.stubber.add_response(
        "batch_get_query_execution",
        {
            "QueryExecutions": [execution(known, scanned=12 * MB)],
            "UnprocessedQueryExecutionIds": [
                {"QueryExecutionId": unknown, "ErrorCode": "INVALID_INPUT", "ErrorMessage": "not found"}
            ],
        },
    )
    found, missing = resolve_queries(stubbed.pending(known, unknown), 4.0)
    assert found.quantity == 12 * MB
    assert (missing.metric, missing.external_id) == ("queries", unknown)
    assert missing.attributes["why_unpriced"] == "Athena did not return the query: INVALID_INPUT: not found"


def test_without_batch_access_each_query_is_read_on_its_own():
    stubbed = StubbedSource()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    stubbed.stubber.add_client_error("batch_get_query_execution", "AccessDeniedException", "not authorized")
    for qid in ids:
        stubbed.stubber.add_response(
            "get_query_execution",
            {"QueryExecution": execution(qid, scanned=30 * MB)},
            {"QueryExecutionId": qid},
        )
    usages = resolve_queries(stubbed.pending(*ids), 4.0)
    stubbed.stubber.assert_no_pending_responses()
    assert [(u.external_id, u.quantity) for u in usages] == [(qid, 30 * MB) for qid in ids]


def test_throttling_keeps_the_queries_unpriced_without_more_calls():
    stubbed = StubbedSource()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    stubbed.stubber.add_client_error("batch_get_query_execution", "ThrottlingException", "slow down")
    usages = resolve_queries(stubbed.pending(*ids), 4.0)
    stubbed.stubber.assert_no_pending_responses()
    assert [u.metric for u in usages] == ["queries"] * 3
    assert "ThrottlingException" in usages[0].attributes["why_unpriced"]


def test_no_time_left_means_no_call_and_the_reason_kept():
    stubbed = StubbedSource()
    (usage,) = resolve_queries(stubbed.pending(str(uuid.uuid4())), 0.0)
    assert stubbed.configs == []
    assert "no time left" in usage.attributes["why_unpriced"]


def test_failed_cancelled_and_unfinished_queries_keep_their_usage():
    stubbed = StubbedSource()
    failed, cancelled, running = (str(uuid.uuid4()) for _ in range(3))
    stubbed.stubber.add_response(
        "batch_get_query_execution",
        {
            "QueryExecutions": [
                execution(failed, "FAILED", scanned=5 * MB),
                execution(cancelled, "CANCELLED", scanned=3 * MB),
                execution(running, "RUNNING"),
            ]
        },
    )
    by_id = {u.external_id: u for u in resolve_queries(stubbed.pending(failed, cancelled, running), 4.0)}
    assert by_id[failed].quantity == 0 and by_id[failed].attributes["scanned_bytes"] == 5 * MB
    assert by_id[failed].attributes["not_billed"] == "failed queries are not billed"
    assert by_id[cancelled].quantity == 10 * MB and by_id[cancelled].attributes["state"] == "CANCELLED"
    assert by_id[running].metric == "queries"
    assert "still RUNNING" in by_id[running].attributes["why_unpriced"]


# --------------------------------------------------------------------------- AthenaSQLHook (PyAthena)


@pytest.fixture
def sql_statements():
    instrumentation = SqlStatements()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def pyathena_connection(monkeypatch):
    """A real PyAthena connection whose boto3 client answers from a Stubber, served to AthenaSQLHook."""
    import pyathena

    connection = pyathena.connect(
        region_name="us-east-1",
        work_group="primary",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        poll_interval=0.01,
    )
    monkeypatch.setattr(AthenaSQLHook, "get_conn", lambda self: connection)
    with Stubber(connection.client) as stubber:
        connection.stubber = stubber
        yield connection


def test_athena_sql_statements_are_tagged_and_priced_from_pyathenas_own_statistics(
    sql_statements, session, pyathena_connection
):
    qid = str(uuid.uuid4())
    stubber = pyathena_connection.stubber
    comment = format_comment(session.tags)
    # the parameter is filled in by PyAthena's %-formatting; the comment comes out as written
    sent = f"SELECT * FROM orders WHERE day = '2026-11-20' {comment}"
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": qid},
        {"QueryString": sent, "WorkGroup": "primary", "QueryExecutionContext": ANY},
    )
    stubber.add_response(
        "get_query_execution",
        {
            "QueryExecution": execution(
                qid, scanned=12_345_678, query=sent, submitted=dt.datetime.now(dt.timezone.utc)
            )
        },
        {"QueryExecutionId": qid},
    )
    stubber.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [], "ResultSetMetadata": {"ColumnInfo": []}}},
        {"QueryExecutionId": qid, "MaxResults": ANY},
    )
    AthenaSQLHook(athena_conn_id="athena_shop").run(
        "SELECT * FROM orders WHERE day = %(day)s", parameters={"day": "2026-11-20"}
    )
    (usage,) = session.usage
    assert (usage.source, usage.external_id, usage.quantity) == ("athena", qid, Decimal(13 * MB))
    assert usage.attributes["conn_id"] == "athena_shop" and usage.attributes["scanned_bytes"] == 12_345_678
    assert session.pending == {}  # PyAthena had the statistics: no call at the end


def test_a_failed_athena_sql_statement_is_read_at_the_end(sql_statements, session, pyathena_connection):
    from pyathena.error import OperationalError

    qid = str(uuid.uuid4())
    stubber = pyathena_connection.stubber
    stubber.add_response("start_query_execution", {"QueryExecutionId": qid})
    stubber.add_response("get_query_execution", {"QueryExecution": execution(qid, "FAILED")})
    with pytest.raises(OperationalError):
        AthenaSQLHook(athena_conn_id="athena_shop").run("SELECT broken FROM orders")
    (item,) = session.pending[resolve_queries]
    assert item.query_execution_id == qid and item.attributes == {"conn_id": "athena_shop"}
    # its statistics are read through the connection's own session and endpoint, with our timeouts
    from botocore.config import Config

    client = athena._live_clients[item.client_key](Config(connect_timeout=1.5, read_timeout=1.5))
    assert client.meta.endpoint_url == pyathena_connection.client.meta.endpoint_url
    assert client.meta.config.read_timeout == 1.5 and client.meta.region_name == "us-east-1"


def test_an_answer_from_pyathenas_own_cache_is_not_billed_again(sql_statements, session, pyathena_connection):
    # PyAthena's cache_size option answers with an earlier query's id and statistics: nothing new ran
    qid = str(uuid.uuid4())
    stubber = pyathena_connection.stubber
    stubber.add_response("start_query_execution", {"QueryExecutionId": qid})
    stubber.add_response(
        "get_query_execution", {"QueryExecution": execution(qid, scanned=50 * MB, submitted=T0)}
    )
    stubber.add_response(
        "get_query_results", {"ResultSet": {"Rows": [], "ResultSetMetadata": {"ColumnInfo": []}}}
    )
    AthenaSQLHook(athena_conn_id="athena_shop").run("SELECT 1")
    (usage,) = session.usage
    assert usage.quantity == 0 and usage.attributes["answered_by"] == "pyathena_cache"
    assert usage.attributes["scanned_bytes"] == 50 * MB


def test_a_pending_query_survives_a_deferral_and_is_read_through_its_connection(
    queries, session, hook, monkeypatch
):
    from airflow_cost_provider.capture import deferral
    from tests.support.http_recorder import closed_port

    expect_start(hook, f"SELECT 1 {format_comment(session.tags)}", qid := str(uuid.uuid4()))
    hook.run_query("SELECT 1", {"Database": "shop"}, RESULTS)
    document = deferral.snapshot([], session.pending)
    assert document["usage"] == []  # carried as it is, not given up
    (restored,) = deferral.restore(document)[1]
    assert restored == (resolve_queries, session.pending[resolve_queries][0])
    # the resuming process has no live client: a new hook on the Airflow connection reads it
    unreachable = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(athena, "_live_clients", {})
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        f'{{"conn_type": "aws", "login": "k", "password": "s", "extra": {{"endpoint_url": "{unreachable}"}}}}',
    )
    item = replace(restored[1], aws_conn_id="aws_default")
    (usage,) = resolve_queries([item], 4.0)
    assert usage.external_id == qid
    assert "BatchGetQueryExecution failed: EndpointConnectionError" in usage.attributes["why_unpriced"]
    assert unreachable in usage.attributes["why_unpriced"]
