"""AWS Glue job runs through the Amazon provider's real GlueJobHook and boto3, against a moto server on
127.0.0.1: run arguments carrying the identity, DPU time as Glue bills it, look-ups at task end,
failure isolation, and patching that is symmetric and idempotent."""

from __future__ import annotations

import dataclasses
import json
import logging
from decimal import Decimal

import pytest
import wrapt
from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import failures, suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import glue
from airflow_cost_provider.instrumentation.glue import (
    GlueJobs,
    GlueRun,
    PendingGlueRun,
    resolve_glue_runs,
    run_usage,
)
from airflow_cost_provider.pricing.estimate import estimate
from airflow_cost_provider.pricing.price_book import load_shipped
from airflow_cost_provider.tagging.aws import glue_run_arguments
from tests.support import fake_aws
from tests.support.http_recorder import closed_port
from tests.support.moto_recorder import MotoRecorder, reset_moto

ROLE = "arn:aws:iam::123456789012:role/glue-etl"
HOSTILE = TaskTry(
    dag_id="sales.daily",
    task_id="load orders\n--now",
    run_id="manual__2026-11-20T00:00:00+00:00",
    try_number=2,
    map_index=3,
    ol_run_id="019b7c01-0400-72a9-abc4-aa8a1d01f065",
)
BOOK = load_shipped()


def factors(worker_type: str) -> Decimal | None:
    return BOOK.factor("glue_dpu_per_worker", worker_type)


@pytest.fixture(scope="module")
def server():
    recorder = MotoRecorder()
    with recorder.installed(), fake_aws.moto_server() as url:
        reset_moto(url)
        client = fake_aws.client("glue", url)
        client.create_job(
            Name="orders",
            Description="orders",
            Role=ROLE,
            Command={"Name": "glueetl", "ScriptLocation": "s3://scripts/orders.py"},
            GlueVersion="4.0",
            WorkerType="G.1X",
            NumberOfWorkers=10,
            ExecutionProperty={"MaxConcurrentRuns": 100},
        )
        yield recorder, url


@pytest.fixture
def aws(server, monkeypatch):
    recorder, url = server
    for key, value in fake_aws.airflow_env(url).items():
        monkeypatch.setenv(key, value)
    recorder.clear()
    return recorder, fake_aws.client("glue", url)


@pytest.fixture
def jobs():
    instrumentation = GlueJobs()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()


@pytest.fixture
def session():
    session = open_session(HOSTILE, worker.sample())
    yield session
    clear_sessions()


def hook() -> GlueJobHook:
    return GlueJobHook(job_name="orders", aws_conn_id="aws_default")


def pending(session) -> list[PendingGlueRun]:
    return session.pending.get(resolve_glue_runs, [])


def job_run(**fields) -> dict:
    return {"Id": "jr_1", "JobName": "orders", "JobRunState": "SUCCEEDED", "ExecutionTime": 123, **fields}


# ------------------------------------------------------------------------------------ pure parts


def test_identity_arguments_are_added_and_the_users_own_win():
    arguments = glue_run_arguments(HOSTILE.tags(), {"--day": "2026-11-20", "--airflow_dag_id": "mine"})
    assert arguments["--day"] == "2026-11-20" and arguments["--airflow_dag_id"] == "mine"
    assert arguments["--openlineage_run_id"] == HOSTILE.ol_run_id
    assert arguments["--airflow_run_id"] == "manual__2026-11-20T00:00:00+00:00"
    # blanks and line breaks would reach the script's command line: they become `_`
    assert arguments["--airflow_task_id"] == "load_orders_--now"
    assert arguments["--airflow_try_number"] == "2" and arguments["--airflow_map_index"] == "3"
    long = glue_run_arguments({"airflow_run_id": "r" * 400}, None)["--airflow_run_id"]
    assert len(long) == 256 and long.startswith("r" * 200)


def test_the_issue_example_g1x_ten_workers_123_seconds():
    usage = run_usage(GlueRun.from_api(job_run(WorkerType="G.1X", NumberOfWorkers=10)), factors)
    assert (usage.metric, usage.unit, usage.quantity) == ("dpu_time", "DPU-second", 1230)
    assert round(usage.quantity / 3600, 4) == Decimal("0.3417")
    line = estimate(usage, BOOK)
    assert line.amount == Decimal("0.150333333") and line.price.match == (("execution_class", "standard"),)


def test_each_capacity_rule_and_the_one_minute_minimum():
    def quantity(**fields) -> Decimal:
        return run_usage(GlueRun.from_api(job_run(**fields)), factors).quantity

    assert quantity(WorkerType="G.2X", NumberOfWorkers=5) == 5 * 2 * 123
    assert quantity(WorkerType="G.025X", NumberOfWorkers=4) == 123
    assert quantity(MaxCapacity=0.0625) == Decimal("7.6875")  # a Python shell job
    assert quantity(WorkerType="Standard", NumberOfWorkers=3, MaxCapacity=10.0) == 1230
    assert quantity(AllocatedCapacity=2) == 246
    # billed per second, at least a minute
    short = run_usage(
        GlueRun.from_api(job_run(ExecutionTime=20, WorkerType="G.1X", NumberOfWorkers=2)), factors
    )
    assert short.quantity == 2 * 60
    assert short.attributes["minimum_applied"] is True and short.attributes["billed_seconds"] == 60


def test_dpu_seconds_win_when_glue_reports_them():
    autoscaled = GlueRun.from_api(job_run(WorkerType="G.1X", NumberOfWorkers=10, DPUSeconds=480.5))
    usage = run_usage(autoscaled, factors)
    assert usage.quantity == Decimal("480.5") and usage.attributes["basis"] == "DPUSeconds"
    # a 30-second Flex run: the same average DPUs, billed for the minute
    flex = GlueRun.from_api(job_run(ExecutionTime=30, DPUSeconds=45.0, ExecutionClass="FLEX"))
    usage = run_usage(flex, factors)
    assert usage.quantity == Decimal("90.000000") and usage.attributes["execution_class"] == "flex"
    line = estimate(usage, BOOK)
    assert line.price.match == (("execution_class", "flex"),) and line.amount == Decimal("0.00725")


def test_the_execution_class_comes_from_the_run_then_the_start_call_then_the_job():
    run = GlueRun.from_api(job_run(WorkerType="G.1X", NumberOfWorkers=1))
    assert run_usage(run, factors).attributes["execution_class"] == "standard"
    assert run_usage(run, factors, "FLEX").attributes["execution_class"] == "flex"
    own = GlueRun.from_api(job_run(WorkerType="G.1X", NumberOfWorkers=1, ExecutionClass="STANDARD"))
    assert run_usage(own, factors, "FLEX").attributes["execution_class"] == "standard"


def test_runs_that_cannot_be_priced_say_why():
    running = run_usage(GlueRun.from_api(job_run(JobRunState="RUNNING")), factors)
    assert (
        running.metric == "queries"
        and "still RUNNING when the task ended" in running.attributes["why_unpriced"]
    )
    memory_optimized = run_usage(GlueRun.from_api(job_run(WorkerType="R.1X", NumberOfWorkers=2)), factors)
    assert (memory_optimized.metric, memory_optimized.unit, memory_optimized.quantity) == (
        "execution_time",
        "second",
        123,
    )
    assert "no DPUs per worker for worker type 'R.1X'" in memory_optimized.attributes["why_unpriced"]
    assert "no price for glue/execution_time" in estimate(memory_optimized, BOOK).reason
    nothing = run_usage(
        GlueRun.from_api(job_run(JobRunState="FAILED", ExecutionTime=0, MaxCapacity=10.0)), factors
    )
    assert nothing.quantity == 0 and nothing.attributes["not_billed"] == "no execution time"
    unknown = run_usage(GlueRun.from_api(job_run()), factors)
    assert "neither DPUSeconds nor the run's capacity" in unknown.attributes["why_unpriced"]


# ----------------------------------------------------------------------------- against the server


def test_a_run_is_tagged_and_left_for_the_task_end(aws, jobs, session):
    recorder, client = aws
    response = hook().initialize_job({"--day": "2026-11-20"}, {"WorkerType": "G.2X", "NumberOfWorkers": 3})
    arguments = client.get_job_run(JobName="orders", RunId=response["JobRunId"])["JobRun"]["Arguments"]
    assert arguments["--day"] == "2026-11-20"
    assert {k: v for k, v in arguments.items() if k != "--day"} == glue_run_arguments(HOSTILE.tags(), None)
    (item,) = pending(session)
    assert (item.job_name, item.run_id, item.aws_conn_id, item.region_name) == (
        "orders",
        response["JobRunId"],
        "aws_default",
        "us-east-1",
    )
    assert recorder.cost_provider_calls() == []  # nothing is read before the task ends
    (usage,) = resolve_glue_runs([item], 5.0)
    assert usage.quantity == 3 * 2 * 123 and usage.external_id == response["JobRunId"]
    reads = recorder.cost_provider_calls()
    assert [c.action for c in reads] == ["GetJobRun", "BatchGetJobs"]  # moto reports no ExecutionClass
    assert "airflow-cost-provider/" in reads[0].user_agent


def test_the_start_calls_execution_class_is_kept(aws, jobs, session):
    recorder, _ = aws
    hook().initialize_job(None, {"ExecutionClass": "FLEX"})
    (item,) = pending(session)
    assert item.execution_class == "FLEX"
    (usage,) = resolve_glue_runs([item], 5.0)
    assert usage.attributes["execution_class"] == "flex"
    assert [c.action for c in recorder.cost_provider_calls()] == ["GetJobRun"]


def test_a_pending_run_is_plain_data_that_survives_a_deferral(aws, jobs, session):
    hook().initialize_job()
    (item,) = pending(session)
    document = json.loads(json.dumps(deferral.snapshot([], session.pending)))
    usages, restored = deferral.restore(document)
    assert usages == [] and restored == [(resolve_glue_runs, item)]
    assert PendingGlueRun(**dataclasses.asdict(item)) == item


def test_a_look_up_that_fails_or_runs_out_of_time_keeps_the_run_unpriced(aws, jobs, session, monkeypatch):
    response = hook().initialize_job()
    (item,) = pending(session)
    (late,) = resolve_glue_runs([item], 0.0)
    assert "no time left" in late.attributes["why_unpriced"] and late.external_id == response["JobRunId"]
    missing = PendingGlueRun("orders", "jr_unknown")
    (unknown,) = resolve_glue_runs([missing], 5.0)
    assert "GetJobRun failed" in unknown.attributes["why_unpriced"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT", fake_aws.aws_connection(f"http://127.0.0.1:{closed_port()}")
    )
    (unreachable,) = resolve_glue_runs([item], 2.0)
    assert "GetJobRun failed" in unreachable.attributes["why_unpriced"]


def test_outside_a_task_or_when_suppressed_nothing_changes(aws, jobs, session):
    recorder, client = aws
    with suppress():
        first = hook().initialize_job({"--n": "1"})
    clear_sessions()
    second = hook().initialize_job({"--n": "2"})
    for response, n in ((first, "1"), (second, "2")):
        run = client.get_job_run(JobName="orders", RunId=response["JobRunId"])["JobRun"]
        assert run["Arguments"] == {"--n": n}
    assert pending(session) == []


def test_tagging_switched_off_still_captures(aws, jobs, session, monkeypatch):
    from airflow_cost_provider import conf

    _, client = aws
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "glue")
    conf.clear_cache()
    response = hook().initialize_job({"--n": "3"})
    assert client.get_job_run(JobName="orders", RunId=response["JobRunId"])["JobRun"]["Arguments"] == {
        "--n": "3"
    }
    assert len(pending(session)) == 1


def test_a_failing_wrapper_starts_the_run_once_and_warns_once(aws, jobs, session, monkeypatch, caplog):
    recorder, _ = aws

    def broken(*args, **kwargs):
        raise RuntimeError("cost capture exploded")

    monkeypatch.setattr(glue, "glue_run_arguments", broken)
    monkeypatch.setattr(glue, "PendingGlueRun", broken)
    failures.clear()
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider"):
        responses = [hook().initialize_job({"--n": str(n)}) for n in range(3)]
    assert all(r["JobRunId"].startswith("jr_") for r in responses)
    assert len(recorder.calls_of("StartJobRun")) == 3
    assert [c.body["Arguments"] for c in recorder.calls_of("StartJobRun")] == [
        {"--n": str(n)} for n in range(3)
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "tagging a Glue job run" in w.getMessage()]) == 1
    assert len([w for w in warnings if "capturing a Glue job run" in w.getMessage()]) == 1
    assert all("no impact on the task" in w.getMessage() for w in warnings)
    assert pending(session) == []


def test_the_hooks_own_errors_reach_the_caller_unchanged(aws, jobs, session):
    with pytest.raises(ValueError, match="job_name must be set"):
        GlueJobHook(aws_conn_id="aws_default").initialize_job()
    assert pending(session) == []


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = GlueJobHook.__dict__["initialize_job"]
    instrumentation = GlueJobs()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = GlueJobHook.__dict__["initialize_job"]
    assert isinstance(wrapped, wrapt.FunctionWrapper) and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert GlueJobHook.__dict__["initialize_job"] is original
    instrumentation.instrument()
    assert GlueJobHook.__dict__["initialize_job"].__wrapped__ is original
    instrumentation.uninstrument()
