"""BigQuery jobs through the Google provider's real BigQueryHook and google-cloud-bigquery client,
against the BigQuery REST fake on 127.0.0.1: labels and comments, measurement from the job's own
statistics, look-ups at task end, failure isolation, and patching that is symmetric and idempotent."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from decimal import Decimal

import pytest
import wrapt
from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
from google.api_core.exceptions import BadRequest, Conflict
from google.cloud import bigquery as bigquery_client

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, is_suppressed, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import bigquery
from airflow_cost_provider.instrumentation.bigquery import (
    MAX_LABELS,
    SQL_ENGINE,
    BigQueryJobs,
    job_usage,
    merged_labels,
    resolve_jobs,
    tagged_configuration,
)
from airflow_cost_provider.tagging import bigquery_labels
from tests.support.fake_bigquery import JobPlan, fake_bigquery
from tests.support.http_recorder import closed_port

PROJECT = "unit-project"
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
HOSTILE = TaskTry(
    dag_id="Sales*/ DROP",
    task_id="load 'orders'\nnow",
    run_id='manual__2026-11-20T00:00:00+00:00 */ --"ü',
    try_number=2,
    map_index=3,
    ol_run_id="019b7c01-0400-72a9-abc4-aa8a1d01f065",
)


def query(sql: str, **extra) -> dict:
    return {"query": {"query": sql, "useLegacySql": False, **extra}}


@pytest.fixture
def server(monkeypatch):
    with fake_bigquery() as fake:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", fake.url)
        monkeypatch.setenv(
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
            json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
            ),
        )
        yield fake


@pytest.fixture
def jobs():
    instrumentation = BigQueryJobs()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def session():
    session = open_session(HOSTILE, worker.sample())
    yield session
    clear_sessions()


def hook() -> BigQueryHook:
    return BigQueryHook(use_legacy_sql=False)


def pending(session) -> list:
    return session.pending.get(resolve_jobs, [])


# ------------------------------------------------------------------------------------ pure parts


def test_hostile_identity_makes_valid_labels_and_a_comment_that_cannot_be_broken():
    tagged = tagged_configuration(query("SELECT 1"), HOSTILE.tags())
    labels = tagged["labels"]
    assert set(labels) == set(HOSTILE.tags())
    assert all(LABEL_KEY.match(k) and LABEL_VALUE.match(v) for k, v in labels.items()), labels
    assert labels["airflow_task_id"] == "load__orders__now"
    text = tagged["query"]["query"]
    assert text.startswith("SELECT 1 /*") and text.endswith("*/")
    assert text.count("*/") == 1 and "\n" not in text


def test_user_labels_win_and_the_label_limit_holds():
    task_labels = bigquery_labels(HOSTILE.tags())
    merged = merged_labels({"team": "finance", "airflow_dag_id": "mine"}, task_labels)
    assert merged["team"] == "finance" and merged["airflow_dag_id"] == "mine"
    assert merged["airflow_task_id"] == task_labels["airflow_task_id"]
    crowded = {f"user_{n}": "x" for n in range(MAX_LABELS - 2)}
    merged = merged_labels(crowded, task_labels)
    # room for two: the ones that identify the try best
    assert len(merged) == MAX_LABELS
    assert set(merged) - set(crowded) == {"openlineage_run_id", "airflow_dag_id"}
    full = {f"user_{n}": "x" for n in range(MAX_LABELS)}
    assert merged_labels(full, task_labels) == full


def test_the_callers_configuration_is_left_as_it_was():
    configuration = {**query("SELECT 2;"), "labels": {"team": "finance"}}
    before = copy.deepcopy(configuration)
    tagged = tagged_configuration(configuration, HOSTILE.tags())
    assert configuration == before
    assert tagged["query"]["query"].endswith("*/;") and tagged["labels"]["team"] == "finance"


def test_only_googlesql_gets_the_comment():
    tags = HOSTILE.tags()
    legacy = tagged_configuration({"query": {"query": "SELECT 1 FROM [p:d.t]"}}, tags)
    assert legacy["query"]["query"] == "SELECT 1 FROM [p:d.t]" and legacy["labels"]
    prefixed = tagged_configuration({"query": {"query": "#standardSQL\nSELECT 1"}}, tags)
    assert "/*airflow_dag_id=" in prefixed["query"]["query"]
    once = tagged_configuration(query("SELECT 1"), tags)
    twice = tagged_configuration(once, tags)
    assert twice["query"]["query"] == once["query"]["query"]
    # a load job has no query text, and labels that are not a mapping are the user's business
    load = tagged_configuration({"load": {"sourceUris": ["gs://b/x.csv"]}, "labels": "odd"}, tags)
    assert load == {"load": {"sourceUris": ["gs://b/x.csv"]}, "labels": "odd"}


def resource(state="DONE", job_type="QUERY", query_stats=None, **statistics) -> dict:
    stats = {"creationTime": "1795000000000", "startTime": "1795000001000", "endTime": "1795000003500"}
    stats.update(statistics)
    if query_stats is not None:
        stats["query"] = query_stats
    return {
        "jobReference": {"projectId": "p", "jobId": "j1", "location": "EU"},
        "configuration": {"jobType": job_type},
        "status": {"state": state},
        "statistics": stats,
    }


def test_job_usage_on_demand_and_editions():
    job = resource(
        query_stats={
            "totalBytesBilled": "20971520",
            "totalBytesProcessed": "20000000",
            "statementType": "SELECT",
        },
        totalSlotMs="4321",
    )
    usage = job_usage(job, "on_demand")
    assert (usage.metric, usage.quantity, usage.unit) == ("bytes_billed", Decimal(20971520), "byte")
    assert (usage.external_id, usage.resource) == ("j1", "p:EU")
    assert usage.attributes["pricing_model"] == "on_demand" and usage.attributes["cache_hit"] is False
    assert usage.attributes["total_bytes_processed"] == 20000000
    assert (usage.end_time - usage.start_time).total_seconds() == 2.5
    usage = job_usage(job, "enterprise_plus")
    assert (usage.metric, usage.quantity, usage.unit) == ("slot_time", Decimal(4321), "slot-ms")
    assert usage.attributes["edition"] == "enterprise_plus"


def test_job_usage_of_cache_hits_failures_and_unfinished_jobs():
    cached = job_usage(resource(query_stats={"cacheHit": True, "totalBytesBilled": "0"}), "standard")
    assert cached.quantity == 0 and cached.attributes["cache_hit"] is True
    failed = resource(query_stats={"statementType": "SELECT"})
    failed["status"]["errorResult"] = {"reason": "invalidQuery", "message": "Syntax error: secret_table"}
    usage = job_usage(failed, "on_demand")
    assert usage.quantity == 0 and usage.attributes["failed"] is True
    assert usage.attributes["error_reason"] == "invalidQuery"
    assert "secret_table" not in json.dumps(usage.attributes)
    assert job_usage(resource(state="RUNNING"), "on_demand") is None
    # finished but without the number its model needs: looked up again, never taken as zero
    assert job_usage(resource(query_stats={"statementType": "SELECT"}), "on_demand") is None
    assert job_usage(resource(query_stats={"totalBytesProcessed": "5"}), "standard") is None
    # ... unless the job read nothing (a metadata-only statement)
    ddl = job_usage(
        resource(query_stats={"totalBytesProcessed": "0", "statementType": "CREATE_VIEW"}), "standard"
    )
    assert ddl.quantity == 0 and ddl.attributes["statement_type"] == "CREATE_VIEW"


def test_load_jobs_are_free_on_the_shared_pool_and_charged_on_a_reservation():
    shared = job_usage(resource(job_type="LOAD", totalSlotMs="9000"), "enterprise")
    assert shared.quantity == 0 and shared.attributes["shared_slot_pool"] is True
    reserved = job_usage(
        resource(job_type="LOAD", totalSlotMs="9000", reservation_id="p:EU.etl"), "enterprise"
    )
    assert reserved.quantity == 9000 and reserved.attributes["reservation_id"] == "p:EU.etl"


# -------------------------------------------------------------------- through the real hook


def test_a_finished_job_is_tagged_and_measured_from_the_job_returned(server, jobs, session):
    server.plan("orders", JobPlan(bytes_billed=52_428_800, statement_type="SELECT"))
    configuration = {**query("SELECT * FROM d.orders"), "labels": {"team": "finance"}}
    before = copy.deepcopy(configuration)
    job = hook().insert_job(configuration=configuration, project_id=PROJECT)
    assert job.state == "DONE"
    assert configuration == before
    (body,) = server.inserted()
    assert body["configuration"]["labels"]["team"] == "finance"
    assert body["configuration"]["labels"]["openlineage_run_id"] == HOSTILE.ol_run_id
    assert body["configuration"]["query"]["query"].startswith("SELECT * FROM d.orders /*airflow_dag_id=")
    (usage,) = session.usage
    assert (usage.external_id, usage.quantity) == (job.job_id, Decimal(52_428_800))
    # measured from the job the hook's own polling left finished: nothing left to look up
    assert usage.resource == f"{PROJECT}:US" and pending(session) == []


def test_a_nowait_job_is_looked_up_once_at_task_end_under_suppress(server, jobs, session, monkeypatch):
    server.plan("events", JobPlan(bytes_billed=1_048_576, running_reads=1))
    job = hook().insert_job(configuration=query("SELECT * FROM d.events"), project_id=PROJECT, nowait=True)
    assert job.state == "RUNNING" and session.usage == []
    (item,) = pending(session)
    assert (item.job_id, item.project, item.location) == (job.job_id, PROJECT, "US")

    seen = []
    original = bigquery_client.Client.get_job

    def spy(self, *args, **kwargs):
        seen.append((is_suppressed(), kwargs.get("timeout")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bigquery_client.Client, "get_job", spy)
    (early,) = resolve_jobs([item], 5.0)  # the fake answers RUNNING to the first read
    assert "still RUNNING" in early.attributes["why_unpriced"] and early.external_id == job.job_id
    (usage,) = resolve_jobs([item], 5.0)
    assert usage.quantity == 1_048_576 and usage.metric == "bytes_billed"
    assert all(suppressed for suppressed, _ in seen) and all(0 < t <= 5.0 for _, t in seen)


def test_a_pending_job_is_plain_data_that_can_be_kept_and_restored(server, jobs, session):
    h = BigQueryHook(impersonation_chain=["a@p.iam", "b@p.iam"], use_legacy_sql=False)
    item = bigquery.PendingJob.of(h, "job_1", PROJECT, "EU")
    fields = json.loads(json.dumps(dataclasses.asdict(item)))
    assert fields["impersonation_chain"] == ["a@p.iam", "b@p.iam"]
    assert bigquery.PendingJob(**fields) == item
    # the hook that started it is reused at task end: its credentials are already loaded
    assert bigquery._hook_for(bigquery.PendingJob(**fields)) is h


def test_many_pending_jobs_resolve_together_and_running_ones_stay_unpriced(server, jobs, session):
    server.plan("quick", JobPlan(bytes_billed=1_000, running_reads=0))
    server.plan("forever", JobPlan(never_finishes=True))
    h = hook()
    for n in range(3):
        h.insert_job(configuration=query(f"SELECT {n} FROM d.quick"), project_id=PROJECT, nowait=True)
    h.insert_job(configuration=query("SELECT * FROM d.forever"), project_id=PROJECT, nowait=True)
    # the quick ones were DONE in the insert response: measured at once
    assert len(session.usage) == 3 and len(pending(session)) == 1
    (unpriced,) = resolve_jobs(pending(session), 5.0)
    assert unpriced.metric == "queries" and unpriced.quantity == 1
    assert "still RUNNING when the task ended" in unpriced.attributes["why_unpriced"]


def test_resolving_in_parallel_keeps_every_job(server, jobs, session):
    server.plan("slow", JobPlan(bytes_billed=2_000, running_reads=0))
    h = hook()
    items = []
    for n in range(4):
        job = h.insert_job(configuration=query(f"SELECT {n} FROM d.slow"), project_id=PROJECT, nowait=True)
        items.append(bigquery.PendingJob(job.job_id, PROJECT, "US"))
    usages = resolve_jobs(items, 5.0)
    assert sorted(u.external_id for u in usages) == sorted(i.job_id for i in items)
    assert all(u.quantity == 2_000 for u in usages)


def test_a_look_up_that_fails_or_runs_out_of_time_keeps_the_job_unpriced(server, jobs, session, monkeypatch):
    job = hook().insert_job(configuration=query("SELECT 1"), project_id=PROJECT, nowait=True)
    (item,) = pending(session)
    (late,) = resolve_jobs([item], 0.0)
    assert "no time left" in late.attributes["why_unpriced"] and late.external_id == job.job_id
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{closed_port()}")
    unreachable = bigquery.PendingJob(job.job_id, PROJECT, "US")
    (failed,) = resolve_jobs([unreachable], 1.0)
    assert "jobs.get failed" in failed.attributes["why_unpriced"]


def test_a_failed_job_raises_unchanged_and_still_produces_its_usage(server, jobs, session):
    server.plan("broken", JobPlan(bytes_billed=10_485_760, error_reason="invalidQuery"))
    with pytest.raises(BadRequest) as raised:
        hook().insert_job(configuration=query("SELECT broken"), project_id=PROJECT)
    (item,) = pending(session)
    assert item.job_id == raised.value.query_job.job_id
    (usage,) = resolve_jobs([item], 5.0)
    assert usage.attributes["failed"] is True and usage.quantity == 10_485_760


def test_a_refused_insert_or_an_existing_job_is_not_the_tasks(server, jobs, session):
    h = hook()
    h.insert_job(configuration=query("SELECT 1"), project_id=PROJECT, job_id="fixed_id", nowait=True)
    with pytest.raises(Conflict):
        h.insert_job(configuration=query("SELECT 1"), project_id=PROJECT, job_id="fixed_id", nowait=True)
    assert [i.job_id for i in pending(session)] == ["fixed_id"]
    # an insert that never reached BigQuery: nothing ran, so nothing is billed
    refused = bigquery.PendingJob("never_created", PROJECT, "US", insert_failed=True)
    assert resolve_jobs([refused], 5.0) == []


def test_outside_a_task_or_when_suppressed_nothing_changes(server, jobs, session):
    with suppress():
        hook().insert_job(configuration=query("SELECT 1"), project_id=PROJECT)
    clear_sessions()
    hook().insert_job(configuration=query("SELECT 2"), project_id=PROJECT)
    assert [b["configuration"] for b in server.inserted()] == [query("SELECT 1"), query("SELECT 2")]
    assert session.usage == [] and pending(session) == []


def test_tagging_switched_off_still_measures(server, jobs, session, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "bigquery")
    conf.clear_cache()
    hook().insert_job(configuration=query("SELECT 3"), project_id=PROJECT)
    (body,) = server.inserted()
    assert "labels" not in body["configuration"] and body["configuration"]["query"]["query"] == "SELECT 3"
    assert len(session.usage) == 1


def test_a_dry_run_is_not_recorded(server, jobs, session):
    hook().insert_job(configuration={**query("SELECT 4"), "dryRun": True}, project_id=PROJECT)
    assert session.usage == [] and pending(session) == []


def test_an_edition_project_records_slot_time(server, jobs, session, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BIGQUERY_PRICING", json.dumps({PROJECT: "standard"}))
    conf.clear_cache()
    server.plan("slots", JobPlan(bytes_billed=1, slot_ms=60_000))
    hook().insert_job(configuration=query("SELECT * FROM d.slots"), project_id=PROJECT)
    (usage,) = session.usage
    assert (usage.metric, usage.quantity, usage.attributes["edition"]) == ("slot_time", 60_000, "standard")


def test_a_failing_wrapper_runs_the_job_once_and_warns_once(server, jobs, session, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("cost capture exploded")

    monkeypatch.setattr(bigquery, "tagged_configuration", broken)
    monkeypatch.setattr(bigquery, "job_usage", broken)
    failures.clear()
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        results = [
            hook().insert_job(configuration=query(f"SELECT {n}"), project_id=PROJECT) for n in range(3)
        ]
    assert [r.state for r in results] == ["DONE"] * 3
    assert [b["configuration"]["query"]["query"] for b in server.inserted()] == [
        "SELECT 0",
        "SELECT 1",
        "SELECT 2",
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "tagging a BigQuery job" in w.getMessage()]) == 1
    assert len([w for w in warnings if "measuring a BigQuery job" in w.getMessage()]) == 1
    assert all("no impact on the task" in w.getMessage() for w in warnings)
    # not measured at once, so each job is still looked up at task end
    assert len(pending(session)) == 3


def test_positional_arguments_reach_the_hook_untouched(server, jobs, session):
    with pytest.raises(Exception, match="keyword arguments"):
        hook().insert_job(query("SELECT 1"))
    assert server.inserted() == [] and session.usage == [] and pending(session) == []


def test_the_sql_engine_leaves_statements_to_insert_job(session):
    assert SQL_ENGINE.source == "bigquery"
    assert SQL_ENGINE.tag("SELECT 1", session, None) == "SELECT 1"
    SQL_ENGINE.measure(session, None)
    assert session.usage == []


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = BigQueryHook.__dict__["insert_job"]
    instrumentation = BigQueryJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = BigQueryHook.__dict__["insert_job"]
    assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert BigQueryHook.__dict__["insert_job"] is original
    instrumentation.instrument()
    assert BigQueryHook.__dict__["insert_job"].__wrapped__ is original
    instrumentation.uninstrument()
