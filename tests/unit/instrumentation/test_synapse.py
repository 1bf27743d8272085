"""Synapse: Livy tags, a Spark batch's vCore time, and the wrappers around the real Synapse hooks, whose
clients are replaced by recorders."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from types import SimpleNamespace

import pytest
from airflow.providers.microsoft.azure.hooks.synapse import AzureSynapseHook, AzureSynapsePipelineHook
from azure.synapse.spark.models import SparkBatchJobOptions

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import synapse
from airflow_cost_provider.instrumentation.synapse import (
    SparkBatch,
    SynapseJobs,
    SynapsePipelineRun,
    merged_tags,
    requested_vcores,
    resolve_spark_batches,
    resolve_synapse_pipeline_runs,
    spark_usage,
    tagged_payload,
)
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tracker import price_book

TAGS = {"airflow_dag_id": "dag", "airflow_task_id": "task", "openlineage_run_id": "ol-1"}


def options(**extra) -> SparkBatchJobOptions:
    return SparkBatchJobOptions(
        name="job", file="abfss://a/b.py", driver_cores=4, executor_cores=8, executor_count=2, **extra
    )


def test_livy_tags_merge_with_the_users_and_the_callers_payload_is_kept():
    assert merged_tags({"airflow_task_id": "mine"}, TAGS) == {**TAGS, "airflow_task_id": "mine"}
    payload = options(tags={"team": "web"})
    tagged = tagged_payload(payload, TAGS)
    assert payload.tags == {"team": "web"} and tagged.tags == {"team": "web", **TAGS}
    assert tagged.executor_count == 2 and tagged.name == "job"
    assert tagged_payload({"name": "x"}, TAGS) == {"name": "x", "tags": TAGS}
    assert requested_vcores(payload) == 20 and requested_vcores({"driverCores": 1}) is None


def test_a_finished_batch_is_its_vcores_times_its_running_time():
    job = {
        "state": "success",
        "livyInfo": {"runningAt": "2026-01-02T00:00:00Z", "successAt": "2026-01-02T00:30:00.5Z"},
    }
    usage = spark_usage(SparkBatch(7, "c", "pool", 20), job)
    assert (usage.unit, usage.quantity) == ("vCore-second", Decimal("1800.5") * 20)
    (line,), _ = estimate_all([usage], price_book())
    assert line.amount == quantize_amount(Decimal("1800.5") * 20 * Decimal("0.143") / 3600)
    running = spark_usage(SparkBatch(7, "c", "pool", 20), {"state": "running"})
    assert "still running" in running.attributes["why_unpriced"]
    unknown = spark_usage(SparkBatch(7, "c", "pool", None), job)
    assert "no driver and executor cores" in unknown.attributes["why_unpriced"]


def test_pending_work_survives_a_deferral():
    batch, run = (
        SparkBatch(7, "c", "pool", 20),
        SynapsePipelineRun("r1", "c", "https://w.dev.azuresynapse.net", "p"),
    )
    document = json.loads(
        json.dumps(
            deferral.snapshot([], {resolve_spark_batches: [batch], resolve_synapse_pipeline_runs: [run]})
        )
    )
    assert deferral.restore(document) == (
        [],
        [(resolve_spark_batches, batch), (resolve_synapse_pipeline_runs, run)],
    )


def test_a_failing_batch_look_up_is_kept_unpriced_with_the_reason(monkeypatch):
    def failing(*args, **kwargs):
        raise TimeoutError("read timed out")

    client = SimpleNamespace(spark_batch=SimpleNamespace(get_spark_batch_job=failing))
    monkeypatch.setattr(synapse, "_spark_client", lambda item: client)
    (usage,) = resolve_spark_batches([SparkBatch(7, "c", "pool", 20)], 1.0)
    assert (
        usage.external_id == "7"
        and "Spark batch look-up failed: TimeoutError: read timed out" in usage.attributes["why_unpriced"]
    )


# ------------------------------------------------------------------------------------ wrappers


@pytest.fixture
def hooks(monkeypatch):
    instrumentation = SynapseJobs()
    instrumentation.instrument()
    spark = AzureSynapseHook("azure_synapse_default", spark_pool="pool")
    spark.sent = []

    def create(payload):
        spark.sent.append(payload)
        return SimpleNamespace(id=40 + len(spark.sent))

    monkeypatch.setattr(
        spark, "get_conn", lambda: SimpleNamespace(spark_batch=SimpleNamespace(create_spark_batch_job=create))
    )
    pipelines = AzureSynapsePipelineHook(
        azure_synapse_conn_id="azure_synapse_default",
        azure_synapse_workspace_dev_endpoint="https://w.dev.azuresynapse.net",
    )
    pipelines.started = []

    def create_run(name, **config):
        pipelines.started.append((name, config))
        return SimpleNamespace(run_id=f"run-{len(pipelines.started)}")

    monkeypatch.setattr(
        pipelines,
        "get_conn",
        lambda: SimpleNamespace(
            pipeline=SimpleNamespace(create_pipeline_run=create_run),
            pipeline_run=SimpleNamespace(get_pipeline_run=lambda run_id: SimpleNamespace(status="Succeeded")),
        ),
    )
    yield spark, pipelines
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(TaskTry("dag", "task", "run", 1, -1, ol_run_id="ol-1"), worker.sample())


def test_spark_batches_are_tagged_and_pipeline_runs_captured(hooks, session):
    spark, pipelines = hooks
    assert spark.run_spark_job(options()).id == 41
    assert spark.sent[0].tags["openlineage_run_id"] == "ol-1"
    (batch,) = session.pending[resolve_spark_batches]
    assert (batch.batch_id, batch.spark_pool, batch.vcores) == (41, "pool", 20)
    pipelines.run_pipeline("load", parameters={"day": "d"})
    assert pipelines.started == [("load", {"parameters": {"day": "d"}})]
    (run,) = session.pending[resolve_synapse_pipeline_runs]
    assert (run.run_id, run.pipeline, run.endpoint) == ("run-1", "load", "https://w.dev.azuresynapse.net")
    pipelines.get_pipeline_run("run-1")
    assert run.final_run is not None


def test_a_failing_wrapper_still_makes_the_call_once_and_warns_once(hooks, session, monkeypatch, caplog):
    spark, _ = hooks
    monkeypatch.setattr(synapse, "tagged_payload", lambda *a: 1 / 0)
    payload = options()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert spark.run_spark_job(payload).id == 41
        assert spark.run_spark_job(payload=payload).id == 42
    assert spark.sent == [payload, payload] and payload.tags is None
    assert len([r for r in caplog.records if "tagging a Synapse Spark batch" in r.getMessage()]) == 1


def test_suppressed_and_sessionless_calls_are_untouched(hooks, session):
    spark, pipelines = hooks
    payload = options()
    with suppress():
        spark.run_spark_job(payload)
    clear_sessions()
    spark.run_spark_job(payload)
    pipelines.run_pipeline("load")
    assert spark.sent == [payload, payload] and payload.tags is None and session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = AzureSynapseHook.__dict__["run_spark_job"]
    instrumentation = SynapseJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    assert AzureSynapseHook.__dict__["run_spark_job"].__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert AzureSynapseHook.__dict__["run_spark_job"] is original
    assert "__wrapped__" not in vars(AzureSynapsePipelineHook.__dict__["run_pipeline"])
