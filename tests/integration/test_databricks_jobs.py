"""Databricks jobs end to end: the provider's own DatabricksSubmitRunOperator and DatabricksRunNowOperator
(normal and deferrable) and DatabricksHook under `airflow dags test`, against a Jobs API server on
127.0.0.1. Asserts what the server received (cluster custom_tags carrying the task's identity, the run
name) and the facet and ledger lines: DBUs per cluster from its node types and how long it ran, priced
at the compute type's DBU list price, the cloud VMs beside them, and unpriced lines with the reason
where the run's compute cannot be derived or its look-up failed."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_databricks_jobs import (
    ALL_PURPOSE_CLUSTER,
    CLUSTERS,
    INGEST_CLUSTER,
    JOBS,
    SCORING_CLUSTER,
    TRAIN_CLUSTER,
)
from tests.support.airflow_env import ledger_rows
from tests.support.fake_databricks_jobs import RunPlan, fake_databricks_jobs
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TOKEN = "dapi-test-token"
MS_PER_HOUR = Decimal(3_600_000)
DBU_QUANTUM = Decimal("1e-12")
# the cloud VM prices the shipped book lacks (EC2 on-demand, us-east-1): given as the user's own book
VM_PRICES = {"m5.xlarge": "0.192", "m5.2xlarge": "0.384", "i3.xlarge": "0.312"}
PLANS = {
    "nightly_features": RunPlan(running_reads=2, task_ms={"ingest": (61_000, 183_500, 4_200)}),
    "deferred_scoring": RunPlan(running_reads=4, default_task_ms=(45_000, 95_250, 3_000)),
    "shop_etl": RunPlan(running_reads=2, task_ms={"report": (0, 42_000, 0), "notify": (0, 12_345, 0)}),
    "memory_heavy": RunPlan(running_reads=4),
    "cost_databricks_jobs.lookup_fails.1": RunPlan(running_reads=0, fail_terminal_reads=True),
    "slow_lookup": RunPlan(running_reads=0, slow_terminal_reads_seconds=8),
}


def shipped_book() -> dict:
    return yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )


def dbu_price(compute_type: str) -> Decimal:
    (entry,) = [
        p
        for p in shipped_book()["prices"]
        if p["source"] == "databricks"
        and p["metric"] == "dbu"
        and p.get("match") == {"compute_type": compute_type}
    ]
    assert entry["unit"] == "DBU"
    return Decimal(entry["amount"])


def dbu_rate(node_type: str) -> Decimal:
    return Decimal(shipped_book()["factors"]["databricks_dbu_per_hour"][node_type])


@pytest.fixture(scope="module")
def workspace():
    with fake_databricks_jobs(TOKEN, jobs=JOBS, clusters=CLUSTERS) as server:
        for name, plan in PLANS.items():
            server.plan(name, plan)
        yield server


@pytest.fixture(scope="module")
def dbx_run(airflow_env, workspace, tmp_path_factory):
    book = tmp_path_factory.mktemp("book") / "prices.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "version": "test-vm",
                "prices": [
                    {
                        "source": "databricks",
                        "metric": "instance_time",
                        "unit": "instance-hour",
                        "amount": amount,
                        "currency": "USD",
                        "effective_date": "2026-01-01",
                        "match": {"node_type": node_type},
                    }
                    for node_type, amount in VM_PRICES.items()
                ],
            }
        )
    )
    run = airflow_env.dags_test(
        "cost_databricks_jobs",
        env={
            "AIRFLOW_CONN_DATABRICKS_DEFAULT": json.dumps(workspace.connection()),
            "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(dbx_run) -> dict[str, dict]:
    events = dbx_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def databricks_facet(events, task_id: str) -> tuple[list[dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    return (
        [line for line in facet["lines"] if line["source"] == "databricks"],
        [item for item in facet["unpriced"] if item["source"] == "databricks"],
    )


def task_ms(task: dict) -> int:
    return task["end_time"] - task["start_time"]


def expected_dbus(rate: Decimal, ms: int) -> Decimal:
    return (rate * ms / MS_PER_HOUR).quantize(DBU_QUANTUM)


def assert_cluster_lines(lines, run_id: int, spec: dict, workers: Decimal, ms: int, compute_type: str):
    """The one DBU line of a cluster (found by its DBUs, not by the order of the lines), checked."""
    mine = [line for line in lines if line["externalId"] == str(run_id)]
    driver = spec.get("driver_node_type_id") or spec["node_type_id"]
    rate = dbu_rate(driver) + workers * dbu_rate(spec["node_type_id"])
    dbus = expected_dbus(rate, ms)
    (line,) = [line for line in mine if line["metric"] == "dbu" and Decimal(str(line["quantity"])) == dbus]
    assert line["unit"] == "DBU"
    method = "allocated" if compute_type == "all_purpose" else "list_price"
    assert line["method"] == method and line["status"] == "estimated"
    assert Decimal(str(line["amount"])) == quantize_amount(dbus * dbu_price(compute_type))
    assert line["priceRef"].endswith(f"databricks/dbu[compute_type={compute_type}]")
    return line


def vm_lines(lines, resource: str) -> dict[str, dict]:
    return {
        line["priceRef"].split("node_type=")[1].rstrip("]"): line
        for line in lines
        if line["metric"] == "instance_time" and line["resource"] == resource
    }


def assert_vm_line(line: dict, instances: Decimal, ms: int, node_type: str) -> None:
    seconds = instances * ms / 1000
    assert line["unit"] == "instance-second"
    assert Decimal(str(line["quantity"])) == seconds
    assert Decimal(str(line["amount"])) == quantize_amount(seconds * Decimal(VM_PRICES[node_type]) / 3600)
    assert line["priceRef"] == f"test-vm:databricks/instance_time[node_type={node_type}]"


def test_new_clusters_carry_the_task_identity_as_custom_tags(dbx_run, workspace, events):
    (body,) = [b for b in workspace.submitted() if b.get("run_name") == "nightly_features"]
    ol_run_id = events["submit_run"]["run"]["runId"]
    for task in body["tasks"]:
        tags = task["new_cluster"]["custom_tags"]
        assert tags["openlineage_run_id"] == ol_run_id
        assert tags["airflow_dag_id"] == "cost_databricks_jobs"
        assert tags["airflow_try_number"] == "1" and tags["airflow_map_index"] == "-1"
        assert tags["airflow_run_id"].startswith("manual__")
        assert all(len(k) <= 127 and len(str(v)) <= 255 for k, v in tags.items())
    ingest, train = body["tasks"]
    # the user's own tags are kept and win on a clash
    assert ingest["new_cluster"]["custom_tags"]["team"] == "growth"
    assert ingest["new_cluster"]["custom_tags"]["airflow_task_id"] == "mine"
    assert train["new_cluster"]["custom_tags"]["airflow_task_id"] == "submit_run"
    # the single-task form of the deferrable operator is tagged too
    (scoring,) = [b for b in workspace.submitted() if b.get("run_name") == "deferred_scoring"]
    assert (
        scoring["new_cluster"]["custom_tags"]["openlineage_run_id"]
        == events["submit_run_deferrable"]["run"]["runId"]
    )
    # a run started without a name gets the task's
    assert any(b.get("run_name") == "cost_databricks_jobs.lookup_fails.1" for b in workspace.submitted())


def test_run_now_is_not_changed(dbx_run, workspace):
    # run-now takes no tags: the job's own settings define its clusters, and its run id is the join key
    bodies = workspace.run_now_requests()
    assert sorted(int(b["job_id"]) for b in bodies) == sorted(JOBS)
    assert all(set(b) <= {"job_id", "job_parameters", "notebook_params", "idempotency_token"} for b in bodies)


def test_submit_run_costs_each_new_cluster(dbx_run, workspace, events):
    run = workspace.run_named("nightly_features")
    lines, unpriced = databricks_facet(events, "submit_run")
    assert unpriced == []
    ingest, train = run["tasks"]
    ingest_line = assert_cluster_lines(
        lines, run["run_id"], INGEST_CLUSTER, Decimal(2), task_ms(ingest), "jobs_compute"
    )
    assert ingest_line["resource"] == ingest["cluster_instance"]["cluster_id"]
    train_line = assert_cluster_lines(
        lines, run["run_id"], TRAIN_CLUSTER, Decimal(4), task_ms(train), "jobs_compute"
    )
    assert train_line["resource"] == train["cluster_instance"]["cluster_id"]
    vms = vm_lines(lines, ingest_line["resource"])
    assert set(vms) == {"m5.xlarge"}
    assert_vm_line(vms["m5.xlarge"], Decimal(3), task_ms(ingest), "m5.xlarge")
    vms = vm_lines(lines, train_line["resource"])
    assert set(vms) == {"m5.2xlarge", "i3.xlarge"}
    assert_vm_line(vms["m5.2xlarge"], Decimal(1), task_ms(train), "m5.2xlarge")
    assert_vm_line(vms["i3.xlarge"], Decimal(4), task_ms(train), "i3.xlarge")
    assert len(lines) == 5


def test_a_run_the_operator_waited_for_needs_no_extra_look_up(dbx_run, workspace):
    run = workspace.run_named("nightly_features")
    # the operator read it until it was terminal (the page URL and a poll while running, then the
    # terminal read); the cost capture reused that terminal read and made none of its own
    reads = workspace.run_reads(run["run_id"])
    assert len(reads) == PLANS["nightly_features"].running_reads + 1


def test_deferrable_submit_run_is_costed_after_resuming(dbx_run, workspace, events):
    run = workspace.run_named("deferred_scoring")
    lines, unpriced = databricks_facet(events, "submit_run_deferrable")
    assert unpriced == []
    (task,) = run["tasks"]
    line = assert_cluster_lines(
        lines, run["run_id"], SCORING_CLUSTER, Decimal(1), task_ms(task), "jobs_compute"
    )
    assert_vm_line(vm_lines(lines, line["resource"])["m5.xlarge"], Decimal(2), task_ms(task), "m5.xlarge")
    # the worker lines of both task processes are there: before the deferral and after it
    facet = events["submit_run_deferrable"]["run"]["facets"][FACET]
    assert len([line for line in facet["lines"] if line["source"] == "airflow_worker"]) == 4


def test_run_now_costs_the_shared_job_cluster_and_allocates_the_all_purpose_one(dbx_run, workspace, events):
    run = workspace.run_named("shop_etl")
    lines, unpriced = databricks_facet(events, "run_now")
    tasks = {t["task_key"]: t for t in run["tasks"]}
    # the job cluster is held from the first of its tasks to start to the last to end
    shared_ms = tasks["load"]["end_time"] - tasks["extract"]["start_time"]
    etl_spec = JOBS[101]["job_clusters"][0]["new_cluster"]
    shared = assert_cluster_lines(lines, run["run_id"], etl_spec, Decimal(3), shared_ms, "jobs_compute")
    assert shared["resource"] == tasks["extract"]["cluster_instance"]["cluster_id"]
    # the all-purpose cluster: its whole size for the task's duration, as allocated cost
    report = assert_cluster_lines(
        lines,
        run["run_id"],
        CLUSTERS[ALL_PURPOSE_CLUSTER],
        Decimal(4),
        task_ms(tasks["report"]),
        "all_purpose",
    )
    assert report["resource"] == ALL_PURPOSE_CLUSTER
    vm = vm_lines(lines, ALL_PURPOSE_CLUSTER)["m5.xlarge"]
    assert vm["method"] == "allocated"
    assert_vm_line(vm, Decimal(5), task_ms(tasks["report"]), "m5.xlarge")
    assert len(workspace.cluster_reads()) == 1
    # the serverless task: its DBUs are only in system.billing.usage
    (serverless,) = unpriced
    assert serverless["externalId"] == str(run["run_id"]) and serverless["metric"] == "run_time"
    assert Decimal(str(serverless["quantity"])) == task_ms(tasks["notify"])
    assert "system.billing.usage" in serverless["reason"] and str(run["run_id"]) in serverless["reason"]


def test_a_node_type_without_a_dbu_rate_is_unpriced_with_the_reason(dbx_run, workspace, events):
    run = workspace.run_named("memory_heavy")
    lines, unpriced = databricks_facet(events, "run_now_deferrable")
    assert lines == []
    dbu = [u for u in unpriced if u["metric"] == "cluster_time"]
    assert len(dbu) == 1 and "no DBU rate for node type 'r5.xlarge'" in dbu[0]["reason"]
    assert Decimal(str(dbu[0]["quantity"])) == task_ms(run["tasks"][0])
    vm = [u for u in unpriced if u["metric"] == "instance_time"]
    assert len(vm) == 1 and "node_type" in vm[0]["reason"]


def test_failing_and_slow_look_ups_leave_the_task_alone_and_the_run_unpriced(dbx_run, workspace, events):
    for task_id, name, words in (
        ("lookup_fails", "cost_databricks_jobs.lookup_fails.1", "500"),
        ("lookup_times_out", "slow_lookup", "timed out"),
    ):
        assert events[task_id]["eventType"] == "COMPLETE"
        run = workspace.run_named(name)
        lines, (item,) = databricks_facet(events, task_id)
        assert lines == []
        assert item["externalId"] == str(run["run_id"]) and item["metric"] == "queries"
        assert "runs/get failed" in item["reason"] and words in item["reason"].lower(), item["reason"]
        assert len(workspace.run_reads(run["run_id"])) == 1


def test_ledger_holds_what_the_facet_shows(dbx_run, events):
    rows = ledger_rows(
        dbx_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.metric, u.quantity, u.external_id, u.attributes, l.amount_nanos, "
        "l.method, l.status, l.unpriced_reason FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'databricks'",
    )
    for task_id, event in events.items():
        lines, unpriced = databricks_facet(events, task_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert len(mine) == len(lines) + len(unpriced), task_id
        assert all(r["ol_run_id"] == event["run"]["runId"] for r in mine)
        assert sum(r["amount_nanos"] or 0 for r in mine) == sum(
            int(Decimal(str(line["amount"])) * 10**9) for line in lines
        )
    report = [
        r for r in rows if r["task_id"] == "run_now" and r["method"] == "allocated" and r["metric"] == "dbu"
    ]
    (row,) = report
    attributes = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
    assert attributes["cluster_id"] == ALL_PURPOSE_CLUSTER and attributes["allocation_share"] == "1"
    assert attributes["compute_type"] == "all_purpose"
