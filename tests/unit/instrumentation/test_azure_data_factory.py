"""Azure Data Factory: reading activity runs' billingReference, and the wrappers around the real
`AzureDataFactoryHook`, whose management client is replaced by a recorder."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from types import SimpleNamespace

import pytest
from airflow.providers.microsoft.azure.hooks.data_factory import AzureDataFactoryHook

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import azure_data_factory
from airflow_cost_provider.instrumentation.azure_data_factory import (
    DataFactoryPipelines,
    FactoryRun,
    activity_usage,
    resolve_factory_runs,
    resolve_pipeline_runs,
)
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.tracker import price_book


def activity(kind: str, *billing: tuple[str, str, float, str]) -> dict:
    output = {}
    if billing:
        output["billingReference"] = {
            "activityType": billing[0][0],
            "billableDuration": [{"meterType": m, "duration": d, "unit": u} for _, m, d, u in billing],
        }
    return {"activityType": kind, "output": output}


RUNS = [
    activity("Copy", ("DataMovement", "AzureIR", 0.25, "DIUHours")),
    activity("Copy", ("DataMovement", "AzureIR", 0.5, "DIUHours")),
    activity("Lookup", ("PipelineActivity", "AzureIR", 0.0166, "Hours")),
    activity("Copy", ("DataMovement", "SelfhostedIR", 0.1, "Hours")),
    activity("Wait"),
]


def test_activity_runs_are_counted_and_each_meter_summed():
    usages = {u.metric: u for u in activity_usage("azure_data_factory", "r1", RUNS, "rg/f", None, None, {})}
    assert usages["activity_runs"].quantity == 5
    assert usages["activity_runs"].attributes["activity_types"] == "Copy:3,Lookup:1,Wait:1"
    assert (usages["diu_time"].quantity, usages["diu_time"].unit) == (Decimal("0.75"), "DIU-hour")
    assert usages["pipeline_activity_time"].quantity == Decimal("0.0166")
    assert usages["datamovement_selfhostedir_time"].unit == "hour"
    lines, (unpriced,) = estimate_all(list(usages.values()), price_book())
    assert {line.usage.metric: line.amount for line in lines} == {
        "activity_runs": Decimal("0.005"),
        "diu_time": Decimal("0.1875"),
        "pipeline_activity_time": Decimal("0.000083"),
    }
    assert "SelfhostedIR" in unpriced.reason


def test_resolve_reads_the_run_only_when_the_task_did_not_see_it_finish():
    calls = []

    def read_run(item, budget):
        calls.append("run")
        return {"status": "Succeeded", "runStart": "2026-01-02T00:00:00.0000000Z"}

    def read_activities(item, run, budget):
        calls.append("activities")
        return RUNS[:1]

    seen = FactoryRun("r1", "c", "rg", "f", "p", final_run={"status": "Succeeded"})
    unseen = FactoryRun("r2", "c", "rg", "f", "p")
    usages = resolve_pipeline_runs([seen, unseen], 1.0, read_run, read_activities)
    assert calls == ["activities", "run", "activities"]
    assert [u.external_id for u in usages if u.metric == "activity_runs"] == ["r1", "r2"]
    assert usages[-1].start_time.isoformat() == "2026-01-02T00:00:00+00:00"


def test_a_run_not_finished_or_not_readable_is_kept_unpriced_with_the_reason():
    def failing(*args):
        raise RuntimeError("HTTP 500")

    (running,) = resolve_pipeline_runs(
        [FactoryRun("r1", "c", "rg", "f", "p", final_run={"status": "InProgress"})], 1.0, failing, failing
    )
    assert "still InProgress" in running.attributes["why_unpriced"]
    (failed,) = resolve_pipeline_runs([FactoryRun("r2", "c", "rg", "f", "p")], 1.0, failing, failing)
    assert (
        failed.external_id == "r2"
        and "pipeline run look-up failed: RuntimeError: HTTP 500" in failed.attributes["why_unpriced"]
    )


def test_a_pending_run_survives_a_deferral():
    item = FactoryRun("r1", "c", "rg", "f", "p", final_run={"status": "Succeeded"})
    document = json.loads(json.dumps(deferral.snapshot([], {resolve_factory_runs: [item]})))
    assert deferral.restore(document) == ([], [(resolve_factory_runs, item)])


# ------------------------------------------------------------------------------------ wrappers


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZURE_DATA_FACTORY_DEFAULT",
        json.dumps(
            {
                "conn_type": "azure_data_factory",
                "extra": {"subscriptionId": "s", "resource_group_name": "rg-conn", "factory_name": "f-conn"},
            }
        ),
    )
    instrumentation = DataFactoryPipelines()
    instrumentation.instrument()
    hook = AzureDataFactoryHook()
    hook.created = []

    def create_run(resource_group, factory, pipeline, **config):
        hook.created.append((resource_group, factory, pipeline, config))
        return SimpleNamespace(run_id=f"run-{len(hook.created)}")

    client = SimpleNamespace(
        pipelines=SimpleNamespace(create_run=create_run),
        pipeline_runs=SimpleNamespace(
            get=lambda rg, f, run_id, **kw: SimpleNamespace(status="Succeeded", run_id=run_id)
        ),
    )
    monkeypatch.setattr(hook, "get_conn", lambda: client)
    yield hook
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(TaskTry("dag", "task", "run", 1, -1), worker.sample())


def test_a_run_is_captured_with_its_factory_and_its_parameters_untouched(hook, session):
    hook.run_pipeline("copy", resource_group_name=None, factory_name=None, parameters={"day": "d"})
    hook.run_pipeline("copy", "rg", "f")
    assert hook.created == [
        ("rg-conn", "f-conn", "copy", {"parameters": {"day": "d"}}),
        ("rg", "f", "copy", {}),
    ]
    first, second = session.pending[resolve_factory_runs]
    assert (first.run_id, first.resource_group, first.factory, first.pipeline) == (
        "run-1",
        "rg-conn",
        "f-conn",
        "copy",
    )
    assert second.resource == "rg/f"
    hook.get_pipeline_run("run-2", "rg", "f")
    assert second.final_run is not None and first.final_run is None


def test_a_failing_wrapper_still_makes_the_call_once_and_warns_once(hook, session, monkeypatch, caplog):
    monkeypatch.setattr(azure_data_factory, "_targeted_factory", lambda *a: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert hook.run_pipeline("copy", "rg", "f").run_id == "run-1"
        assert hook.run_pipeline("copy", "rg", "f").run_id == "run-2"
    assert len(hook.created) == 2
    assert len([r for r in caplog.records if "capturing a Data Factory pipeline run" in r.getMessage()]) == 1


def test_suppressed_and_sessionless_calls_are_untouched(hook, session):
    with suppress():
        hook.run_pipeline("copy", "rg", "f")
    clear_sessions()
    hook.run_pipeline("copy", "rg", "f")
    assert len(hook.created) == 2 and session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = AzureDataFactoryHook.__dict__["run_pipeline"]
    instrumentation = DataFactoryPipelines()
    instrumentation.instrument()
    instrumentation.instrument()
    assert AzureDataFactoryHook.__dict__["run_pipeline"].__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert AzureDataFactoryHook.__dict__["run_pipeline"] is original
