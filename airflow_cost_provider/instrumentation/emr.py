"""Amazon EMR work started through the Amazon provider's EMR hooks: steps on EMR on EC2 clusters,
EMR Serverless job runs and EMR on EKS job runs.

The operators (`EmrAddStepsOperator`, `EmrServerlessStartJobOperator`, `EmrContainerOperator`) and user
code alike start their work through the boto3 client of `EmrHook`, `EmrServerlessHook` or
`EmrContainerHook` (`hook.conn`; EMR Serverless has no hook method of its own for it). So each client
these hooks create is watched for its start call, through botocore's own event hooks on that client:

- `provide-client-params` adds the task's identity to the `tags` of EMR Serverless and EMR on EKS job
  runs (the user's tags win; EMR steps cannot be tagged: a cluster's tags are the user's);
- `after-call` keeps the step or job run ids the service returned, even when the operator's wait for
  them fails afterwards, and leaves their statistics for the task's end.

At the task's end:

- `emr` (EMR on EC2): ListSteps (10 ids a call) for the steps' start and end, then DescribeCluster and
  ListInstances once per cluster. Each step is `allocated` the cluster's instance time during the step
  (every instance's own lifetime clipped to the step), divided by the cluster's StepConcurrencyLevel:
  the cluster is shared evenly among its step slots. Priced as the EMR fee plus the EC2 On-Demand
  price per instance-hour of each instance type.
- `emr_serverless`: GetJobRun's `billedResourceUtilization` (vCPU-hours, GB-hours of memory and of
  storage beyond the free 20 GB per worker, as billed, with its 1-minute minimum per worker): `metered`.
  GetApplication once per application, for its architecture (Arm is priced apart).
- `emr_eks`: DescribeJobRun's duration (createdAt to finishedAt, rounded up to the second) x the vCPU
  and memory the job's Spark driver and executor pods request, read from its job driver and
  spark-defaults: `list_price`, an estimate.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import wrapt

from airflow_cost_provider import conf
from airflow_cost_provider.instrumentation.aws import AwsCalls, describe_error, with_region
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.glue import (
    aws_client,
    chunks,
    decimal,
    pause_before_rereading,
    utc,
)
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging.aws import EMR_ON_EKS_TAGS, EMR_SERVERLESS_TAGS, TagRules, job_run_tags

HOOK_MODULE = "airflow.providers.amazon.aws.hooks.emr"
EC2_SOURCE = "emr"
SERVERLESS_SOURCE = "emr_serverless"
EKS_SOURCE = "emr_eks"


@dataclass(frozen=True)
class StartCall:
    """The call that starts work on one EMR service, and what its runs may be tagged with."""

    source: str
    operation: str
    tag_rules: TagRules | None


# by the client's service id
START_CALLS = {
    "emr": StartCall(EC2_SOURCE, "AddJobFlowSteps", None),
    "emr-serverless": StartCall(SERVERLESS_SOURCE, "StartJobRun", EMR_SERVERLESS_TAGS),
    "emr-containers": StartCall(EKS_SOURCE, "StartJobRun", EMR_ON_EKS_TAGS),
}
LIST_STEPS_BATCH = 10  # the most StepIds ListSteps takes
MAX_INSTANCE_PAGES = 20
UNFINISHED_STEP_STATES = frozenset({"PENDING", "CANCEL_PENDING", "RUNNING"})
UNFINISHED_SERVERLESS_STATES = frozenset(
    {"SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED", "CANCELLING"}
)
UNFINISHED_EKS_STATES = frozenset({"PENDING", "SUBMITTED", "RUNNING", "CANCEL_PENDING"})


def _seconds(delta: dt.timedelta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


# ============================================================================ EMR on EC2: steps


@dataclass(frozen=True)
class EmrStep:
    step_id: str
    name: str | None = None
    state: str | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None

    @classmethod
    def from_api(cls, step: dict[str, Any]) -> EmrStep:
        status = step.get("Status") or {}
        timeline = status.get("Timeline") or {}
        return cls(
            step_id=step["Id"],
            name=step.get("Name"),
            state=status.get("State"),
            started=utc(timeline.get("StartDateTime")),
            ended=utc(timeline.get("EndDateTime")),
        )


@dataclass(frozen=True)
class EmrInstance:
    instance_type: str
    market: str
    created: dt.datetime | None
    ended: dt.datetime | None

    @classmethod
    def from_api(cls, instance: dict[str, Any]) -> EmrInstance:
        timeline = (instance.get("Status") or {}).get("Timeline") or {}
        return cls(
            instance_type=instance.get("InstanceType") or "unknown",
            market=(instance.get("Market") or "ON_DEMAND").upper(),
            created=utc(timeline.get("CreationDateTime")),
            ended=utc(timeline.get("EndDateTime")),
        )


@dataclass(frozen=True)
class EmrCluster:
    cluster_id: str
    name: str | None
    step_concurrency_level: int
    instances: tuple[EmrInstance, ...]


def step_usages(step: EmrStep, cluster: EmrCluster, **attributes: Any) -> list[Usage]:
    """The step's allocated share of the cluster's instance time: for each instance type and market,
    the EMR fee's and the EC2 instance's `instance_time`, in instance-seconds."""
    context = _clean(
        {
            "cluster_id": cluster.cluster_id,
            "cluster_name": cluster.name,
            "step_name": step.name,
            "state": step.state,
            **attributes,
        }
    )
    if step.state in UNFINISHED_STEP_STATES or (step.started and not step.ended):
        reason = f"the step was still {step.state} when the task ended, so its cluster time was not known yet"
        return [unresolved_usage(EC2_SOURCE, step.step_id, reason, **context)]
    if step.started is None or step.ended is None:
        reason = f"the step never ran ({step.state}): it used no cluster time"
        return [unresolved_usage(EC2_SOURCE, step.step_id, reason, **context)]
    level = max(cluster.step_concurrency_level, 1)
    seconds: dict[tuple[str, str], Decimal] = {}
    counts: dict[tuple[str, str], int] = {}
    for instance in cluster.instances:
        begin = max(step.started, instance.created or step.started)
        end = min(step.ended, instance.ended or step.ended)
        if end <= begin:
            continue
        key = (instance.instance_type, instance.market)
        seconds[key] = seconds.get(key, Decimal(0)) + _seconds(end - begin)
        counts[key] = counts.get(key, 0) + 1
    if not seconds:
        reason = "the cluster reported no instance that ran during the step"
        return [unresolved_usage(EC2_SOURCE, step.step_id, reason, **context)]
    step_seconds = _seconds(step.ended - step.started)
    usages = []
    for (instance_type, market), instance_seconds in sorted(seconds.items()):
        quantity = (instance_seconds / level).quantize(Decimal("0.000001"))
        ec2_component = "ec2" if market == "ON_DEMAND" else f"ec2_{market.lower()}"
        for component in ("emr", ec2_component):
            details = {
                **context,
                "instance_type": instance_type,
                "market": market.lower(),
                "component": component,
                "instances": counts[(instance_type, market)],
                "step_seconds": str(step_seconds),
                "step_concurrency_level": level,
                "share": f"1/{level}",
                "cluster_instance_seconds": str(instance_seconds),
                METHOD_ATTRIBUTE: "allocated",
            }
            if component.startswith("ec2_"):
                details[UNPRICED_HINT_ATTRIBUTE] = (
                    f"{market.title()} instances are billed at the market's changing price: add a price "
                    f"for component {component} to price them"
                )
            usages.append(
                Usage(
                    source=EC2_SOURCE,
                    metric="instance_time",
                    quantity=quantity,
                    unit="instance-second",
                    resource=cluster.cluster_id,
                    external_id=step.step_id,
                    start_time=step.started,
                    end_time=step.ended,
                    attributes=details,
                )
            )
    return usages


@dataclass(frozen=True)
class PendingEmrStep:
    """A step whose cluster time is allocated when the task ends (plain values: survives a deferral)."""

    cluster_id: str
    step_id: str
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(EC2_SOURCE, self.step_id, reason, cluster_id=self.cluster_id)


def resolve_emr_steps(items: list[PendingEmrStep], timeout_seconds: float) -> list[Usage]:
    """Per cluster: ListSteps for its steps (10 a call), and for the finished ones DescribeCluster and
    ListInstances once."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[tuple[Any, ...], dict[str, dict[str, PendingEmrStep]]] = {}
    for item in items:
        clusters = groups.setdefault((item.aws_conn_id, item.region_name), {})
        clusters.setdefault(item.cluster_id, {}).setdefault(item.step_id, item)
    usages: list[Usage] = []
    for (aws_conn_id, region_name), clusters in groups.items():
        calls = AwsCalls(aws_client("emr", aws_conn_id, region_name), deadline)
        for cluster_id, pending in clusters.items():
            usages += with_region(_resolve_cluster(calls, cluster_id, pending, deadline), calls)
    return usages


def _resolve_cluster(
    calls: AwsCalls, cluster_id: str, pending: dict[str, PendingEmrStep], deadline: float
) -> list[Usage]:
    steps: dict[str, EmrStep] = {}
    problems: dict[str, str] = {}
    _list_steps(calls, cluster_id, list(pending), steps, problems)
    unfinished = [sid for sid, step in steps.items() if step.state in UNFINISHED_STEP_STATES]
    if unfinished and pause_before_rereading(deadline):
        _list_steps(calls, cluster_id, unfinished, steps, problems)
    cluster = EmrCluster(cluster_id, None, 1, ())
    finished = [sid for sid, step in steps.items() if step.started and step.ended]
    if finished:
        try:
            cluster = _describe_cluster(calls, cluster_id)
        except Exception as error:
            for step_id in finished:
                problems[step_id] = f"reading the cluster's instances failed: {describe_error(error)}"
                del steps[step_id]
    usages: list[Usage] = []
    for step_id, item in pending.items():
        step = steps.get(step_id)
        if step is None:
            usages.append(item.unresolved(problems.get(step_id, "EMR did not return the step")))
        else:
            usages += step_usages(step, cluster)
    return usages


def _list_steps(
    calls: AwsCalls, cluster_id: str, step_ids: list[str], steps: dict[str, EmrStep], problems: dict[str, str]
) -> None:
    for chunk in chunks(step_ids, LIST_STEPS_BATCH):
        try:
            response = calls("list_steps", ClusterId=cluster_id, StepIds=chunk)
        except Exception as error:
            problems.update(dict.fromkeys(chunk, f"ListSteps failed: {describe_error(error)}"))
            continue
        for step in response.get("Steps", []):
            steps[step["Id"]] = EmrStep.from_api(step)


def _describe_cluster(calls: AwsCalls, cluster_id: str) -> EmrCluster:
    cluster = calls("describe_cluster", ClusterId=cluster_id)["Cluster"]
    instances: list[EmrInstance] = []
    marker = None
    for _ in range(MAX_INSTANCE_PAGES):
        response = calls("list_instances", ClusterId=cluster_id, **({"Marker": marker} if marker else {}))
        instances += [EmrInstance.from_api(instance) for instance in response.get("Instances", [])]
        marker = response.get("Marker")
        if not marker:
            break
    return EmrCluster(
        cluster_id=cluster_id,
        name=cluster.get("Name"),
        step_concurrency_level=int(cluster.get("StepConcurrencyLevel") or 1),
        instances=tuple(instances),
    )


# ================================================================================= EMR Serverless


# billedResourceUtilization field -> (metric, unit)
SERVERLESS_METRICS = {
    "vCPUHour": ("vcpu_time", "vCPU-hour"),
    "memoryGBHour": ("memory_time", "GiB-hour"),
    "storageGBHour": ("storage_time", "GiB-hour"),
}


def serverless_usages(job_run: dict[str, Any], architecture: str | None = None) -> list[Usage]:
    """The run's billed vCPU, memory and storage, as EMR Serverless billed them."""
    run_id = job_run.get("jobRunId", "")
    application_id = job_run.get("applicationId")
    state = job_run.get("state")
    context = _clean(
        {
            "application_id": application_id,
            "job_run_name": job_run.get("name"),
            "state": state,
            "architecture": architecture.lower() if architecture else None,
            "release_label": job_run.get("releaseLabel"),
            "total_execution_seconds": job_run.get("totalExecutionDurationSeconds"),
        }
    )
    if state in UNFINISHED_SERVERLESS_STATES:
        reason = f"the job run was still {state} when the task ended, so its billed usage was not known yet"
        return [unresolved_usage(SERVERLESS_SOURCE, run_id, reason, **context)]
    billed = job_run.get("billedResourceUtilization")
    if not isinstance(billed, dict):
        reason = "EMR Serverless reported no billed resource utilization for the job run"
        return [unresolved_usage(SERVERLESS_SOURCE, run_id, reason, **context)]
    usages = []
    for field, (metric, unit) in SERVERLESS_METRICS.items():
        quantity = decimal(billed.get(field))
        if quantity is None:
            continue
        usages.append(
            Usage(
                source=SERVERLESS_SOURCE,
                metric=metric,
                quantity=quantity,
                unit=unit,
                resource=application_id,
                external_id=run_id,
                start_time=utc(job_run.get("startedAt") or job_run.get("createdAt")),
                end_time=utc(job_run.get("endedAt") or job_run.get("updatedAt")),
                attributes={**context, METHOD_ATTRIBUTE: "metered"},
            )
        )
    return usages


@dataclass(frozen=True)
class PendingServerlessRun:
    application_id: str
    job_run_id: str
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(
            SERVERLESS_SOURCE, self.job_run_id, reason, application_id=self.application_id
        )


def resolve_serverless_runs(items: list[PendingServerlessRun], timeout_seconds: float) -> list[Usage]:
    """GetJobRun per run (no batch read exists), GetApplication once per application."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[tuple[Any, ...], dict[tuple[str, str], PendingServerlessRun]] = {}
    for item in items:
        group = groups.setdefault((item.aws_conn_id, item.region_name), {})
        group.setdefault((item.application_id, item.job_run_id), item)
    usages: list[Usage] = []
    for (aws_conn_id, region_name), pending in groups.items():
        calls = AwsCalls(aws_client("emr-serverless", aws_conn_id, region_name), deadline)
        runs, problems = _read_serverless_runs(calls, pending.values())
        unfinished = [
            item
            for key, item in pending.items()
            if runs.get(key, {}).get("state") in UNFINISHED_SERVERLESS_STATES
        ]
        if unfinished and pause_before_rereading(deadline):
            more, _ = _read_serverless_runs(calls, unfinished)
            runs.update(more)
        architectures = _architectures(calls, {key[0] for key in runs})
        for key, item in pending.items():
            if key in runs:
                usages += serverless_usages(runs[key], architectures.get(item.application_id))
            else:
                usages.append(item.unresolved(problems.get(key, "EMR Serverless did not return the job run")))
    return usages


def _read_serverless_runs(
    calls: AwsCalls, items: Iterable[PendingServerlessRun]
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
    runs, problems = {}, {}
    for item in items:
        key = (item.application_id, item.job_run_id)
        try:
            runs[key] = calls("get_job_run", applicationId=item.application_id, jobRunId=item.job_run_id)[
                "jobRun"
            ]
        except Exception as error:
            problems[key] = f"GetJobRun failed: {describe_error(error)}"
    return runs, problems


def _architectures(calls: AwsCalls, application_ids: set[str]) -> dict[str, str]:
    architectures = {}
    for application_id in sorted(application_ids):
        try:
            application = calls("get_application", applicationId=application_id)["application"]
        except Exception:
            continue  # priced at the default (x86_64) list prices, like an application that says nothing
        if application.get("architecture"):
            architectures[application_id] = application["architecture"]
    return architectures


# ================================================================================= EMR on EKS


MIB_PER_UNIT = {
    "b": Decimal(1) / 2**20,
    "k": Decimal(1) / 1024,
    "m": Decimal(1),
    "g": Decimal(1024),
    "t": Decimal(1024**2),
    "p": Decimal(1024**3),
}
# Spark's defaults where the job sets nothing (https://spark.apache.org/docs/latest/configuration.html)
DEFAULT_EXECUTORS = 2
DEFAULT_MEMORY_MIB = Decimal(1024)
DEFAULT_OVERHEAD_FACTOR = Decimal("0.10")
MINIMUM_OVERHEAD_MIB = Decimal(384)
_SUBMIT_FLAGS = {
    "--num-executors": "spark.executor.instances",
    "--executor-cores": "spark.executor.cores",
    "--executor-memory": "spark.executor.memory",
    "--driver-cores": "spark.driver.cores",
    "--driver-memory": "spark.driver.memory",
}


def memory_mib(text: str) -> Decimal:
    """A Spark memory setting in MiB ("4g", "512m", "1536": a bare number is MiB)."""
    value = text.strip().lower()
    if value.endswith("b") and len(value) > 1 and value[-2] in MIB_PER_UNIT:
        value = value[:-1]
    if value and value[-1] in MIB_PER_UNIT:
        return Decimal(value[:-1]) * MIB_PER_UNIT[value[-1]]
    return Decimal(value)


def cpu_request(text: str) -> Decimal:
    """A Kubernetes CPU quantity ("2", "0.5", "500m")."""
    value = text.strip()
    return Decimal(value[:-1]) / 1000 if value.endswith("m") else Decimal(value)


def spark_properties(
    job_driver: Mapping[str, Any], configuration_overrides: Mapping[str, Any] | None
) -> dict[str, str]:
    """The job's Spark properties: spark-defaults, then what its submit parameters set (which win)."""
    properties: dict[str, str] = {}
    for classification in (configuration_overrides or {}).get("applicationConfiguration") or []:
        if str(classification.get("classification", "")).lower() == "spark-defaults":
            properties.update({k: str(v) for k, v in (classification.get("properties") or {}).items()})
    parameters = ""
    for driver in (job_driver or {}).values():
        if isinstance(driver, Mapping):
            parameters = driver.get("sparkSubmitParameters") or driver.get("sparkSqlParameters") or ""
    words = shlex.split(parameters)
    for index, word in enumerate(words):
        if word.startswith("--conf="):
            key, _, value = word[len("--conf=") :].partition("=")
            properties[key] = value
        elif word == "--conf" and index + 1 < len(words):
            key, _, value = words[index + 1].partition("=")
            properties[key] = value
        elif word in _SUBMIT_FLAGS and index + 1 < len(words):
            properties[_SUBMIT_FLAGS[word]] = words[index + 1]
    return properties


@dataclass(frozen=True)
class PodRequests:
    """What a Spark job's driver and executor pods request from Kubernetes."""

    vcpu: Decimal
    memory_gib: Decimal
    executors: int
    executors_basis: str


def _role_requests(properties: Mapping[str, str], role: str) -> tuple[Decimal, Decimal]:
    cores = (
        properties.get(f"spark.kubernetes.{role}.request.cores")
        or properties.get(f"spark.{role}.cores")
        or "1"
    )
    memory = memory_mib(properties.get(f"spark.{role}.memory") or str(DEFAULT_MEMORY_MIB))
    if properties.get(f"spark.{role}.memoryOverhead"):
        overhead = memory_mib(properties[f"spark.{role}.memoryOverhead"])
    else:
        factor = Decimal(
            properties.get(f"spark.{role}.memoryOverheadFactor")
            or properties.get("spark.kubernetes.memoryOverheadFactor")
            or DEFAULT_OVERHEAD_FACTOR
        )
        overhead = max(MINIMUM_OVERHEAD_MIB, memory * factor)
    python_memory = properties.get(f"spark.{role}.pyspark.memory")
    total = memory + overhead + (memory_mib(python_memory) if python_memory else Decimal(0))
    return cpu_request(cores), total


def pod_requests(properties: Mapping[str, str]) -> PodRequests | None:
    """The job's requested vCPU and memory (driver + executors); None when the executor count is open."""
    if properties.get("spark.dynamicAllocation.enabled", "").strip().lower() == "true":
        maximum = properties.get("spark.dynamicAllocation.maxExecutors")
        if not maximum:
            return None
        executors, basis = int(maximum), "spark.dynamicAllocation.maxExecutors (an upper bound)"
    elif properties.get("spark.executor.instances"):
        executors, basis = int(properties["spark.executor.instances"]), "spark.executor.instances"
    else:
        executors, basis = DEFAULT_EXECUTORS, "Spark's default of 2 executors"
    driver_cpu, driver_mib = _role_requests(properties, "driver")
    executor_cpu, executor_mib = _role_requests(properties, "executor")
    return PodRequests(
        vcpu=driver_cpu + executors * executor_cpu,
        memory_gib=(driver_mib + executors * executor_mib) / 1024,
        executors=executors,
        executors_basis=basis,
    )


def eks_usages(job_run: dict[str, Any]) -> list[Usage]:
    """vCPU-seconds and GiB-seconds the job's pods requested, over the run's duration."""
    run_id = job_run.get("id", "")
    state = job_run.get("state")
    context = _clean(
        {
            "virtual_cluster_id": job_run.get("virtualClusterId"),
            "job_run_name": job_run.get("name"),
            "state": state,
            "release_label": job_run.get("releaseLabel"),
        }
    )
    if state in UNFINISHED_EKS_STATES:
        reason = f"the job run was still {state} when the task ended, so its duration was not known yet"
        return [unresolved_usage(EKS_SOURCE, run_id, reason, **context)]
    created, finished = utc(job_run.get("createdAt")), utc(job_run.get("finishedAt"))
    if created is None or finished is None:
        reason = "EMR on EKS reported no start or finish time for the job run"
        return [unresolved_usage(EKS_SOURCE, run_id, reason, **context)]
    requests = pod_requests(
        spark_properties(job_run.get("jobDriver") or {}, job_run.get("configurationOverrides"))
    )
    if requests is None:
        reason = (
            "the job uses dynamic allocation without spark.dynamicAllocation.maxExecutors, so the executors "
            "it requested are not known"
        )
        return [unresolved_usage(EKS_SOURCE, run_id, reason, **context)]
    seconds = max(_seconds(finished - created), Decimal(0)).to_integral_value(rounding=ROUND_CEILING)
    details = {
        **context,
        "duration_s": int(seconds),
        "requested_vcpu": str(requests.vcpu),
        "requested_memory_gib": str(requests.memory_gib),
        "executors": requests.executors,
        "executors_basis": requests.executors_basis,
    }
    return [
        Usage(
            source=EKS_SOURCE,
            metric=metric,
            quantity=per_second * seconds,
            unit=unit,
            resource=job_run.get("virtualClusterId"),
            external_id=run_id,
            start_time=created,
            end_time=finished,
            attributes=details,
        )
        for metric, per_second, unit in (
            ("vcpu_time", requests.vcpu, "vCPU-second"),
            ("memory_time", requests.memory_gib, "GiB-second"),
        )
    ]


@dataclass(frozen=True)
class PendingEksRun:
    virtual_cluster_id: str
    job_run_id: str
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(
            EKS_SOURCE, self.job_run_id, reason, virtual_cluster_id=self.virtual_cluster_id
        )


def resolve_eks_runs(items: list[PendingEksRun], timeout_seconds: float) -> list[Usage]:
    """DescribeJobRun per run (no batch read exists)."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[tuple[Any, ...], dict[tuple[str, str], PendingEksRun]] = {}
    for item in items:
        group = groups.setdefault((item.aws_conn_id, item.region_name), {})
        group.setdefault((item.virtual_cluster_id, item.job_run_id), item)
    usages: list[Usage] = []
    for (aws_conn_id, region_name), pending in groups.items():
        calls = AwsCalls(aws_client("emr-containers", aws_conn_id, region_name), deadline)
        runs, problems = _describe_eks_runs(calls, pending.values())
        unfinished = [
            item for key, item in pending.items() if runs.get(key, {}).get("state") in UNFINISHED_EKS_STATES
        ]
        if unfinished and pause_before_rereading(deadline):
            more, _ = _describe_eks_runs(calls, unfinished)
            runs.update(more)
        for key, item in pending.items():
            if key in runs:
                usages += eks_usages(runs[key])
            else:
                usages.append(item.unresolved(problems.get(key, "EMR on EKS did not return the job run")))
    return usages


def _describe_eks_runs(
    calls: AwsCalls, items: Iterable[PendingEksRun]
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
    runs, problems = {}, {}
    for item in items:
        key = (item.virtual_cluster_id, item.job_run_id)
        try:
            runs[key] = calls(
                "describe_job_run", id=item.job_run_id, virtualClusterId=item.virtual_cluster_id
            )["jobRun"]
        except Exception as error:
            problems[key] = f"DescribeJobRun failed: {describe_error(error)}"
    return runs, problems


# ==================================================================== watching the hooks' clients


_CONTEXT_KEY = "airflow_cost_provider"


def _before_start(instrumentation: EmrJobs, start: StartCall, params: dict, context: dict, **_: Any) -> None:
    """provide-client-params: note the task the call belongs to, and tag its job run."""
    if not instrumentation.active:
        return
    session = task_session()
    if session is None or not conf.source_enabled(start.source):
        return
    context[_CONTEXT_KEY] = {"session": session, "params": params}
    if start.tag_rules is not None and conf.tagging_on(start.source):
        guarded_step("tagging an EMR job run", _add_tags, params, session.tags, start.tag_rules)


def _add_tags(params: dict, tags: Mapping[str, str], rules: TagRules) -> None:
    params["tags"] = job_run_tags(tags, params.get("tags"), rules)


def _after_start(
    instrumentation: EmrJobs,
    start: StartCall,
    aws_conn_id: str | None,
    region_name: str | None,
    http_response: Any,
    parsed: dict,
    context: dict,
    **_: Any,
) -> None:
    """after-call: keep what the service started, for the task's end."""
    noted = context.get(_CONTEXT_KEY)
    if noted is None or not instrumentation.active:
        return
    if getattr(http_response, "status_code", 200) >= 300:
        return
    guarded_step("capturing an EMR job run", _keep_started, start, noted, aws_conn_id, region_name, parsed)


def _keep_started(
    start: StartCall, noted: dict, aws_conn_id: str | None, region_name: str | None, parsed: dict
) -> None:
    session, params = noted["session"], noted["params"]
    if start.source == EC2_SOURCE:
        for step_id in parsed.get("StepIds") or []:
            session.defer(
                resolve_emr_steps, PendingEmrStep(params["JobFlowId"], step_id, aws_conn_id, region_name)
            )
    elif start.source == SERVERLESS_SOURCE:
        session.defer(
            resolve_serverless_runs,
            PendingServerlessRun(parsed["applicationId"], parsed["jobRunId"], aws_conn_id, region_name),
        )
    else:
        session.defer(
            resolve_eks_runs,
            PendingEksRun(parsed["virtualClusterId"], parsed["id"], aws_conn_id, region_name),
        )


def _watch(instrumentation: EmrJobs, hook: Any, client: Any) -> None:
    meta = getattr(client, "meta", None)
    events = getattr(meta, "events", None)
    if events is None:
        return
    service = meta.service_model.service_id.hyphenize()
    start = START_CALLS.get(service)
    if start is None:
        return
    events.register(
        f"provide-client-params.{service}.{start.operation}",
        functools.partial(_before_start, instrumentation, start),
        unique_id=f"{_CONTEXT_KEY}-{service}-before-start",
    )
    events.register(
        f"after-call.{service}.{start.operation}",
        functools.partial(
            _after_start, instrumentation, start, getattr(hook, "aws_conn_id", None), meta.region_name
        ),
        unique_id=f"{_CONTEXT_KEY}-{service}-after-start",
    )


def _asks_for_async_client(wrapped: Any, args: tuple, kwargs: dict) -> bool:
    bound = inspect.signature(wrapped).bind_partial(*args, **kwargs)
    return bool(bound.arguments.get("deferrable"))


class EmrJobs(Instrumentation):
    name = "emr"
    sources = (EC2_SOURCE, SERVERLESS_SOURCE, EKS_SOURCE)
    modules = (HOOK_MODULE,)

    def __init__(self) -> None:
        super().__init__()
        self._shadowed: list[tuple[Any, str]] = []

    def patch(self, module: Any) -> None:
        for hook_class in (module.EmrHook, module.EmrServerlessHook, module.EmrContainerHook):
            self._wrap_inherited(hook_class, "get_client_type", self._client_wrapper)

    def _client_wrapper(self, wrapped, instance, args, kwargs):
        client = wrapped(*args, **kwargs)
        # triggers poll with async clients in the triggerer: nothing is started there
        if self.active and not guarded_step(
            "watching an EMR client", _asks_for_async_client, wrapped, args, kwargs, default=True
        ):
            guarded_step("watching an EMR client", _watch, self, instance, client)
        return client

    def _wrap_inherited(self, owner: Any, attribute: str, wrapper: Any) -> None:
        """Like `wrap`, for a method the class inherits: the wrapper is set on the class itself and
        removed again by uninstrument()."""
        if attribute in owner.__dict__:
            self.wrap(owner, attribute, wrapper)
            return
        if any(o is owner and a == attribute for o, a in self._shadowed):
            return
        inherited = inspect.getattr_static(owner, attribute)
        setattr(owner, attribute, wrapt.FunctionWrapper(inherited, wrapper))
        self._shadowed.append((owner, attribute))

    def uninstrument(self) -> None:
        with self._lock:
            super().uninstrument()
            while self._shadowed:
                owner, attribute = self._shadowed.pop()
                if attribute in owner.__dict__:
                    delattr(owner, attribute)
