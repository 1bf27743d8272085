"""Dataproc: the pure parts (labels, machine types, a job's allocated cluster time, a batch's usage) and
the wrappers around the real `DataprocHook`, whose API clients are replaced by recorders."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from types import SimpleNamespace

import pytest
from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
from google.cloud.dataproc_v1 import Batch, Job

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import dataproc
from airflow_cost_provider.instrumentation.dataproc import (
    DataprocBatch,
    DataprocJob,
    DataprocJobs,
    batch_usage,
    job_usage,
    merged_labels,
    resolve_batches,
    resolve_jobs,
    tagged_resource,
    vcpus_of,
)
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tracker import price_book

TAGS = {
    "airflow_dag_id": "Sales.Daily",
    "airflow_task_id": "load",
    "airflow_run_id": "manual__2026-01-02T00:00:00+00:00",
    "airflow_try_number": "1",
    "airflow_map_index": "-1",
    "openlineage_run_id": "0192f0c1-0000-7000-8000-000000000001",
}
CLUSTER = {
    "cluster_name": "etl",
    "cluster_uuid": "u-1",
    "config": {
        "master_config": {
            "num_instances": 1,
            "machine_type_uri": "zones/us-central1-a/machineTypes/n2-standard-4",
        },
        "worker_config": {"num_instances": 2, "machine_type_uri": "n2-standard-8"},
    },
}


def finished_job(**fields) -> dict:
    return {
        "reference": {"project_id": "p", "job_id": "j1"},
        "placement": {"cluster_name": "etl"},
        "status": {"state": "DONE", "state_start_time": "2026-01-02T01:00:30Z"},
        "status_history": [
            {"state": "PENDING", "state_start_time": "2026-01-02T00:59:00Z"},
            {"state": "RUNNING", "state_start_time": "2026-01-02T01:00:00Z"},
        ],
        **fields,
    }


def test_labels_follow_gcp_syntax_and_the_users_win():
    labels = merged_labels({"team": "growth", "airflow_task_id": "mine"}, TAGS)
    assert labels["airflow_dag_id"] == "sales_daily" and labels["airflow_task_id"] == "mine"
    assert labels["airflow_run_id"] == "manual__2026-01-02t00_00_00_00_00"
    assert len(merged_labels({f"k{i}": "v" for i in range(63)}, TAGS)) == 64


def test_a_job_dict_or_message_gets_the_labels_and_the_callers_is_kept():
    job = {"placement": {"cluster_name": "etl"}, "labels": {"team": "a"}}
    tagged = tagged_resource(job, TAGS)
    assert job == {"placement": {"cluster_name": "etl"}, "labels": {"team": "a"}}
    assert tagged["labels"]["team"] == "a" and tagged["labels"]["airflow_task_id"] == "load"
    message = Batch(labels={"team": "b"})
    tagged = tagged_resource(message, TAGS)
    assert (
        dict(message.labels) == {"team": "b"}
        and tagged.labels["openlineage_run_id"] == TAGS["openlineage_run_id"]
    )


def test_vcpus_are_read_from_machine_type_names():
    assert [
        vcpus_of(m)
        for m in ("n1-standard-4", "n2-highmem-16", "e2-medium", "custom-6-23040", "n2d-custom-8-16384")
    ] == [4, 16, 2, 6, 8]
    assert vcpus_of("a2-highgpu-1g") is None


def test_a_job_is_allocated_its_clusters_price_for_its_running_time():
    usages = job_usage(finished_job(), CLUSTER, "us-central1")
    fee, *machines = usages
    assert (fee.metric, fee.unit, fee.quantity) == ("vcpu_time", "vCPU-second", Decimal(30 * 20))
    assert {(m.attributes["machine_type"], m.quantity) for m in machines} == {
        ("n2-standard-4", 30),
        ("n2-standard-8", 60),
    }
    lines, unpriced = estimate_all(usages, price_book())
    assert unpriced == [] and {line.method for line in lines} == {"allocated"}
    assert lines[0].amount == quantize_amount(Decimal(600) * Decimal("0.010") / 3600)


def test_a_batch_is_its_approximate_usage_in_its_tier():
    batch = {
        "name": "projects/p/locations/us-central1/batches/b1",
        "state": "SUCCEEDED",
        "runtime_config": {"properties": {"spark.dataproc.executor.compute.tier": "premium"}},
        "runtime_info": {
            "approximate_usage": {"milli_dcu_seconds": "3600000", "shuffle_storage_gb_seconds": "10"}
        },
    }
    dcu, shuffle = batch_usage(batch)
    assert (dcu.unit, dcu.quantity, dcu.attributes["tier"]) == (
        "milli-DCU-second",
        Decimal(3_600_000),
        "premium",
    )
    (line, _), _ = estimate_all([dcu, shuffle], price_book())
    assert line.amount == Decimal("0.089")  # one DCU-hour at the premium rate
    assert batch_usage({**batch, "runtime_info": {}}) is None


def test_resolve_uses_what_the_task_read_and_keeps_failures_unpriced(monkeypatch):
    monkeypatch.setattr(dataproc, "_hook", lambda item: SimpleNamespace(get_cluster=lambda **kw: CLUSTER))
    item = DataprocJob("j1", "p", "us-central1", "google_cloud_default", final_job=finished_job())
    assert [u.metric for u in resolve_jobs([item], 1.0)] == ["vcpu_time", "instance_time", "instance_time"]
    running = DataprocJob("j2", "p", "us-central1", "c", final_job=finished_job(status={"state": "RUNNING"}))
    (usage,) = resolve_jobs([running], 1.0)
    assert "still RUNNING" in usage.attributes["why_unpriced"]

    def failing(**kwargs):
        raise RuntimeError("503 unavailable")

    monkeypatch.setattr(dataproc, "_hook", lambda item: SimpleNamespace(get_batch=failing))
    (usage,) = resolve_batches([DataprocBatch("b1", "p", "us-central1", "c")], 1.0)
    assert (
        usage.external_id == "b1"
        and "batches.get failed: RuntimeError: 503 unavailable" in usage.attributes["why_unpriced"]
    )


def test_pending_work_survives_a_deferral():
    job = DataprocJob("j1", "p", "r", "c", impersonation_chain=["a@b"], final_job=finished_job())
    batch = DataprocBatch("b1", "p", "r", "c")
    document = json.loads(json.dumps(deferral.snapshot([], {resolve_jobs: [job], resolve_batches: [batch]})))
    assert deferral.restore(document) == ([], [(resolve_jobs, job), (resolve_batches, batch)])


# ------------------------------------------------------------------------------------ wrappers


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []

    def submit_job(self, request, **kwargs):
        self.requests.append(request)
        return Job(
            reference={"project_id": request["project_id"], "job_id": "j-9"},
            placement={"cluster_name": "etl"},
        )

    def create_batch(self, request, **kwargs):
        self.requests.append(request)
        return SimpleNamespace(metadata=SimpleNamespace(batch=f"{request['parent']}/batches/b-9"))


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "p"}}),
    )
    instrumentation = DataprocJobs()
    instrumentation.instrument()
    hook = DataprocHook()
    hook.recorder = Recorder()
    monkeypatch.setattr(hook, "get_job_client", lambda region=None: hook.recorder)
    monkeypatch.setattr(hook, "get_batch_client", lambda region=None: hook.recorder)
    yield hook
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(TaskTry("Sales.Daily", "load", "run", 1, -1), worker.sample())


def test_submit_job_and_create_batch_are_labelled_and_left_for_the_task_end(hook, session):
    job = {"placement": {"cluster_name": "etl"}, "labels": {"team": "a"}}
    assert hook.submit_job(job=job, project_id="p", region="us-central1").reference.job_id == "j-9"
    hook.create_batch(batch={"labels": {}}, project_id="p", region="us-central1")
    job_request, batch_request = hook.recorder.requests
    assert job_request["job"]["labels"] == {**merged_labels({"team": "a"}, session.tags)}
    assert batch_request["batch"]["labels"]["airflow_task_id"] == "load"
    assert [i.job_id for i in session.pending[resolve_jobs]] == ["j-9"]
    assert [i.batch_id for i in session.pending[resolve_batches]] == ["b-9"]


def test_a_failing_wrapper_still_makes_the_call_once_and_warns_once(hook, session, monkeypatch, caplog):
    monkeypatch.setattr(dataproc, "tagged_resource", lambda *a: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        for _ in range(2):
            assert hook.submit_job(job={"labels": {}}, project_id="p", region="r").reference.job_id == "j-9"
    assert [r["job"] for r in hook.recorder.requests] == [{"labels": {}}, {"labels": {}}]
    assert len([r for r in caplog.records if "labelling a Dataproc workload" in r.getMessage()]) == 1
    assert len(session.pending[resolve_jobs]) == 2  # still captured: only the labels failed


def test_suppressed_and_sessionless_calls_are_untouched(hook, session):
    with suppress():
        hook.submit_job(job={"labels": {}}, project_id="p", region="r")
    clear_sessions()
    hook.submit_job(job={"labels": {}}, project_id="p", region="r")
    assert [r["job"] for r in hook.recorder.requests] == [{"labels": {}}, {"labels": {}}]
    assert session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    originals = {
        name: DataprocHook.__dict__[name] for name in ("submit_job", "create_batch", "get_job", "get_batch")
    }
    instrumentation = DataprocJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    assert all(DataprocHook.__dict__[n].__wrapped__ is f for n, f in originals.items())
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert all(DataprocHook.__dict__[n] is f for n, f in originals.items())
