"""Redshift: the tagging and naming of Data API statements, the statistics and capacity look-ups at
finalize, and RedshiftSQLHook statements. The Data API paths run the real RedshiftDataHook and boto3
clients whose requests a botocore Stubber checks against the API models (no network). The
RedshiftSQLHook path runs the real hook class through the DB-API wrapper on SQLite standing in for
redshift_connector (which speaks only to Redshift), with PG_LAST_QUERY_ID() defined as Redshift's."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from dataclasses import replace
from decimal import Decimal
from types import SimpleNamespace

import boto3
import pytest
import wrapt
from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook, RedshiftDataQueryFailedError
from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook
from botocore.stub import Stubber

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import redshift
from airflow_cost_provider.instrumentation.redshift import (
    PendingStatement,
    RedshiftQueries,
    resolve_statements,
)
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.tagging import format_comment

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)
SECOND = 10**9


def client(service: str):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")


@pytest.fixture(autouse=True)
def empty_capacity_cache():
    redshift.clear_capacity_cache()
    yield
    redshift.clear_capacity_cache()


@pytest.fixture
def session():
    session = open_session(
        TaskTry("sales", "load", "scheduled__2026-11-20", 2, -1, "0192-ol"), worker.sample()
    )
    yield session
    clear_sessions()


@pytest.fixture
def queries():
    instrumentation = RedshiftQueries()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def hook():
    """A real RedshiftDataHook whose boto3 client answers from a Stubber."""
    hook = RedshiftDataHook(aws_conn_id=None, region_name="us-east-1")
    data = client("redshift-data")
    hook.__dict__["conn"] = data
    with Stubber(data) as stubber:
        hook.stubber = stubber
        yield hook


def statement_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ RedshiftDataHook.execute_query


def test_a_statement_is_tagged_named_and_kept_for_the_end(queries, session, hook):
    sid = statement_id()
    hook.stubber.add_response(
        "execute_statement",
        {"Id": sid},
        {
            "Sql": f"INSERT INTO sales SELECT * FROM staging {format_comment(session.tags)}",
            "ClusterIdentifier": "analytics",
            "Database": "dev",
            "DbUser": "etl",
            "StatementName": "sales.load.2",
            "WithEvent": False,
        },
    )
    output = hook.execute_query(
        sql="INSERT INTO sales SELECT * FROM staging",
        database="dev",
        cluster_identifier="analytics",
        db_user="etl",
        wait_for_completion=False,
    )
    assert output.statement_id == sid
    ((resolve, (item,)),) = session.pending.items()
    assert resolve is resolve_statements
    assert (item.statement_id, item.cluster_identifier, item.workgroup_name) == (sid, "analytics", None)
    assert item.attributes == {"database": "dev", "statement_name": "sales.load.2"}


def test_every_sql_of_a_batch_is_tagged_and_the_callers_name_kept(queries, session, hook):
    comment = format_comment(session.tags)
    hook.stubber.add_response(
        "batch_execute_statement",
        {"Id": (sid := statement_id())},
        {
            "Sqls": [f"DELETE FROM sales {comment}", f"INSERT INTO sales SELECT * FROM staging {comment};"],
            "WorkgroupName": "etl-wg",
            "Database": "dev",
            "StatementName": "nightly",
            "WithEvent": False,
        },
    )
    hook.execute_query(
        sql=["DELETE FROM sales", "INSERT INTO sales SELECT * FROM staging;"],
        database="dev",
        workgroup_name="etl-wg",
        statement_name="nightly",
        wait_for_completion=False,
    )
    (item,) = session.pending[resolve_statements]
    assert (item.statement_id, item.workgroup_name) == (sid, "etl-wg")


def test_a_statement_that_fails_while_waited_on_is_kept_and_its_error_propagates(queries, session, hook):
    sid = statement_id()
    hook.stubber.add_response("execute_statement", {"Id": sid})
    hook.stubber.add_response(
        "describe_statement", {"Id": sid, "Status": "FAILED", "Error": "ERROR: nope"}, {"Id": sid}
    )
    with pytest.raises(RedshiftDataQueryFailedError, match=sid):
        hook.execute_query(sql="SELECT nope", database="dev", cluster_identifier="analytics", poll_interval=0)
    assert [item.statement_id for item in session.pending[resolve_statements]] == [sid]


def test_outside_a_task_or_when_suppressed_nothing_changes(queries, session, hook):
    for sql in ("SELECT 1", "SELECT 2"):
        hook.stubber.add_response(
            "execute_statement",
            {"Id": statement_id()},
            {"Sql": sql, "ClusterIdentifier": "c", "WithEvent": False},
        )
    with suppress():
        hook.execute_query(sql="SELECT 1", cluster_identifier="c", wait_for_completion=False)
    clear_sessions()
    hook.execute_query(sql="SELECT 2", cluster_identifier="c", wait_for_completion=False)
    hook.stubber.assert_no_pending_responses()
    assert session.pending == {}


def test_tagging_switched_off_still_captures(queries, session, hook, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "redshift")
    conf.clear_cache()
    hook.stubber.add_response(
        "execute_statement",
        {"Id": statement_id()},
        {"Sql": "SELECT 1", "ClusterIdentifier": "c", "WithEvent": False},
    )
    hook.execute_query(sql="SELECT 1", cluster_identifier="c", wait_for_completion=False)
    assert len(session.pending[resolve_statements]) == 1


def test_a_failing_wrapper_runs_the_statement_once_and_warns_once(
    queries, session, hook, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("tagging exploded")

    monkeypatch.setattr(redshift, "add_sql_comment", broken)
    failures.clear()
    ids = [statement_id() for _ in range(3)]
    for n, sid in enumerate(ids):
        hook.stubber.add_response(
            "execute_statement",
            {"Id": sid},
            {"Sql": f"SELECT {n}", "ClusterIdentifier": "c", "WithEvent": False},
        )
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        outputs = [
            hook.execute_query(sql=f"SELECT {n}", cluster_identifier="c", wait_for_completion=False)
            for n in range(3)
        ]
    assert [o.statement_id for o in outputs] == ids
    hook.stubber.assert_no_pending_responses()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cost provider: tagging a Redshift statement failed: RuntimeError: tagging exploded (no impact on the task)"
    ]
    assert [i.statement_id for i in session.pending[resolve_statements]] == ids


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    originals = {name: RedshiftDataHook.__dict__[name] for name in ("execute_query", "wait_for_results")}
    instrumentation = RedshiftQueries()
    instrumentation.instrument()
    instrumentation.instrument()
    for name, original in originals.items():
        wrapped = RedshiftDataHook.__dict__[name]
        assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert {name: RedshiftDataHook.__dict__[name] for name in originals} == originals


# ------------------------------------------------------------------------- statistics at the end


class StubbedAws:
    """A RedshiftDataHook whose clients (Data API, Redshift, Redshift Serverless) answer from Stubbers."""

    def __init__(self) -> None:
        self.hook = RedshiftDataHook(aws_conn_id=None, region_name="us-east-1")
        self.clients = {name: client(name) for name in ("redshift-data", "redshift", "redshift-serverless")}
        self.stubbers = {name: Stubber(c) for name, c in self.clients.items()}
        for stubber in self.stubbers.values():
            stubber.activate()
        self.configs = []
        self.hook.get_client_type = self._data_client
        self.hook.get_session = lambda region_name=None: SimpleNamespace(client=self._service_client)

    def _data_client(self, region_name=None, config=None):
        self.configs.append(config)
        return self.clients["redshift-data"]

    def _service_client(self, service, **kwargs):
        self.configs.append(kwargs["config"])
        return self.clients[service]

    def describe(self, sid: str, duration_ns: int, status="FINISHED", **fields) -> None:
        answer = {
            "Id": sid,
            "Status": status,
            "Duration": duration_ns,
            "CreatedAt": T0,
            "UpdatedAt": T0 + dt.timedelta(seconds=5),
            **fields,
        }
        self.stubbers["redshift-data"].add_response("describe_statement", answer, {"Id": sid})

    def pending(self, sid: str, cluster=None, workgroup=None) -> PendingStatement:
        aws_conn_id, region_name = redshift.keep_hook(self.hook)
        return PendingStatement(sid, aws_conn_id, region_name, cluster, workgroup, {"database": "dev"})

    def assert_all_used(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def test_provisioned_statements_are_node_time_with_one_cluster_look_up():
    aws = StubbedAws()
    first, batch = statement_id(), statement_id()
    aws.describe(first, 1_500_000_000, RedshiftQueryId=101, ClusterIdentifier="analytics")
    aws.describe(
        batch,
        4 * SECOND,
        ClusterIdentifier="analytics",
        SubStatements=[
            {"Id": f"{batch}:1", "RedshiftQueryId": 201},
            {"Id": f"{batch}:2", "RedshiftQueryId": 202},
        ],
    )
    aws.stubbers["redshift"].add_response(
        "describe_clusters",
        {"Clusters": [{"ClusterIdentifier": "analytics", "NodeType": "ra3.4xlarge", "NumberOfNodes": 3}]},
        {"ClusterIdentifier": "analytics"},
    )
    one, two = resolve_statements([aws.pending(first), aws.pending(batch)], timeout_seconds=4.0)
    aws.assert_all_used()
    assert (one.metric, one.unit, one.quantity, one.resource, one.external_id) == (
        "node_time",
        "node-second",
        Decimal("4.5"),
        "analytics",
        first,
    )
    assert one.attributes["node_type"] == "ra3.4xlarge" and one.attributes["nodes"] == 3
    assert one.attributes["redshift_query_id"] == 101 and one.attributes["cost_method"] == "allocated"
    assert (one.start_time, one.end_time) == (T0, T0 + dt.timedelta(seconds=5))
    assert two.quantity == 12 and two.attributes["redshift_query_ids"] == "201,202"
    assert all(c.retries == {"total_max_attempts": 1} and c.read_timeout <= 4.0 / 3 for c in aws.configs)


def test_serverless_statements_are_rpu_time_and_the_workgroup_is_read_once_per_process():
    aws = StubbedAws()
    first, second = statement_id(), statement_id()
    aws.describe(first, 2 * SECOND, WorkgroupName="etl-wg")
    aws.stubbers["redshift-serverless"].add_response(
        "get_workgroup",
        {"workgroup": {"workgroupName": "etl-wg", "baseCapacity": 32}},
        {"workgroupName": "etl-wg"},
    )
    (usage,) = resolve_statements([aws.pending(first, workgroup="etl-wg")], 4.0)
    assert (usage.metric, usage.unit, usage.quantity, usage.resource) == (
        "rpu_time",
        "RPU-second",
        Decimal(64),
        "etl-wg",
    )
    assert usage.attributes["base_capacity"] == "32"
    # a later task of the same process: the workgroup's capacity comes from the cache
    aws.describe(second, SECOND, WorkgroupName="etl-wg")
    (again,) = resolve_statements([aws.pending(second)], 4.0)
    aws.assert_all_used()
    assert again.quantity == 32


def test_what_cannot_be_read_is_kept_with_the_reason():
    aws = StubbedAws()
    missing, running, unknown_cluster, failed = (statement_id() for _ in range(4))
    aws.stubbers["redshift-data"].add_client_error(
        "describe_statement", "ResourceNotFoundException", "expired"
    )
    aws.describe(running, 0, status="STARTED", ClusterIdentifier="analytics")
    aws.describe(unknown_cluster, 2 * SECOND, ClusterIdentifier="gone")
    aws.stubbers["redshift"].add_client_error(
        "describe_clusters", "ClusterNotFound", "Cluster gone not found."
    )
    aws.describe(failed, -1, status="FAILED", ClusterIdentifier="gone")  # no Duration: CreatedAt..UpdatedAt
    usages = resolve_statements([aws.pending(s) for s in (missing, running, unknown_cluster, failed)], 4.0)
    aws.assert_all_used()  # the missing cluster was asked for once
    by_id = {u.external_id: u for u in usages}
    assert by_id[missing].metric == "queries"
    assert "DescribeStatement failed" in by_id[missing].attributes["why_unpriced"]
    assert "still STARTED" in by_id[running].attributes["why_unpriced"]
    assert by_id[running].attributes["status"] == "STARTED"
    gone = by_id[unknown_cluster]
    assert (gone.metric, gone.unit, gone.quantity) == ("execution_time", "second", Decimal(2))
    assert "DescribeClusters for 'gone' failed" in gone.attributes["why_unpriced"]
    assert (
        by_id[failed].quantity == Decimal(5)
        and by_id[failed].attributes["duration_from"] == "CreatedAt..UpdatedAt"
    )


def test_no_time_left_keeps_the_statements_unpriced():
    aws = StubbedAws()
    (usage,) = resolve_statements([aws.pending(statement_id(), cluster="analytics")], 0.0)
    assert aws.configs == [] and "no time left" in usage.attributes["why_unpriced"]


# --------------------------------------------------------------- RedshiftSQLHook (redshift_connector)


@pytest.fixture
def sql_statements():
    instrumentation = SqlStatements()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


class SqliteRedshiftHook(RedshiftSQLHook):
    """The real RedshiftSQLHook, on a DB-API connection that answers PG_LAST_QUERY_ID() like Redshift."""

    def __init__(self, path, **kwargs) -> None:
        super().__init__(redshift_conn_id="warehouse", **kwargs)
        self.path = str(path)
        self.sent: list[str] = []

    def get_conn(self):
        connection = sqlite3.connect(self.path)
        connection.create_function("PG_LAST_QUERY_ID", 0, lambda: 4242)
        connection.set_trace_callback(self.sent.append)
        return connection

    def get_conn_id(self) -> str:
        return "warehouse"

    def set_autocommit(self, conn, autocommit) -> None:
        pass  # sqlite3 of Python 3.11 has no autocommit attribute

    def get_autocommit(self, conn) -> bool:
        return False


def test_redshift_sql_statements_are_tagged_and_priced_as_node_time(
    sql_statements, session, monkeypatch, tmp_path
):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING",
        '{"warehouse": {"node_type": "ra3.xlplus", "nodes": "2"}}',
    )
    conf.clear_cache()
    hook = SqliteRedshiftHook(tmp_path / "warehouse.db")
    assert hook.get_records("SELECT 40 + 2") == [(42,)]  # the hook still fetches its own rows
    assert f"SELECT 40 + 2 {format_comment(session.tags)}" in hook.sent
    (usage,) = session.usage
    assert (usage.source, usage.metric, usage.unit, usage.resource) == (
        "redshift",
        "node_time",
        "node-second",
        "warehouse",
    )
    assert usage.external_id == "4242" and usage.attributes["redshift_query_id"] == 4242
    assert usage.attributes["node_type"] == "ra3.xlplus" and usage.attributes["nodes"] == 2
    assert 0 < usage.quantity < 10


def test_redshift_sql_without_node_pricing_is_unpriced_with_how_to_set_it(sql_statements, session, tmp_path):
    hook = SqliteRedshiftHook(tmp_path / "warehouse.db")
    hook.run("SELECT 1")
    (usage,) = session.usage
    assert (usage.metric, usage.unit) == ("execution_time", "second")
    assert '"warehouse": {"node_type": "ra3.xlplus", "nodes": "2"}' in usage.attributes["why_unpriced"]


def test_a_failed_redshift_sql_statement_is_measured_without_another_query(sql_statements, session, tmp_path):
    hook = SqliteRedshiftHook(tmp_path / "warehouse.db")
    with pytest.raises(sqlite3.OperationalError):
        hook.run("SELECT * FROM missing")
    (usage,) = session.usage
    assert usage.attributes["failed"] is True and usage.external_id is None
    assert not [s for s in hook.sent if "PG_LAST_QUERY_ID" in s]


def test_a_pending_statement_survives_a_deferral_and_is_read_through_its_connection(
    queries, session, hook, monkeypatch
):
    from airflow_cost_provider.capture import deferral
    from tests.support.http_recorder import closed_port

    hook.stubber.add_response("execute_statement", {"Id": (sid := statement_id())})
    hook.execute_query(sql="SELECT 1", cluster_identifier="analytics", wait_for_completion=False)
    document = deferral.snapshot([], session.pending)
    assert document["usage"] == []
    ((resolve, restored),) = deferral.restore(document)[1]
    assert (resolve, restored) == (resolve_statements, session.pending[resolve_statements][0])
    unreachable = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(redshift, "_live_hooks", {})
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        f'{{"conn_type": "aws", "login": "k", "password": "s", "extra": {{"endpoint_url": "{unreachable}"}}}}',
    )
    (usage,) = resolve_statements([replace(restored, aws_conn_id="aws_default")], 4.0)
    assert usage.external_id == sid and restored.cluster_identifier == "analytics"
    assert "DescribeStatement failed: EndpointConnectionError" in usage.attributes["why_unpriced"]
    assert unreachable in usage.attributes["why_unpriced"]
