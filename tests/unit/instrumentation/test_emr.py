"""Amazon EMR through the Amazon provider's real EMR hooks and boto3 clients, against a moto server on
127.0.0.1: job run tags, steps and job runs kept for the task's end, allocation of a cluster's time,
billed and requested usage, failure isolation, and patching that is symmetric and idempotent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from decimal import Decimal

import pytest
import wrapt
from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
from airflow.providers.amazon.aws.hooks.emr import EmrContainerHook, EmrHook, EmrServerlessHook

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import emr
from airflow_cost_provider.instrumentation.emr import (
    EmrCluster,
    EmrInstance,
    EmrJobs,
    EmrStep,
    PendingEksRun,
    PendingEmrStep,
    PendingServerlessRun,
    cpu_request,
    eks_usages,
    memory_mib,
    pod_requests,
    resolve_eks_runs,
    resolve_emr_steps,
    resolve_serverless_runs,
    serverless_usages,
    spark_properties,
    step_usages,
)
from airflow_cost_provider.pricing.estimate import estimate
from airflow_cost_provider.pricing.price_book import load_shipped
from airflow_cost_provider.tagging.aws import EMR_ON_EKS_TAGS, EMR_SERVERLESS_TAGS, job_run_tags
from tests.support import fake_aws
from tests.support.fake_emr import EksPlan, FakeEmr, ServerlessPlan
from tests.support.moto_recorder import MotoRecorder, reset_moto

ROLE = "arn:aws:iam::123456789012:role/emr-jobs"
HOSTILE = TaskTry(
    dag_id="sales.daily",
    task_id="load orders (v2)!",
    run_id="manual__2026-11-20T00:00:00+00:00",
    try_number=2,
    map_index=3,
    ol_run_id="019b7c01-0400-72a9-abc4-aa8a1d01f065",
)
BOOK = load_shipped()
T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def server():
    recorder = MotoRecorder()
    plans = FakeEmr(
        serverless={
            "planned": ServerlessPlan(vcpu_hours=2.0, memory_gb_hours=8.0, storage_gb_hours=0.5, seconds=900)
        },
        eks={"planned": EksPlan(seconds=120.4)},
    )
    with recorder.installed(), plans.installed(), fake_aws.moto_server() as url:
        reset_moto(url)
        application_id = fake_aws.client("emr-serverless", url).create_application(
            name="spark", releaseLabel="emr-7.2.0", type="SPARK"
        )["applicationId"]
        virtual_cluster_id = fake_aws.client("emr-containers", url).create_virtual_cluster(
            name="ml",
            containerProvider={"id": "eks", "type": "EKS", "info": {"eksInfo": {"namespace": "spark-unit"}}},
        )["id"]
        cluster_id = fake_aws.client("emr", url).run_job_flow(
            Name="shared",
            ReleaseLabel="emr-7.2.0",
            Instances={
                "InstanceGroups": [
                    {
                        "Name": "primary",
                        "InstanceRole": "MASTER",
                        "InstanceType": "m5.xlarge",
                        "InstanceCount": 1,
                    }
                ],
                "KeepJobFlowAliveWhenNoSteps": True,
            },
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
        )["JobFlowId"]
        yield (
            recorder,
            url,
            {"application": application_id, "virtual_cluster": virtual_cluster_id, "cluster": cluster_id},
        )


@pytest.fixture
def aws(server, monkeypatch):
    recorder, url, ids = server
    for key, value in fake_aws.airflow_env(url).items():
        monkeypatch.setenv(key, value)
    recorder.clear()
    return recorder, url, ids


@pytest.fixture
def jobs():
    instrumentation = EmrJobs()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def session():
    session = open_session(HOSTILE, worker.sample())
    yield session
    clear_sessions()


def pending(session, resolve) -> list:
    return session.pending.get(resolve, [])


def start_serverless(application_id: str, name: str = "nightly", **extra):
    return EmrServerlessHook(aws_conn_id="aws_default").conn.start_job_run(
        applicationId=application_id,
        executionRoleArn=ROLE,
        jobDriver={"sparkSubmit": {"entryPoint": "s3://scripts/job.py"}},
        name=name,
        **extra,
    )


def submit_eks(virtual_cluster_id: str, name: str = "features", tags: dict | None = None) -> str:
    return EmrContainerHook(aws_conn_id="aws_default", virtual_cluster_id=virtual_cluster_id).submit_job(
        name,
        ROLE,
        "emr-7.2.0-latest",
        {"sparkSubmitJobDriver": {"entryPoint": "s3://scripts/features.py"}},
        tags=tags,
    )


# ------------------------------------------------------------------------------------ pure parts


def test_job_run_tags_follow_each_services_rules():
    tags = job_run_tags(HOSTILE.tags(), {"team": "ml", "airflow_dag_id": "mine"}, EMR_SERVERLESS_TAGS)
    assert tags["team"] == "ml" and tags["airflow_dag_id"] == "mine"
    assert tags["openlineage_run_id"] == HOSTILE.ol_run_id
    assert tags["airflow_task_id"] == "load orders _v2__"  # EMR Serverless: [A-Za-z0-9 /_.:=+@-]
    assert tags["airflow_run_id"] == "manual__2026-11-20T00:00:00+00:00"
    eks = job_run_tags(HOSTILE.tags(), None, EMR_ON_EKS_TAGS)
    assert eks["airflow_task_id"] == "load orders (v2)!"  # EMR on EKS takes any non-blank value
    # the limit: the user's tags stay, the most identifying of the task's fill the room left
    crowded = {f"user_{n}": "x" for n in range(48)}
    merged = job_run_tags(HOSTILE.tags(), crowded, EMR_ON_EKS_TAGS)
    assert len(merged) == 50 and set(merged) - set(crowded) == {"openlineage_run_id", "airflow_dag_id"}
    assert job_run_tags({"aws:reserved": "x", "airflow_run_id": "r" * 300}, None, EMR_ON_EKS_TAGS) == {
        "airflow_run_id": job_run_tags({"airflow_run_id": "r" * 300}, None, EMR_ON_EKS_TAGS)["airflow_run_id"]
    }
    assert len(job_run_tags({"airflow_run_id": "r" * 300}, None, EMR_ON_EKS_TAGS)["airflow_run_id"]) == 256


def test_spark_settings_are_read_as_spark_submit_reads_them():
    assert memory_mib("4g") == 4096 and memory_mib("512m") == 512 and memory_mib("1536") == 1536
    assert memory_mib("2GB") == 2048 and memory_mib("1t") == 1024**2 and memory_mib("1024k") == 1
    assert (
        cpu_request("2") == 2
        and cpu_request("500m") == Decimal("0.5")
        and cpu_request("0.25") == Decimal("0.25")
    )
    properties = spark_properties(
        {
            "sparkSubmitJobDriver": {
                "entryPoint": "s3://x.py",
                "sparkSubmitParameters": "--conf spark.executor.instances=4 --conf=spark.executor.cores=2 "
                "--driver-memory 3g --num-executors 6",
            }
        },
        {
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": {"spark.executor.instances": "99", "spark.x": "y"},
                },
                {"classification": "emr-job-submitter", "properties": {"spark.executor.cores": "64"}},
            ]
        },
    )
    assert properties == {
        "spark.executor.instances": "6",  # the later flag wins, as in spark-submit
        "spark.executor.cores": "2",
        "spark.driver.memory": "3g",
        "spark.x": "y",
    }


def test_pod_requests_with_spark_defaults_overheads_and_dynamic_allocation():
    defaults = pod_requests({})
    # driver and 2 executors: 1 vCPU and 1 GiB + 384 MiB overhead each
    assert (defaults.vcpu, defaults.memory_gib, defaults.executors) == (3, Decimal("4.125"), 2)
    sized = pod_requests(
        {
            "spark.executor.instances": "4",
            "spark.executor.cores": "2",
            "spark.executor.memory": "8g",
            "spark.kubernetes.driver.request.cores": "500m",
            "spark.driver.memory": "2g",
            "spark.driver.memoryOverhead": "1g",
        }
    )
    # executors: 8g + 10% overhead; driver: 2g + 1g; driver asks for half a vCPU
    assert sized.vcpu == Decimal("8.5") and sized.memory_gib == Decimal(3) + 4 * Decimal("8.8")
    bounded = pod_requests(
        {"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.maxExecutors": "10"}
    )
    assert bounded.executors == 10 and "upper bound" in bounded.executors_basis
    assert pod_requests({"spark.dynamicAllocation.enabled": "true"}) is None


def test_eks_usage_is_requested_resources_over_the_rounded_up_duration():
    job_run = {
        "id": "run1",
        "virtualClusterId": "vc1",
        "state": "COMPLETED",
        "createdAt": T0,
        "finishedAt": at(599.2),
        "jobDriver": {
            "sparkSubmitJobDriver": {
                "entryPoint": "s3://x.py",
                "sparkSubmitParameters": "--conf spark.executor.instances=1",
            }
        },
    }
    vcpu, memory = eks_usages(job_run)
    assert (vcpu.metric, vcpu.quantity, vcpu.unit) == ("vcpu_time", 2 * 600, "vCPU-second")
    assert (memory.metric, memory.quantity, memory.unit) == (
        "memory_time",
        Decimal("2.75") * 600,
        "GiB-second",
    )
    assert estimate(vcpu, BOOK).amount == Decimal("0.003373333")  # 1200 vCPU-s x $0.01012/h
    (running,) = eks_usages({**job_run, "state": "RUNNING"})
    assert "still RUNNING" in running.attributes["why_unpriced"]
    (open_ended,) = eks_usages({**job_run, "configurationOverrides": {"applicationConfiguration": [
        {"classification": "spark-defaults", "properties": {"spark.dynamicAllocation.enabled": "true"}}
    ]}})  # fmt: skip
    assert "dynamic allocation" in open_ended.attributes["why_unpriced"]


def test_serverless_usage_is_the_billed_utilization_metered():
    job_run = {
        "applicationId": "app1",
        "jobRunId": "run1",
        "state": "FAILED",
        "billedResourceUtilization": {"vCPUHour": 1.5, "memoryGBHour": 6.0, "storageGBHour": 0.0},
    }
    usages = serverless_usages(job_run, "ARM64")
    assert [(u.metric, u.quantity, u.unit) for u in usages] == [
        ("vcpu_time", Decimal("1.5"), "vCPU-hour"),
        ("memory_time", Decimal("6.0"), "GiB-hour"),
        ("storage_time", Decimal("0.0"), "GiB-hour"),
    ]
    assert all(
        u.attributes["cost_method"] == "metered" and u.attributes["architecture"] == "arm64" for u in usages
    )
    line = estimate(usages[0], BOOK)
    # an arm64 run takes the Graviton price: 1.5 vCPU-hours x $0.042094
    assert line.method == "metered" and line.amount == Decimal("0.063141")
    assert dict(line.price.match) == {"architecture": "arm64"}
    (pending_run,) = serverless_usages({**job_run, "state": "RUNNING"})
    assert "still RUNNING" in pending_run.attributes["why_unpriced"]
    (silent,) = serverless_usages({"jobRunId": "run2", "state": "SUCCESS"})
    assert "no billed resource utilization" in silent.attributes["why_unpriced"]


def cluster(level: int = 1) -> EmrCluster:
    return EmrCluster(
        "j-1",
        "shared",
        level,
        (
            EmrInstance("m5.xlarge", "ON_DEMAND", at(-3600), None),
            EmrInstance("r5.xlarge", "ON_DEMAND", at(-3600), None),
            EmrInstance("r5.xlarge", "ON_DEMAND", at(-3600), at(300)),  # scaled in mid-step
            EmrInstance("r5.xlarge", "SPOT", at(600), None),  # added after the step
            EmrInstance("c5.xlarge", "SPOT", at(100), None),
        ),
    )


def test_a_step_is_allocated_each_instances_time_during_it_over_the_step_slots():
    step = EmrStep("s-1", "aggregate", "COMPLETED", at(0), at(500))
    usages = step_usages(step, cluster(level=2))
    got = {(u.attributes["instance_type"], u.attributes["component"]): u.quantity for u in usages}
    assert got == {
        ("c5.xlarge", "emr"): 200,  # 400 s / 2 slots
        ("c5.xlarge", "ec2_spot"): 200,
        ("m5.xlarge", "emr"): 250,
        ("m5.xlarge", "ec2"): 250,
        ("r5.xlarge", "emr"): 400,  # (500 + 300) s / 2
        ("r5.xlarge", "ec2"): 400,
    }
    assert all(u.attributes["cost_method"] == "allocated" and u.attributes["share"] == "1/2" for u in usages)
    assert {u.resource for u in usages} == {"j-1"} and {u.external_id for u in usages} == {"s-1"}
    priced = {(u.attributes["instance_type"], u.attributes["component"]): estimate(u, BOOK) for u in usages}
    assert priced[("m5.xlarge", "ec2")].amount == Decimal("0.013333333")  # 250 s x $0.192/h
    assert priced[("m5.xlarge", "ec2")].method == "allocated"
    assert "Spot instances" in priced[("c5.xlarge", "ec2_spot")].reason


def test_steps_that_did_not_finish_or_never_ran():
    (running,) = step_usages(EmrStep("s-2", "x", "RUNNING", at(0), None), cluster())
    assert "still RUNNING when the task ended" in running.attributes["why_unpriced"]
    (cancelled,) = step_usages(EmrStep("s-3", "x", "CANCELLED", None, None), cluster())
    assert "never ran (CANCELLED)" in cancelled.attributes["why_unpriced"]
    (alone,) = step_usages(EmrStep("s-4", "x", "COMPLETED", at(0), at(10)), EmrCluster("j-2", None, 1, ()))
    assert "no instance that ran during the step" in alone.attributes["why_unpriced"]


def test_only_sync_clients_are_watched():
    signature_of = EmrServerlessHook(aws_conn_id=None).get_client_type  # bound, as wrapt passes it
    assert emr._asks_for_async_client(signature_of, (None,), {"deferrable": True})
    assert emr._asks_for_async_client(signature_of, (None, None, True), {})
    assert not emr._asks_for_async_client(signature_of, ("us-east-1",), {})


# ----------------------------------------------------------------------------- against the server


def test_serverless_runs_are_tagged_and_read_at_the_task_end(aws, jobs, session):
    recorder, url, ids = aws
    started = start_serverless(ids["application"], "planned", tags={"team": "ml"})
    described = fake_aws.client("emr-serverless", url).get_job_run(
        applicationId=ids["application"], jobRunId=started["jobRunId"]
    )["jobRun"]
    assert described["tags"] == job_run_tags(HOSTILE.tags(), {"team": "ml"}, EMR_SERVERLESS_TAGS)
    (item,) = pending(session, resolve_serverless_runs)
    assert item == PendingServerlessRun(ids["application"], started["jobRunId"], "aws_default", "us-east-1")
    usages = resolve_serverless_runs([item], 5.0)
    assert [(u.metric, u.quantity) for u in usages] == [
        ("vcpu_time", Decimal("2.0")),
        ("memory_time", Decimal("8.0")),
        ("storage_time", Decimal("0.5")),
    ]
    assert [c.action for c in recorder.cost_provider_calls()] == ["GetJobRun", "GetApplication"]


def test_eks_runs_are_tagged_and_read_at_the_task_end(aws, jobs, session):
    _, url, ids = aws
    job_id = submit_eks(ids["virtual_cluster"], "planned", tags={"team": "ml"})
    described = fake_aws.client("emr-containers", url).describe_job_run(
        id=job_id, virtualClusterId=ids["virtual_cluster"]
    )["jobRun"]
    assert described["tags"] == job_run_tags(HOSTILE.tags(), {"team": "ml"}, EMR_ON_EKS_TAGS)
    (item,) = pending(session, resolve_eks_runs)
    assert item == PendingEksRun(ids["virtual_cluster"], job_id, "aws_default", "us-east-1")
    vcpu, memory = resolve_eks_runs([item], 5.0)
    assert vcpu.quantity == 3 * 121 and memory.quantity == Decimal("4.125") * 121  # Spark's defaults


def test_steps_are_kept_even_when_the_wait_for_them_fails(aws, jobs, session):
    _, _, ids = aws
    steps = [{"Name": "never_ends", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "x.jar"}}]
    with pytest.raises(Exception, match="max attempts|Waiter"):
        EmrHook(aws_conn_id="aws_default").add_job_flow_steps(
            ids["cluster"], steps, wait_for_completion=True, waiter_delay=1, waiter_max_attempts=1
        )
    (item,) = pending(session, resolve_emr_steps)
    assert item.cluster_id == ids["cluster"] and item.step_id.startswith("s-")
    (still_running,) = resolve_emr_steps([item], 0.5)  # moto never finishes a step
    assert "when the task ended" in still_running.attributes["why_unpriced"]


def test_pending_items_are_plain_data_that_survive_a_deferral(aws, jobs, session):
    _, _, ids = aws
    start_serverless(ids["application"])
    submit_eks(ids["virtual_cluster"])
    EmrHook(aws_conn_id="aws_default").add_job_flow_steps(
        ids["cluster"], [{"Name": "s", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "x.jar"}}]
    )
    document = json.loads(json.dumps(deferral.snapshot([], session.pending)))
    usages, restored = deferral.restore(document)
    assert usages == [] and sorted(type(item).__name__ for _, item in restored) == [
        "PendingEksRun",
        "PendingEmrStep",
        "PendingServerlessRun",
    ]
    for resolve, item in restored:
        assert item in session.pending[resolve]
        assert type(item)(**dataclasses.asdict(item)) == item


def test_a_look_up_that_fails_keeps_the_work_unpriced(aws, jobs, session):
    _, _, ids = aws
    (step,) = resolve_emr_steps([PendingEmrStep("j-UNKNOWN", "s-1")], 5.0)
    assert "ListSteps failed" in step.attributes["why_unpriced"]
    (run,) = resolve_serverless_runs([PendingServerlessRun(ids["application"], "unknown00000000")], 5.0)
    assert "GetJobRun failed" in run.attributes["why_unpriced"]
    (eks,) = resolve_eks_runs([PendingEksRun(ids["virtual_cluster"], "a" * 19)], 5.0)
    assert "DescribeJobRun failed" in eks.attributes["why_unpriced"]
    (late,) = resolve_eks_runs([PendingEksRun(ids["virtual_cluster"], "a" * 19)], 0.0)
    assert "no time left" in late.attributes["why_unpriced"]


def test_outside_a_task_or_when_suppressed_nothing_changes(aws, jobs, session):
    _, url, ids = aws
    with suppress():
        quiet = start_serverless(ids["application"])
    clear_sessions()
    alone = start_serverless(ids["application"])
    client = fake_aws.client("emr-serverless", url)
    for started in (quiet, alone):
        run = client.get_job_run(applicationId=ids["application"], jobRunId=started["jobRunId"])["jobRun"]
        assert not run.get("tags")
    assert session.pending == {}


def test_a_failing_hook_of_ours_starts_the_run_once_and_warns_once(aws, jobs, session, monkeypatch, caplog):
    recorder, _, ids = aws

    def broken(*args, **kwargs):
        raise RuntimeError("cost capture exploded")

    monkeypatch.setattr(emr, "job_run_tags", broken)
    monkeypatch.setattr(emr, "PendingServerlessRun", broken)
    failures.clear()
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        started = [start_serverless(ids["application"], f"run{n}", tags={"n": str(n)}) for n in range(3)]
    assert all(s["jobRunId"] for s in started)
    assert [c.body.get("tags") for c in recorder.calls_of("StartJobRun")] == [{"n": str(n)} for n in range(3)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "tagging an EMR job run" in w.getMessage()]) == 1
    assert len([w for w in warnings if "capturing an EMR job run" in w.getMessage()]) == 1
    assert all("no impact on the task" in w.getMessage() for w in warnings)
    assert session.pending == {}


def test_a_failed_start_is_the_callers_error_and_keeps_nothing(aws, jobs, session):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        start_serverless("unknown-application")
    assert session.pending == {}


def test_instrument_and_uninstrument_are_symmetric_and_idempotent(aws, session):
    _, url, ids = aws
    inherited = AwsGenericHook.__dict__["get_client_type"]
    hooks = (EmrHook, EmrServerlessHook, EmrContainerHook)
    assert not any("get_client_type" in h.__dict__ for h in hooks)
    instrumentation = EmrJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    for hook_class in hooks:
        wrapped = hook_class.__dict__["get_client_type"]
        assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is inherited
    watched = EmrServerlessHook(aws_conn_id="aws_default").conn
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert not any("get_client_type" in h.__dict__ for h in hooks)
    # a client created while instrumented does nothing once uninstrumented
    started = watched.start_job_run(
        applicationId=ids["application"],
        executionRoleArn=ROLE,
        jobDriver={"sparkSubmit": {"entryPoint": "s3://x"}},
    )
    run = fake_aws.client("emr-serverless", url).get_job_run(
        applicationId=ids["application"], jobRunId=started["jobRunId"]
    )["jobRun"]
    assert not run.get("tags") and session.pending == {}
    instrumentation.instrument()
    assert EmrHook.__dict__["get_client_type"].__wrapped__ is inherited
    instrumentation.uninstrument()
