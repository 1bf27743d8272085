"""Amazon EMR end to end: the Amazon provider's EmrAddStepsOperator, EmrServerlessStartJobOperator,
EmrContainerOperator and EmrServerlessHook, unchanged, under real `airflow dags test` against a moto
server on 127.0.0.1.

Asserts on what the server holds (EMR Serverless and EMR on EKS job runs tagged with their task's
identity next to the user's own tags; the cluster's tags untouched), on the calls the cost provider
made, and on the facet and the ledger:

- EMR on EC2: each step is allocated its cluster's instance time during the step (from the steps' and
  instances' timelines the server reports), divided by the cluster's StepConcurrencyLevel, priced as
  the EMR fee plus EC2 per instance type; Spot EC2 time is kept unpriced with the reason;
- EMR Serverless: billed vCPU, memory and storage hours, `metered`;
- EMR on EKS: duration x the requested vCPU and memory of the job's pods.

Moto 5.2 never finishes EMR steps or EMR on EKS job runs, and bills EMR Serverless runs nothing:
`tests/support/fake_emr.py` gives the work this test plans for the outcome the service would report.
Work not planned keeps moto's own behaviour, which the test asserts as such (still running: kept
unpriced with the reason; billed nothing: priced at 0).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support import fake_aws
from tests.support.airflow_env import ledger_rows
from tests.support.fake_emr import ACCOUNT, REGION, EksPlan, FakeEmr, ServerlessPlan, StepPlan, age_cluster
from tests.support.moto_recorder import Call, MotoRecorder, reset_moto
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
PRICE_BOOK = Path(__file__).resolve().parents[2] / "airflow_cost_provider" / "pricing" / "price_book.yaml"
CLUSTER_UP_SECONDS = 7200
TASK_GROUP_ENDED_AGO = 600
PLANS = FakeEmr(
    steps={
        "aggregate_orders": StepPlan(seconds=1200),
        "aggregate_refunds": StepPlan(seconds=300, ended_ago=10),
        "repair_partitions": StepPlan(seconds=90, state="FAILED", ended_ago=5),
    },
    serverless={
        "daily_sessionize": ServerlessPlan(
            vcpu_hours=1.25, memory_gb_hours=5.5, storage_gb_hours=0.75, seconds=1800
        ),
        "hourly_dedupe": ServerlessPlan(
            vcpu_hours=0.5, memory_gb_hours=2.0, storage_gb_hours=0.0, seconds=600
        ),
    },
    eks={"nightly_features": EksPlan(seconds=900)},
)
IDENTITY = {
    "openlineage_run_id",
    "airflow_dag_id",
    "airflow_task_id",
    "airflow_run_id",
    "airflow_try_number",
    "airflow_map_index",
}


def price(source: str, metric: str, **match: str) -> tuple[Decimal, str]:
    book = yaml.safe_load(PRICE_BOOK.read_text())
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == source and p["metric"] == metric and (p.get("match") or {}) == match
    ]
    return Decimal(entry["amount"]), entry["unit"]


def per_unit(source: str, metric: str, usage_unit: str, **match: str) -> Decimal:
    """The book's price converted to the usage's unit (instance-hour -> instance-second, ...)."""
    amount, unit = price(source, metric, **match)
    if unit.endswith("-hour") and usage_unit.endswith("-second"):
        return amount / 3600
    assert unit == usage_unit, (unit, usage_unit)
    return amount


def serverless_run_named(name: str):
    """Matches the cost provider's look-ups of the EMR Serverless job run called `name`."""

    def when(call: Call) -> bool:
        from moto.emrserverless.models import emrserverless_backends

        if not call.by_cost_provider:
            return False  # the test's own reads of the run

        run_id = call.path.rstrip("/").rsplit("/", 1)[-1]
        runs = emrserverless_backends[ACCOUNT][REGION].job_runs.values()
        return any(run.id == run_id and run.name == name for application in runs for run in application)

    return when


@pytest.fixture(scope="module")
def emr():
    recorder = MotoRecorder()
    recorder.fail("GetJobRun", serverless_run_named("flaky_export"))
    with recorder.installed(), PLANS.installed(), fake_aws.moto_server() as url:
        reset_moto(url)
        cluster_id = fake_aws.client("emr", url).run_job_flow(
            Name="shared-analytics",
            ReleaseLabel="emr-7.2.0",
            StepConcurrencyLevel=2,
            Instances={
                "InstanceGroups": [
                    {
                        "Name": "primary",
                        "InstanceRole": "MASTER",
                        "InstanceType": "m5.xlarge",
                        "InstanceCount": 1,
                    },
                    {"Name": "core", "InstanceRole": "CORE", "InstanceType": "r5.xlarge", "InstanceCount": 2},
                    {
                        "Name": "task",
                        "InstanceRole": "TASK",
                        "InstanceType": "m5.xlarge",
                        "InstanceCount": 2,
                        "Market": "SPOT",
                    },
                ],
                "KeepJobFlowAliveWhenNoSteps": True,
            },
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
            Tags=[{"Key": "team", "Value": "platform"}],
        )["JobFlowId"]
        # up for two hours; its Spot task group was scaled in ten minutes ago
        age_cluster(cluster_id, CLUSTER_UP_SECONDS, {"TASK": TASK_GROUP_ENDED_AGO})
        application_id = fake_aws.client("emr-serverless", url).create_application(
            name="spark", releaseLabel="emr-7.2.0", type="SPARK"
        )["applicationId"]
        virtual_cluster_id = fake_aws.client("emr-containers", url).create_virtual_cluster(
            name="ml",
            containerProvider={"id": "ml-eks", "type": "EKS", "info": {"eksInfo": {"namespace": "spark"}}},
        )["id"]
        yield (
            recorder,
            url,
            {"cluster": cluster_id, "application": application_id, "virtual_cluster": virtual_cluster_id},
        )


@pytest.fixture(scope="module")
def emr_run(airflow_env, emr):
    _, url, ids = emr
    env = fake_aws.airflow_env(url)
    env.update(COST_EMR_APPLICATION_ID=ids["application"], COST_EMR_VIRTUAL_CLUSTER_ID=ids["virtual_cluster"])
    run = airflow_env.dags_test("cost_emr", env=env)
    assert run.process.returncode == 0, run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def events(emr_run) -> dict[str, dict]:
    found = {}
    for event in emr_run.events():
        validate_event(event)
        if event["eventType"] in ("COMPLETE", "FAIL") and "." in event["job"]["name"]:
            found[event["job"]["name"].split(".", 1)[1]] = event
    return found


@pytest.fixture(scope="module")
def server(emr, emr_run) -> dict:
    """What the server holds after the run, read with the services' own API calls."""
    _, url, ids = emr
    emr_client = fake_aws.client("emr", url)
    serverless = fake_aws.client("emr-serverless", url)
    containers = fake_aws.client("emr-containers", url)
    runs = serverless.list_job_runs(applicationId=ids["application"])["jobRuns"]
    eks_runs = containers.list_job_runs(virtualClusterId=ids["virtual_cluster"])["jobRuns"]
    return {
        "cluster": emr_client.describe_cluster(ClusterId=ids["cluster"])["Cluster"],
        "steps": {s["Name"]: s for s in emr_client.list_steps(ClusterId=ids["cluster"])["Steps"]},
        "instances": emr_client.list_instances(ClusterId=ids["cluster"])["Instances"],
        "serverless": {
            r["name"]: serverless.get_job_run(applicationId=ids["application"], jobRunId=r["id"])["jobRun"]
            for r in runs
        },
        "eks": {
            r["name"]: containers.describe_job_run(id=r["id"], virtualClusterId=ids["virtual_cluster"])[
                "jobRun"
            ]
            for r in eks_runs
        },
    }


def lines(event: dict, source: str) -> list[dict]:
    return [line for line in event["run"]["facets"][FACET]["lines"] if line["source"] == source]


def unpriced(event: dict, source: str) -> list[dict]:
    return [item for item in event["run"]["facets"][FACET]["unpriced"] if item["source"] == source]


def allocated_seconds(step: dict, instances: list[dict], level: int) -> dict[tuple[str, str], Decimal]:
    """Instance-seconds of each (instance type, market) during the step, over the step slots: from the
    timelines the server reports."""
    start = step["Status"]["Timeline"]["StartDateTime"]
    end = step["Status"]["Timeline"]["EndDateTime"]
    totals: dict[tuple[str, str], Decimal] = {}
    for instance in instances:
        timeline = instance["Status"]["Timeline"]
        begin = max(start, timeline["CreationDateTime"])
        until = min(end, timeline.get("EndDateTime") or end)
        if until > begin:
            key = (instance["InstanceType"], instance["Market"])
            seconds = Decimal(str((until - begin) / dt.timedelta(microseconds=1))) / 10**6
            totals[key] = totals.get(key, Decimal(0)) + seconds
    return {key: (value / level).quantize(Decimal("0.000001")) for key, value in totals.items()}


def test_every_task_ends_as_expected(events):
    states = {task: event["eventType"] for task, event in events.items()}
    assert states.pop("failing_step") == "FAIL"  # the step failed, the operator's wait raised
    assert states == dict.fromkeys(
        [
            "aggregate_steps",
            "backfill_step",
            "sessionize",
            "serverless_from_hook",
            "unread_serverless",
            "features_on_eks",
            "eks_not_waited_for",
            "after_the_failed_step",
        ],
        "COMPLETE",
    )


def test_job_runs_carry_the_tasks_identity_next_to_the_users_tags(server, events):
    expected = {
        "daily_sessionize": ("sessionize", {"team": "web-analytics"}),
        "hourly_dedupe": ("serverless_from_hook", {}),
        "flaky_export": ("unread_serverless", {}),
    }
    for name, (task_id, own) in expected.items():
        tags = server["serverless"][name]["tags"]
        assert set(tags) == IDENTITY | set(own), name
        assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
        assert tags["airflow_dag_id"] == "cost_emr" and tags["airflow_task_id"] == task_id
        assert {k: tags[k] for k in own} == own
    for name, task_id in (("nightly_features", "features_on_eks"), ("long_training", "eks_not_waited_for")):
        tags = server["eks"][name]["tags"]
        assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
        assert tags["airflow_task_id"] == task_id
    assert server["eks"]["nightly_features"]["tags"]["team"] == "ml"
    # EMR steps take no tags, and the cluster's tags are the user's
    assert server["cluster"]["Tags"] == [{"Key": "team", "Value": "platform"}]


@pytest.fixture(scope="module")
def rows(emr_run) -> list[dict]:
    """Every EMR usage in the ledger with its line, attributes parsed."""
    found = ledger_rows(
        emr_run.ledger_url,
        "SELECT r.task_id, u.source, u.metric, u.external_id, u.resource, u.quantity, u.unit, u.attributes, "
        "l.amount_nanos, l.method, l.price_ref, l.status, l.unpriced_reason FROM cost_usage u "
        "JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        "WHERE u.source IN ('emr', 'emr_serverless', 'emr_eks')",
    )
    for row in found:
        if not isinstance(row["attributes"], dict):
            row["attributes"] = json.loads(row["attributes"])
    return found


def test_steps_are_allocated_their_share_of_the_cluster(server, rows):
    level = server["cluster"]["StepConcurrencyLevel"]
    assert level == 2
    tasks = {"aggregate_orders": "aggregate_steps", "aggregate_refunds": "aggregate_steps"}
    tasks["repair_partitions"] = "failing_step"
    for step_name, task_id in tasks.items():
        step = server["steps"][step_name]
        expected = allocated_seconds(step, server["instances"], level)
        step_rows = [r for r in rows if r["source"] == "emr" and r["external_id"] == step["Id"]]
        assert {r["task_id"] for r in step_rows} == {task_id}
        seen = {}
        for row in step_rows:
            attributes = row["attributes"]
            key = (attributes["instance_type"], attributes["market"].upper())
            quantity = Decimal(row["quantity"])
            assert (row["metric"], row["unit"], row["resource"]) == (
                "instance_time",
                "instance-second",
                server["cluster"]["Id"],
            )
            assert quantity == expected[key], (step_name, attributes)
            assert attributes["state"] == step["Status"]["State"] and attributes["share"] == "1/2"
            component = attributes["component"]
            seen[(*key, component)] = quantity
            if component == "ec2_spot":
                # Spot EC2 time is kept, unpriced, with the reason
                assert row["amount_nanos"] is None and "Spot instances" in row["unpriced_reason"]
                continue
            unit_price = per_unit(
                "emr", "instance_time", "instance-second", component=component, instance_type=key[0]
            )
            assert row["amount_nanos"] == int(quantize_amount(quantity * unit_price) * 10**9)
            assert (row["method"], row["status"]) == ("allocated", "estimated")
            assert row["price_ref"].endswith(
                f":emr/instance_time[component={component},instance_type={key[0]}]"
            )
        # each instance type and market: the EMR fee and the EC2 instance
        assert set(seen) == {
            (*key, component)
            for key in expected
            for component in ("emr", "ec2" if key[1] == "ON_DEMAND" else "ec2_spot")
        }


def test_the_allocation_numbers(server, rows):
    """Two hours of cluster: the 20-minute step used all of it; half of that is the step's slot."""
    step = server["steps"]["aggregate_orders"]
    expected = allocated_seconds(step, server["instances"], 2)
    assert expected[("m5.xlarge", "ON_DEMAND")] == 600  # one primary node x 1200 s / 2
    assert expected[("r5.xlarge", "ON_DEMAND")] == 1200  # two core nodes x 1200 s / 2
    # the Spot task nodes ended 10 minutes before the test ran the DAG: only their overlap counts
    assert 0 < expected[("m5.xlarge", "SPOT")] < 1200
    on_demand = [
        r for r in rows if r["external_id"] == step["Id"] and r["attributes"]["market"] == "on_demand"
    ]
    # 1 x 1200 s x ($0.048 + $0.192)/h + 2 x 1200 s x ($0.063 + $0.252)/h, halved
    assert sum(r["amount_nanos"] for r in on_demand) == 145_000_000


def test_a_step_still_running_is_kept_unpriced_with_the_reason(server, events):
    step = server["steps"]["backfill_clicks"]
    assert step["Status"]["State"] in ("PENDING", "RUNNING")  # moto never finishes it
    (item,) = unpriced(events["backfill_step"], "emr")
    assert item["externalId"] == step["Id"]
    assert f"the step was still {step['Status']['State']} when the task ended" in item["reason"]
    assert not lines(events["backfill_step"], "emr")


def test_serverless_billed_usage_is_metered(server, events):
    for name, task_id in (("daily_sessionize", "sessionize"), ("hourly_dedupe", "serverless_from_hook")):
        job_run = server["serverless"][name]
        billed = job_run["billedResourceUtilization"]
        by_metric = {line["metric"]: line for line in lines(events[task_id], "emr_serverless")}
        assert set(by_metric) == {"vcpu_time", "memory_time", "storage_time"}
        for metric, field, unit in (
            ("vcpu_time", "vCPUHour", "vCPU-hour"),
            ("memory_time", "memoryGBHour", "GiB-hour"),
            ("storage_time", "storageGBHour", "GiB-hour"),
        ):
            line = by_metric[metric]
            quantity = Decimal(str(billed[field]))
            assert line["externalId"] == job_run["jobRunId"] and line["resource"] == job_run["applicationId"]
            assert (line["unit"], line["method"]) == (unit, "metered")
            assert Decimal(str(line["quantity"])) == quantity
            assert Decimal(str(line["amount"])) == quantize_amount(
                quantity * per_unit("emr_serverless", metric, unit)
            )
    # 1.25 vCPU-h x $0.052624 + 5.5 GB-h x $0.0057785 + 0.75 GB-h x $0.000111
    total = sum(Decimal(str(line["amount"])) for line in lines(events["sessionize"], "emr_serverless"))
    assert total == Decimal("0.06578") + Decimal("0.03178175") + Decimal("0.00008325")


def test_a_failed_serverless_look_up_keeps_the_run_unpriced(server, events):
    job_run = server["serverless"]["flaky_export"]
    (item,) = unpriced(events["unread_serverless"], "emr_serverless")
    assert item["externalId"] == job_run["jobRunId"]
    assert "GetJobRun failed" in item["reason"] and "InternalServerException" in item["reason"]
    assert not lines(events["unread_serverless"], "emr_serverless")


def test_eks_jobs_are_priced_by_requested_pods_over_their_duration(server, events):
    job_run = server["eks"]["nightly_features"]
    seconds = math.ceil((job_run["finishedAt"] - job_run["createdAt"]).total_seconds())
    assert seconds == 900
    # driver 1 vCPU + 4 executors x 2; memory 2g + 1g overhead, and 4 x (8g + 1g): the submit
    # parameters' 4 executors win over spark-defaults' 99
    vcpu, memory_gib = Decimal(9), Decimal(39)
    by_metric = {line["metric"]: line for line in lines(events["features_on_eks"], "emr_eks")}
    for metric, per_second, unit in (
        ("vcpu_time", vcpu, "vCPU-second"),
        ("memory_time", memory_gib, "GiB-second"),
    ):
        line = by_metric[metric]
        quantity = per_second * seconds
        assert (line["externalId"], line["resource"]) == (job_run["id"], job_run["virtualClusterId"])
        assert (line["unit"], line["method"]) == (unit, "list_price")
        assert Decimal(str(line["quantity"])) == quantity
        assert Decimal(str(line["amount"])) == quantize_amount(quantity * per_unit("emr_eks", metric, unit))
    assert Decimal(str(by_metric["vcpu_time"]["amount"])) == Decimal("0.02277")  # 8100 vCPU-s x $0.01012/h


def test_an_eks_job_still_running_is_kept_unpriced(server, events):
    job_run = server["eks"]["long_training"]
    assert job_run["state"] == "RUNNING"  # moto never finishes it
    (item,) = unpriced(events["eks_not_waited_for"], "emr_eks")
    assert item["externalId"] == job_run["id"]
    assert "the job run was still RUNNING when the task ended" in item["reason"]


def test_calls_the_cost_provider_made(emr, server):
    recorder, _, ids = emr
    steps = server["steps"]
    list_steps = recorder.calls_of("ListSteps", service="emr", by_cost_provider=True)
    asked = [sorted(call.body["StepIds"]) for call in list_steps]
    # one ListSteps per task, plus one re-read of the step that had not finished
    assert sorted(asked) == sorted(
        [
            sorted([steps["aggregate_orders"]["Id"], steps["aggregate_refunds"]["Id"]]),
            [steps["backfill_clicks"]["Id"]],
            [steps["backfill_clicks"]["Id"]],
            [steps["repair_partitions"]["Id"]],
        ]
    )
    # the cluster's instances: once per task that had a finished step
    assert len(recorder.calls_of("DescribeCluster", service="emr", by_cost_provider=True)) == 2
    assert len(recorder.calls_of("ListInstances", service="emr", by_cost_provider=True)) == 2
    serverless_reads = recorder.calls_of("GetJobRun", service="emr-serverless", by_cost_provider=True)
    assert sorted(call.path.rsplit("/", 1)[-1] for call in serverless_reads) == sorted(
        run["jobRunId"] for run in server["serverless"].values()
    )
    # the application's architecture: once per task whose run was read
    assert len(recorder.calls_of("GetApplication", service="emr-serverless", by_cost_provider=True)) == 2
    eks_reads = recorder.calls_of("DescribeJobRun", service="emr-containers", by_cost_provider=True)
    ids_read = sorted(call.path.rsplit("/", 1)[-1] for call in eks_reads)
    running = server["eks"]["long_training"]["id"]
    assert ids_read == sorted([server["eks"]["nightly_features"]["id"], running, running])


def test_the_ledger_matches_the_facet(rows, events):
    for task_id, event in events.items():
        facet = event["run"]["facets"][FACET]
        expected = sorted(
            (
                line["source"],
                line["externalId"],
                Decimal(str(line["quantity"])),
                int(Decimal(str(line["amount"])) * 10**9),
            )
            for line in facet["lines"]
            if line["source"].startswith("emr")
        )
        stored = sorted(
            (row["source"], row["external_id"], Decimal(row["quantity"]), row["amount_nanos"])
            for row in rows
            if row["task_id"] == task_id and row["amount_nanos"] is not None
        )
        assert stored == expected, task_id
    for row in rows:
        if row["source"] == "emr" and row["amount_nanos"] is not None:
            assert row["method"] == "allocated" and row["attributes"]["step_concurrency_level"] == 2
            assert row["attributes"]["cluster_id"] == row["resource"]
    unpriced_rows = [row for row in rows if row["amount_nanos"] is None]
    assert all(row["status"] == "unpriced" and row["unpriced_reason"] for row in unpriced_rows)
