"""Dataproc end to end: the Google provider's own DataprocSubmitJobOperator, DataprocCreateBatchOperator
and DataprocHook under `airflow dags test`, through the client library's REST transport, against a
Dataproc API server on 127.0.0.1. Asserts the labels the server received and the facet and ledger lines:
a job on a cluster as the allocated price of the cluster's machines for its running time, a Serverless
batch from its approximate DCU and shuffle usage, and unpriced lines with the reason."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_dataproc import CLUSTERS, PROJECT, REGION
from tests.support.airflow_env import ledger_rows
from tests.support.fake_dataproc import BatchPlan, JobPlan, fake_dataproc
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
HOUR = Decimal(3600)
GIB_MONTH_SECONDS = Decimal(3600 * 730)
PLANS = {
    "gs://shop/etl.py": JobPlan(queued_seconds="12.5", running_seconds="754.25"),
    "gs://shop/train.py": JobPlan(queued_seconds="3", running_seconds="1800"),
    "gs://shop/features.py": BatchPlan(milli_dcu_seconds=1_234_567_890, shuffle_storage_gb_seconds=456_789),
    "gs://shop/premium.py": BatchPlan(milli_dcu_seconds=98_765_432, shuffle_storage_gb_seconds=1_000),
    "gs://shop/flaky.py": JobPlan(fail_reads=True),
    "gs://shop/slow.py": BatchPlan(slow_reads_seconds=8),
}


def book_price(source: str, metric: str, match: dict | None = None) -> tuple[Decimal, str]:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == source and p["metric"] == metric and p.get("match") == match
    ]
    return Decimal(entry["amount"]), entry["unit"]


@pytest.fixture(scope="module")
def dataproc():
    with fake_dataproc(CLUSTERS) as server:
        for marker, plan in PLANS.items():
            server.plan(marker, plan)
        yield server


@pytest.fixture(scope="module")
def dp_run(airflow_env, dataproc):
    run = airflow_env.dags_test(
        "cost_dataproc",
        env={
            "COST_TEST_DATAPROC_URL": dataproc.url,
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(dp_run) -> dict[str, dict]:
    events = dp_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def facet_of(events, task_id: str) -> tuple[list[dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    sources = ("dataproc", "dataproc_serverless", "compute_engine")
    return (
        [line for line in facet["lines"] if line["source"] in sources],
        [item for item in facet["unpriced"] if item["source"] in sources],
    )


def assert_identity(labels: dict, events, task_id: str) -> None:
    assert all(LABEL_KEY.match(k) and LABEL_VALUE.match(v) for k, v in labels.items()), labels
    assert labels["openlineage_run_id"] == events[task_id]["run"]["runId"]
    assert labels["airflow_dag_id"] == "cost_dataproc"
    assert labels["airflow_try_number"] == "1" and labels["airflow_map_index"] == "-1"
    assert labels["airflow_run_id"].startswith("manual__") and ":" not in labels["airflow_run_id"]


def test_jobs_and_batches_carry_the_task_identity_as_labels(dp_run, dataproc, events):
    (etl,) = [j for j in dataproc.submitted_jobs() if "etl.py" in json.dumps(j)]
    assert_identity(etl["labels"], events, "submit_job")
    # the user's own labels are kept and win on a clash
    assert etl["labels"]["team"] == "growth" and etl["labels"]["airflow_task_id"] == "mine"
    (flaky,) = [j for j in dataproc.submitted_jobs() if "flaky.py" in json.dumps(j)]
    assert_identity(flaky["labels"], events, "lookup_fails")
    assert flaky["labels"]["airflow_task_id"] == "lookup_fails"
    for request in dataproc.created_batches():
        task_id = {"features": "create_batch", "premium": "create_batch_premium", "slow": "lookup_times_out"}[
            re.search(r"shop/(\w+)\.py", json.dumps(request.body)).group(1)
        ]
        assert_identity(request.body["labels"], events, task_id)
        assert request.body["labels"]["airflow_task_id"] == task_id.replace("_", "_")
    (features,) = [r for r in dataproc.created_batches() if "features.py" in json.dumps(r.body)]
    assert features.body["labels"]["team"] == "ds" and features.query["batchId"] == ["daily-features-1"]


def test_a_job_is_allocated_its_cluster_for_its_running_time(dp_run, dataproc, events):
    job = dataproc.job("etl.py")
    lines, unpriced = facet_of(events, "submit_job")
    assert unpriced == []
    seconds = Decimal("754.25")
    # 1 x n2-standard-4 master, 2 x n2-standard-8 workers, 2 x n2-standard-4 secondary workers
    vcpus = 1 * 4 + 2 * 8 + 2 * 4
    job_id = job["reference"]["jobId"]
    assert all(line["externalId"] == job_id for line in lines)
    assert all(line["method"] == "allocated" and line["status"] == "estimated" for line in lines)
    assert all(line["resource"] == f"{PROJECT}/{REGION}/etl-cluster" for line in lines)
    (fee,) = [line for line in lines if line["source"] == "dataproc"]
    price, unit = book_price("dataproc", "vcpu_time")
    assert unit == "vCPU-hour" and fee["unit"] == "vCPU-second"
    assert Decimal(str(fee["quantity"])) == seconds * vcpus
    assert Decimal(str(fee["amount"])) == quantize_amount(seconds * vcpus * price / HOUR)
    machines = {
        line["priceRef"].split("machine_type=")[1].rstrip("]"): line
        for line in lines
        if line["source"] == "compute_engine"
    }
    assert set(machines) == {"n2-standard-4", "n2-standard-8"}
    for machine, count in (("n2-standard-4", 3), ("n2-standard-8", 2)):
        price, unit = book_price("compute_engine", "instance_time", {"machine_type": machine})
        assert unit == "instance-hour"
        assert Decimal(str(machines[machine]["quantity"])) == seconds * count
        assert Decimal(str(machines[machine]["amount"])) == quantize_amount(seconds * count * price / HOUR)


def test_a_waited_for_job_needs_no_extra_status_call(dp_run, dataproc):
    job_id = dataproc.job("etl.py")["reference"]["jobId"]
    # wait_for_job read it once (terminal); the capture reused it and read the cluster once
    assert len(dataproc.reads(f"/jobs/{job_id}")) == 1
    assert len(dataproc.reads("/clusters/etl-cluster")) == 1


def test_machine_types_without_a_price_or_vcpu_count_are_unpriced(dp_run, dataproc, events):
    job = dataproc.job("train.py")
    lines, unpriced = facet_of(events, "submit_job_async")
    (master,) = lines
    price, _ = book_price("compute_engine", "instance_time", {"machine_type": "n1-standard-4"})
    assert Decimal(str(master["amount"])) == quantize_amount(Decimal(1800) * price / HOUR)
    reasons = {item["source"]: item["reason"] for item in unpriced}
    assert "unknown vCPU count of machine type(s) a2-highgpu-1g" in reasons["dataproc"]
    assert "machine_type a2-highgpu-1g" in reasons["compute_engine"]
    assert all(item["externalId"] == job["reference"]["jobId"] for item in unpriced)
    # the task did not wait: the capture read the job once at the end
    assert len(dataproc.reads(f"/jobs/{job['reference']['jobId']}")) == 1


@pytest.mark.parametrize(
    ("task_id", "marker", "tier"),
    [("create_batch", "features.py", "standard"), ("create_batch_premium", "premium.py", "premium")],
)
def test_a_batch_is_priced_from_its_approximate_usage(dp_run, dataproc, events, task_id, marker, tier):
    batch = dataproc.batch(marker)
    usage = batch["runtimeInfo"]["approximateUsage"]
    lines, unpriced = facet_of(events, task_id)
    assert unpriced == []
    by_metric = {line["metric"]: line for line in lines}
    assert set(by_metric) == {"dcu_time", "shuffle_storage"}
    batch_id = batch["name"].rsplit("/", 1)[1]
    assert all(line["externalId"] == batch_id and line["method"] == "list_price" for line in lines)
    dcu_price, unit = book_price("dataproc_serverless", "dcu_time", {"tier": tier})
    assert unit == "DCU-hour"
    milli = Decimal(usage["milliDcuSeconds"])
    assert (
        by_metric["dcu_time"]["unit"] == "milli-DCU-second"
        and Decimal(str(by_metric["dcu_time"]["quantity"])) == milli
    )
    assert Decimal(str(by_metric["dcu_time"]["amount"])) == quantize_amount(milli * dcu_price / 1000 / HOUR)
    assert by_metric["dcu_time"]["priceRef"].endswith(f"dataproc_serverless/dcu_time[tier={tier}]")
    shuffle_price, unit = book_price("dataproc_serverless", "shuffle_storage", {"tier": tier})
    assert unit == "GiB-month"
    gb_seconds = Decimal(usage["shuffleStorageGbSeconds"])
    assert Decimal(str(by_metric["shuffle_storage"]["amount"])) == quantize_amount(
        gb_seconds * shuffle_price / GIB_MONTH_SECONDS
    )


def test_failing_and_slow_look_ups_leave_the_task_alone_and_the_work_unpriced(dp_run, dataproc, events):
    for task_id, words in (
        ("lookup_fails", ("jobs.get failed", "500")),
        ("lookup_times_out", ("batches.get failed", "timed out")),
    ):
        assert events[task_id]["eventType"] == "COMPLETE"
        lines, (item,) = facet_of(events, task_id)
        assert lines == []
        assert all(word in item["reason"].lower() for word in (w.lower() for w in words)), item["reason"]
    flaky = dataproc.job("flaky.py")["reference"]["jobId"]
    assert facet_of(events, "lookup_fails")[1][0]["externalId"] == flaky
    assert facet_of(events, "lookup_times_out")[1][0]["externalId"] == "slow-batch-1"


def test_ledger_holds_what_the_facet_shows(dp_run, events):
    rows = ledger_rows(
        dp_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.source, u.external_id, u.attributes, l.amount_nanos, l.method "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        "WHERE u.source IN ('dataproc', 'dataproc_serverless', 'compute_engine')",
    )
    for task_id, event in events.items():
        lines, unpriced = facet_of(events, task_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert len(mine) == len(lines) + len(unpriced), task_id
        assert all(r["ol_run_id"] == event["run"]["runId"] for r in mine)
        assert sum(r["amount_nanos"] or 0 for r in mine) == sum(
            int(Decimal(str(x["amount"])) * 10**9) for x in lines
        )
    fee = [r for r in rows if r["task_id"] == "submit_job" and r["source"] == "dataproc"][0]
    attributes = json.loads(fee["attributes"]) if isinstance(fee["attributes"], str) else fee["attributes"]
    assert attributes["cluster_name"] == "etl-cluster" and attributes["allocation_share"] == "1"
    assert attributes["cluster_uuid"] == CLUSTERS["etl-cluster"]["clusterUuid"]
