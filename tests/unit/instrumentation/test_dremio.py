"""Dremio: the pure parts (endpoints, tagging, engine time in DCUs) and the wrapper around the real
`HttpHook.run`, whose HTTP exchange is replaced by a recorder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
from decimal import Decimal

import pytest
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.providers.http.hooks.http import HttpHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import dremio
from airflow_cost_provider.instrumentation.dremio import (
    DremioJob,
    DremioJobs,
    job_endpoint,
    job_usage,
    resolve_jobs,
    sql_endpoint,
    tagged_body,
)
from airflow_cost_provider.instrumentation.sql import SqlStatements, Statement
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tracker import price_book

OL_RUN_ID = "0192f0c1-0000-7000-8000-000000000001"
COMMENT = "/*airflow_dag_id='dag'*/"
JOB = {
    "jobState": "COMPLETED",
    "rowCount": 11,
    "errorMessage": "",
    "startedAt": "2022-12-13T18:34:14.069Z",
    "endedAt": "2022-12-13T18:35:09.963Z",
    "queryType": "REST",
    "queueName": "LARGE",
    "queueId": "f6a5ef4f-ce5c-4be4-95b2-092c36721dc5",
    "resourceSchedulingStartedAt": "2022-12-13T18:34:14.977Z",
    "resourceSchedulingEndedAt": "2022-12-13T18:34:14.995Z",
    "cancellationReason": "",
}
# resourceSchedulingEndedAt -> endedAt
ENGINE_MS = Decimal(54_968)


def test_sql_and_job_endpoints_of_both_deployments():
    assert sql_endpoint("api/v3/sql") == (True, None)
    assert sql_endpoint("/api/v3/sql/") == (True, None)
    assert sql_endpoint("dremio/api/v3/sql?x=1") == (True, None)
    assert sql_endpoint("v0/projects/p-1/sql") == (True, "p-1")
    assert sql_endpoint("api/v3/sqlx") == (False, None)
    assert sql_endpoint("api/v3/catalog") == (False, None)
    assert sql_endpoint(None) == (False, None)
    assert job_endpoint("api/v3/job/j-1") == ("j-1", None)
    assert job_endpoint("/v0/projects/p-1/job/j-2/") == ("j-2", "p-1")
    assert job_endpoint("api/v3/job/j-1/results") == (None, None)


def test_the_sql_is_tagged_in_the_body_type_it_came_in():
    text = json.dumps({"sql": "SELECT 1;", "context": ["lake"]})
    tagged = json.loads(tagged_body(text, COMMENT))
    assert tagged == {"sql": f"SELECT 1 {COMMENT};", "context": ["lake"]}
    assert json.loads(tagged_body(text.encode(), COMMENT))["sql"] == f"SELECT 1 {COMMENT};"
    body = {"sql": "SELECT 2"}
    assert tagged_body(body, COMMENT) == {"sql": f"SELECT 2 {COMMENT}"} and body == {"sql": "SELECT 2"}
    for untouched in ("not json", json.dumps([1]), json.dumps({"query": "SELECT 1"}), None, {"sql": 3}):
        assert tagged_body(untouched, COMMENT) == untouched


def usage_of(job, pricing, project_id=None):
    return job_usage(DremioJob("j-1", "dremio", project_id), job, pricing)


def test_engine_time_in_dcus_at_the_engine_sizes_rate():
    usage = usage_of(JOB, {"engine_size": "Medium"}, project_id="p-1")
    # Medium: 128 DCUs per hour x 54.968 s = 1.954417777777(7) DCU
    assert usage.metric == "dcu" and usage.unit == "DCU"
    assert usage.quantity == Decimal("1.954417777778")
    assert usage.resource == "LARGE" and usage.external_id == "j-1"
    attributes = usage.attributes
    assert attributes["deployment"] == "cloud" and attributes["project_id"] == "p-1"
    assert attributes["duration_ms"] == str(ENGINE_MS) and attributes["dcu_per_hour"] == "128"
    assert attributes["row_count"] == 11 and attributes["query_type"] == "REST"
    assert "failed" not in attributes
    # no Dremio Cloud price is shipped: unpriced, with what to add
    lines, unpriced = estimate_all([usage], price_book())
    assert not lines and "dremio/dcu" in unpriced[0].reason


def test_dremio_software_engine_priced_at_the_shipped_stand_in():
    usage = usage_of(JOB, {"dcu_per_hour": "6"})
    assert usage.quantity == Decimal("0.091613333333")  # 6 x 54.968 / 3600
    (line,), unpriced = estimate_all([usage], price_book())
    assert not unpriced and line.method == "runtime_rate"
    # 0.091613333333 x 0.04048 = 0.00370850773332, to the nano-unit
    assert (
        line.amount
        == quantize_amount(Decimal("0.091613333333") * Decimal("0.04048"))
        == Decimal("0.003708508")
    )
    assert line.price.match == (("deployment", "software"),)


def test_without_an_engine_size_the_engine_time_is_kept_with_what_to_set():
    usage = usage_of(JOB, {})
    assert usage.metric == "engine_time" and usage.unit == "ms" and usage.quantity == ENGINE_MS
    assert "engine_size" in usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    unknown = usage_of(JOB, {"engine_size": "Huge"})
    assert "'Huge'" in unknown.attributes[UNPRICED_HINT_ATTRIBUTE]
    assert "dremio_cloud_dcu_per_hour" in unknown.attributes[UNPRICED_HINT_ATTRIBUTE]
    bad = usage_of(JOB, {"dcu_per_hour": "many"})
    assert bad.metric == "engine_time" and "not a number" in bad.attributes[UNPRICED_HINT_ATTRIBUTE]


def test_running_failed_and_never_scheduled_jobs():
    running = usage_of({**JOB, "jobState": "RUNNING", "endedAt": None}, {"engine_size": "Small"})
    assert running.metric == "queries" and "still RUNNING" in running.attributes[UNPRICED_HINT_ATTRIBUTE]
    failed = usage_of({**JOB, "jobState": "FAILED"}, {"engine_size": "Small"})
    assert failed.metric == "dcu" and failed.attributes["failed"] is True
    assert failed.quantity == Decimal("0.977208888889")  # 64 x 54.968 / 3600
    planning = {k: v for k, v in JOB.items() if not k.startswith(("resource", "startedAt"))}
    never = usage_of({**planning, "jobState": "FAILED"}, {"engine_size": "Small"})
    assert (
        never.metric == "queries"
        and "before it reached an engine" in never.attributes[UNPRICED_HINT_ATTRIBUTE]
    )


class Response:
    def __init__(self, status_code, body):
        self.status_code, self._body = status_code, body

    def json(self):
        return self._body


@pytest.fixture
def hooks(monkeypatch):
    """HttpHook's request step replaced by a recorder answering as Dremio does."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREMIO", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 1})
    )
    sent = []

    def run_and_check(self, session, prepped, extra_options):
        sent.append((prepped.method, prepped.path_url, prepped.body, prepped.headers.get("Authorization")))
        if prepped.path_url.endswith("/sql"):
            return Response(200, {"id": f"job-{len(sent)}"})
        if "/job/" in prepped.path_url:
            return Response(200, JOB)
        return Response(404, {"errorMessage": "no"})

    monkeypatch.setattr(HttpHook, "run_and_check", run_and_check)
    instrumentation = DremioJobs()
    instrumentation.instrument()
    yield sent
    instrumentation.uninstrument()
    dremio.clear_state()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(TaskTry("dag", "task", "run", 1, -1, ol_run_id=OL_RUN_ID), worker.sample())


def test_a_query_is_tagged_its_job_kept_and_the_terminal_job_reused(hooks, session):
    hook = HttpHook(method="POST", http_conn_id="dremio")
    hook.run("api/v3/sql", json.dumps({"sql": "SELECT 1"}), headers={"Authorization": "Bearer pat"})
    ((_, path, body, _),) = hooks
    assert path == "/api/v3/sql" and OL_RUN_ID in json.loads(body)["sql"]
    ((resolve, (item,)),) = session.pending.items()
    assert resolve is resolve_jobs and (item.job_id, item.conn_id, item.project_id) == (
        "job-1",
        "dremio",
        None,
    )
    # the credentials stay in this process, never on the item (which a deferral writes to the ledger)
    assert "Bearer pat" not in json.dumps(dataclasses.asdict(item))
    HttpHook(method="GET", http_conn_id="dremio").run("api/v3/job/job-1")
    assert item.final_job["jobState"] == "COMPLETED"
    (usage,) = resolve_jobs([item], 5.0)
    assert usage.metric == "engine_time" and usage.quantity == ENGINE_MS
    assert len(hooks) == 2  # no look-up: the task read the terminal job itself


def test_the_end_looks_a_job_up_once_with_the_tasks_credentials(hooks, session):
    HttpHook(http_conn_id="dremio").run(
        "v0/projects/p-9/sql", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer pat"}
    )
    (item,) = session.pending[resolve_jobs]
    assert item.project_id == "p-9" and OL_RUN_ID in json.loads(hooks[0][2])["sql"]
    (usage,) = resolve_jobs([item, item], 5.0)
    assert hooks[1] == ("GET", "/v0/projects/p-9/job/job-1", None, "Bearer pat")
    assert usage.attributes["deployment"] == "cloud" and len(hooks) == 2


def test_a_look_up_that_fails_keeps_the_job_with_the_reason(hooks, session, monkeypatch):
    HttpHook(http_conn_id="dremio").run("api/v3/sql", json={"sql": "SELECT 1"})
    (item,) = session.pending[resolve_jobs]
    monkeypatch.setattr(dremio, "fetch_job", lambda *a: (_ for _ in ()).throw(ConnectionError("refused")))
    (usage,) = resolve_jobs([item], 5.0)
    assert usage.external_id == "job-1" and usage.metric == "queries"
    assert (
        usage.attributes[UNPRICED_HINT_ATTRIBUTE] == "GET api/v3/job/job-1 failed: ConnectionError: refused"
    )


def test_other_calls_rejected_queries_and_suppressed_calls_are_left_alone(hooks, session):
    HttpHook(http_conn_id="dremio").run("api/v3/catalog", json={"sql": "SELECT 1"})
    assert json.loads(hooks[-1][2]) == {"sql": "SELECT 1"}
    HttpHook(http_conn_id="dremio").run("api/v3/sqlx", extra_options={"check_response": False})
    with suppress():
        HttpHook(http_conn_id="dremio").run("api/v3/sql", json={"sql": "SELECT 2"})
    assert json.loads(hooks[-1][2]) == {"sql": "SELECT 2"}
    assert session.pending == {}


def test_a_failing_wrapper_still_makes_the_call_once_and_warns_once(hooks, session, monkeypatch, caplog):
    monkeypatch.setattr(dremio, "tagged_body", lambda *a: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        for _ in range(2):
            response = HttpHook(http_conn_id="dremio").run("api/v3/sql", json={"sql": "SELECT 1"})
            assert response.status_code == 200
    assert [json.loads(body) for _, _, body, _ in hooks] == [{"sql": "SELECT 1"}] * 2
    assert len([r for r in caplog.records if "tagging a Dremio query" in r.getMessage()]) == 1
    assert len(session.pending[resolve_jobs]) == 2  # untagged, still captured


def test_a_pending_job_survives_a_deferral():
    item = DremioJob("j-1", "dremio", "p-1", "2026-01-02T00:00:00+00:00", final_job=dict(JOB))
    document = json.loads(json.dumps(deferral.snapshot([], {resolve_jobs: [item]})))
    usages, ((resolve, restored),) = deferral.restore(document)
    assert usages == [] and resolve is resolve_jobs and restored == item


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = HttpHook.__dict__["run"]
    instrumentation = DremioJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    assert HttpHook.__dict__["run"].__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert HttpHook.__dict__["run"] is original


class DremioFlightHook(DbApiHook):
    """A user's DB-API hook of conn_type dremio (here over SQLite, standing in for Arrow Flight)."""

    conn_name_attr = "dremio_conn_id"
    default_conn_name = "dremio_flight"
    conn_type = "dremio"

    def __init__(self, path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = str(path)

    def get_conn(self):
        return sqlite3.connect(self.path)

    def get_conn_id(self) -> str:
        return "dremio_flight"


@pytest.fixture
def statements(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", '{"dremio_flight": {"engine_size": "XSmall"}}'
    )
    conf.clear_cache()
    instrumentation = SqlStatements()
    instrumentation.instrument()
    yield
    instrumentation.uninstrument()
    conf.clear_cache()


def test_db_api_statements_on_a_dremio_connection_are_priced_as_engine_time(statements, session, tmp_path):
    hook = DremioFlightHook(tmp_path / "flight.db")
    assert hook.get_first("SELECT 6 * 7") == (42,)
    (usage,) = session.usage
    assert (usage.source, usage.metric, usage.unit, usage.resource) == (
        "dremio",
        "dcu",
        "DCU",
        "dremio_flight",
    )
    elapsed_ms = Decimal(usage.attributes["duration_ms"])
    assert Decimal(0) < elapsed_ms < Decimal(5000)
    # XSmall: 32 DCUs per hour x the statement's time
    assert usage.quantity == (Decimal(32) * elapsed_ms / 3_600_000).quantize(Decimal("1e-12"))
    assert usage.attributes["deployment"] == "cloud" and usage.attributes["timed_by"] == "client"


def test_statement_usage_without_a_size_keeps_the_time():
    statement = Statement(None, None, "dremio_flight", dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
                          Decimal("1.5"), failed=True)  # fmt: skip
    usage = dremio.statement_usage(statement, {})
    assert (usage.metric, usage.quantity, usage.unit) == ("engine_time", Decimal("1500.000"), "ms")
    assert usage.attributes["failed"] is True and usage.attributes["deployment"] == "software"
    priced = dremio.statement_usage(statement, {"dcu_per_hour": "8"})
    assert priced.quantity == Decimal("0.003333333333")  # 8 x 1.5 s / 3600
    (line,), _ = estimate_all([priced], price_book())
    assert line.amount == quantize_amount(Decimal("0.003333333333") * Decimal("0.04048"))
