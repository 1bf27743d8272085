"""Databricks jobs: the pure parts (custom tags, compute windows, DBUs) and the wrappers around the real
`DatabricksHook`, whose HTTP call is replaced by a recorder."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from airflow.providers.databricks.hooks.databricks import DatabricksHook

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import databricks_jobs
from airflow_cost_provider.instrumentation.databricks_jobs import (
    DatabricksJobs,
    DatabricksRun,
    compute_windows,
    merged_custom_tags,
    resolve_runs,
    tagged_submit_json,
    window_usage,
)
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.tracker import price_book

TAGS = {
    "airflow_dag_id": "dag",
    "airflow_task_id": "task",
    "airflow_run_id": "manual__2026-01-02T00:00:00+00:00",
    "airflow_try_number": "1",
    "airflow_map_index": "-1",
    "openlineage_run_id": "0192f0c1-0000-7000-8000-000000000001",
}
CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.xlarge", "num_workers": 2}


def terminal_run(**fields) -> dict:
    return {
        "run_id": 7,
        "job_id": 3,
        "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"},
        **fields,
    }


def test_custom_tags_merge_with_the_users_and_respect_the_syntax():
    tags = merged_custom_tags({"team": "growth", "airflow_task_id": "mine"}, {**TAGS, "bad key!": "a<b>"})
    assert tags["team"] == "growth" and tags["airflow_task_id"] == "mine"
    assert tags["airflow_run_id"] == "manual__2026-01-02T00:00:00+00:00"  # `:` and `+` are allowed
    assert tags["bad key_"] == "a_b_"
    full = merged_custom_tags({f"k{i}": "v" for i in range(44)}, TAGS)
    assert len(full) == 45 and full["openlineage_run_id"] == TAGS["openlineage_run_id"]


def test_every_new_cluster_of_a_submit_body_is_tagged_and_the_body_is_not_changed():
    body = {
        "run_name": "r",
        "new_cluster": dict(CLUSTER),
        "tasks": [
            {"task_key": "a", "new_cluster": dict(CLUSTER)},
            {"task_key": "b", "existing_cluster_id": "c1"},
        ],
    }
    original = json.dumps(body, sort_keys=True)
    tagged = tagged_submit_json(body, TAGS)
    assert json.dumps(body, sort_keys=True) == original
    assert tagged["new_cluster"]["custom_tags"]["airflow_dag_id"] == "dag"
    assert (
        tagged["tasks"][0]["new_cluster"]["custom_tags"]["openlineage_run_id"] == TAGS["openlineage_run_id"]
    )
    assert tagged["tasks"][1] == {"task_key": "b", "existing_cluster_id": "c1"}
    assert tagged["run_name"] == "r"
    assert tagged_submit_json({"tasks": []}, TAGS)["run_name"] == "dag.task.1"


def test_compute_windows_follow_the_clusters_a_run_used():
    run = terminal_run(
        job_clusters=[{"job_cluster_key": "shared", "new_cluster": CLUSTER}],
        tasks=[
            {"task_key": "a", "job_cluster_key": "shared", "start_time": 1000, "end_time": 5000},
            {"task_key": "b", "job_cluster_key": "shared", "start_time": 6000, "end_time": 9000},
            {"task_key": "c", "existing_cluster_id": "ap1", "start_time": 1000, "end_time": 2000},
            {"task_key": "d", "start_time": 0, "end_time": 0, "setup_duration": 0, "execution_duration": 700},
            {"task_key": "e", "sql_task": {"warehouse_id": "wh"}, "start_time": 1, "end_time": 11},
        ],
    )
    windows = {w.key: w for w in compute_windows(run)}
    assert windows["job_cluster:shared"].duration_ms == 8000 and windows["job_cluster:shared"].task_keys == [
        "a",
        "b",
    ]
    assert windows["existing_cluster:ap1"].kind == "existing_cluster"
    assert windows["serverless:d"].duration_ms == 700
    assert windows["sql_warehouse:wh"].kind == "sql_warehouse"


def test_a_classic_cluster_is_dbus_and_vms_and_an_autoscaled_one_counts_the_middle_of_its_bounds():
    spec = {
        "node_type_id": "i3.xlarge",
        "driver_node_type_id": "m5.xlarge",
        "autoscale": {"min_workers": 1, "max_workers": 5},
    }
    run = terminal_run(
        tasks=[{"task_key": "t", "new_cluster": spec, "start_time": 0 + 1, "end_time": 3_600_001}]
    )
    (window,) = compute_windows(run)
    dbu, *vms = window_usage(run, window, "conn")
    # m5.xlarge driver 0.69 + 3 x i3.xlarge 1 DBU/h, for one hour
    assert (dbu.metric, dbu.unit, dbu.quantity) == ("dbu", "DBU", Decimal("3.69"))
    assert (
        dbu.attributes["workers_estimate"] == "autoscale_midpoint"
        and dbu.attributes["compute_type"] == "jobs_compute"
    )
    assert {(v.attributes["node_type"], v.quantity) for v in vms} == {
        ("m5.xlarge", 3600),
        ("i3.xlarge", 3 * 3600),
    }
    (line,), _ = estimate_all([dbu], price_book())
    assert line.amount == Decimal("3.69") * Decimal("0.15") and line.method == "list_price"


def test_an_all_purpose_cluster_is_allocated_and_serverless_is_unpriced_with_the_reason():
    run = terminal_run(
        tasks=[
            {"task_key": "c", "existing_cluster_id": "ap1", "start_time": 1, "end_time": 1_800_001},
            {"task_key": "s", "start_time": 1, "end_time": 60_001},
        ]
    )
    allocated, serverless = compute_windows(run)
    dbu = window_usage(run, allocated, "conn", {"node_type_id": "m5.xlarge", "num_workers": 1})[0]
    assert dbu.attributes["compute_type"] == "all_purpose" and dbu.attributes["allocation_share"] == "1"
    (line,), _ = estimate_all([dbu], price_book())
    assert line.method == "allocated" and line.usage.quantity == Decimal("0.69")  # 2 x 0.69 DBU/h for 30 min
    (usage,) = window_usage(run, serverless, "conn")
    _, (unpriced,) = estimate_all([usage], price_book())
    assert "system.billing.usage" in unpriced.reason and "job_run_id = 7" in unpriced.reason


def test_resolve_uses_the_terminal_run_the_task_already_read():
    item = DatabricksRun(7, "no_such_connection", "http://127.0.0.1:1", "submit_run")
    item.final_run = terminal_run(
        tasks=[{"task_key": "t", "new_cluster": CLUSTER, "start_time": 1, "end_time": 3_600_001}]
    )
    usages = resolve_runs([item], 1.0)
    assert [u.metric for u in usages] == ["dbu", "instance_time"]
    assert usages[0].quantity == Decimal("2.07") and usages[0].external_id == "7"


def test_a_run_still_running_or_unreadable_is_kept_unpriced_with_the_reason():
    item = DatabricksRun(8, "no_such_connection", "http://127.0.0.1:1", "run_now")
    item.final_run = {"run_id": 8, "state": {"life_cycle_state": "RUNNING"}}
    (usage,) = resolve_runs([item], 1.0)
    assert "still RUNNING" in usage.attributes["why_unpriced"]
    (usage,) = resolve_runs([DatabricksRun(9, "no_such_connection", "http://127.0.0.1:1", "run_now")], 1.0)
    assert usage.external_id == "9" and "runs/get failed" in usage.attributes["why_unpriced"]


def test_a_pending_run_survives_a_deferral():
    item = DatabricksRun(7, "databricks_default", "https://x", "submit_run", final_run=terminal_run())
    usages, pending = deferral.restore(json.loads(json.dumps(deferral.snapshot([], {resolve_runs: [item]}))))
    assert usages == [] and pending == [(resolve_runs, item)]


# ------------------------------------------------------------------------------------ wrappers


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATABRICKS_DEFAULT",
        json.dumps(
            {"conn_type": "databricks", "host": "127.0.0.1", "port": 1, "schema": "http", "password": "t"}
        ),
    )
    instrumentation = DatabricksJobs()
    instrumentation.instrument()
    hook = DatabricksHook()
    hook.calls = []

    def api_call(endpoint, json=None, wrap_http_errors=True):
        hook.calls.append((endpoint, json))
        if endpoint[1].endswith("runs/get"):
            return terminal_run(tasks=[])
        return {"run_id": 41}

    hook._do_api_call = api_call
    yield hook
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(
        TaskTry("dag", "task", "run", 1, -1, ol_run_id=TAGS["openlineage_run_id"]), worker.sample()
    )


def test_submit_run_is_tagged_and_its_run_left_for_the_task_end(hook, session):
    assert hook.submit_run({"run_name": "r", "new_cluster": dict(CLUSTER)}) == 41
    ((_, sent),) = hook.calls
    assert sent["new_cluster"]["custom_tags"]["airflow_task_id"] == "task"
    ((resolve, (item,)),) = session.pending.items()
    assert resolve is resolve_runs and (item.run_id, item.started_by) == (41, "submit_run")
    hook.get_run(41)  # the task reads the terminal run: kept, so the end needs no look-up
    assert item.final_run["state"]["life_cycle_state"] == "TERMINATED"


def test_run_now_is_captured_and_left_unchanged(hook, session):
    body = {"job_id": 3, "job_parameters": {"day": "2026-01-02"}}
    assert hook.run_now(dict(body)) == 41
    assert hook.calls == [(("POST", "2.2/jobs/run-now"), body)]
    assert [i.started_by for i in session.pending[resolve_runs]] == ["run_now"]


def test_a_failing_wrapper_still_makes_the_call_once_and_warns_once(hook, session, monkeypatch, caplog):
    monkeypatch.setattr(databricks_jobs, "tagged_submit_json", lambda *a: 1 / 0)
    monkeypatch.setattr(databricks_jobs, "api_base_of", lambda *a: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert hook.submit_run({"run_name": "r"}) == 41
        assert hook.submit_run({"run_name": "r"}) == 41
    assert hook.calls == [(("POST", "2.2/jobs/runs/submit"), {"run_name": "r"})] * 2
    assert len([r for r in caplog.records if "tagging a Databricks run" in r.getMessage()]) == 1
    assert session.pending == {}


def test_suppressed_and_sessionless_calls_are_untouched(hook, session):
    with suppress():
        hook.submit_run({"run_name": "r"})
    clear_sessions()
    hook.submit_run({"run_name": "s"})
    assert [sent for _, sent in hook.calls] == [{"run_name": "r"}, {"run_name": "s"}]
    assert session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = DatabricksHook.__dict__["submit_run"]
    instrumentation = DatabricksJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = DatabricksHook.__dict__["submit_run"]
    assert wrapped is not original and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert DatabricksHook.__dict__["submit_run"] is original
    assert DatabricksHook.__dict__["get_run"].__class__.__name__ == "function"


# ------------------------------------------------------------------------------------- pipelines

PIPELINE_ID = "a3b1c2d4-1111-4000-8000-000000000001"
START_MS = 1_767_312_000_000  # 2026-01-02T00:00:00Z


def pipeline_run(duration_ms=1_800_000, **pipeline_task) -> dict:
    return terminal_run(
        tasks=[
            {
                "task_key": "refresh",
                "pipeline_task": {"pipeline_id": PIPELINE_ID, **pipeline_task},
                "start_time": START_MS,
                "end_time": START_MS + duration_ms,
            }
        ]
    )


def pipeline(spec: dict, *updates: tuple[str, str]) -> dict:
    return {
        "pipeline_id": PIPELINE_ID,
        "spec": {"id": PIPELINE_ID, **spec},
        "latest_updates": [{"update_id": u, "state": "COMPLETED", "creation_time": t} for u, t in updates],
    }


def test_a_pipeline_task_is_its_own_compute_window():
    (window,) = compute_windows(pipeline_run(full_refresh=True))
    assert (window.kind, window.key, window.duration_ms) == ("pipeline", f"pipeline:{PIPELINE_ID}", 1_800_000)
    assert window.spec == {"pipeline_id": PIPELINE_ID, "full_refresh": True}


def test_the_update_is_the_first_created_within_the_task():
    (window,) = compute_windows(pipeline_run())
    found = databricks_jobs.pipeline_update(
        pipeline(
            {},
            ("later", "2026-01-02T00:10:00.000Z"),
            ("ours", "2026-01-02T00:00:01.250Z"),
            ("scheduled", "2026-01-01T23:00:00.000Z"),
            ("after", "2026-01-02T00:31:00.000Z"),
        ),
        window,
    )
    assert found["update_id"] == "ours"
    assert databricks_jobs.pipeline_update(pipeline({}, ("old", "2026-01-01T00:00:00Z")), window) is None


def test_a_classic_pipeline_is_priced_at_its_editions_dbu_price():
    run = pipeline_run()
    (window,) = compute_windows(run)
    spec = {
        "edition": "CORE",
        "clusters": [
            {"label": "maintenance", "node_type_id": "m5.4xlarge", "num_workers": 8},
            {
                "label": "default",
                "node_type_id": "m5.xlarge",
                "autoscale": {"min_workers": 1, "max_workers": 5},
            },
        ],
    }
    usages = databricks_jobs.pipeline_usage(
        run, window, "databricks_default", pipeline(spec, ("u1", "2026-01-02T00:00:02Z"))
    )
    dbu, *vms = usages
    # m5.xlarge driver 0.69 + 3 workers (autoscale midpoint) x 0.69 = 2.76 DBU/h for half an hour
    assert (dbu.metric, dbu.quantity) == ("dbu", Decimal("1.38"))
    assert dbu.attributes["compute_type"] == "dlt_core" and dbu.attributes["update_id"] == "u1"
    assert dbu.resource == PIPELINE_ID and [v.metric for v in vms] == ["instance_time"]
    lines, unpriced = estimate_all([dbu], price_book())
    assert lines[0].amount == Decimal("1.38") * Decimal("0.20") and not unpriced
    # no edition: the API's default, Advanced
    (default_dbu, _) = databricks_jobs.pipeline_usage(
        run, window, "d", pipeline({"clusters": [{"node_type_id": "i3.xlarge", "num_workers": 1}]})
    )
    assert (
        default_dbu.attributes["compute_type"] == "dlt_advanced" and "update_id" not in default_dbu.attributes
    )


def test_a_serverless_pipeline_is_kept_with_its_billing_ids():
    run = pipeline_run(duration_ms=600_000)
    (window,) = compute_windows(run)
    (usage,) = databricks_jobs.pipeline_usage(
        run, window, "d", pipeline({"serverless": True}, ("u9", "2026-01-02T00:00:00Z"))
    )
    assert (usage.metric, usage.quantity, usage.unit) == ("run_time", Decimal(600_000), "ms")
    reason = usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    assert f"usage_metadata.dlt_pipeline_id = {PIPELINE_ID} AND usage_metadata.dlt_update_id = u9" in reason
