"""Dataproc jobs and Serverless batches started through the Google provider's `DataprocHook`.

`DataprocSubmitJobOperator` and `DataprocCreateBatchOperator` (and user code calling the hook) start
their work with `DataprocHook.submit_job` and `DataprocHook.create_batch`. Each job or batch carries the
task's identity as labels (GCP label syntax, merged with the user's own), and is measured when the task
ends from the job or batch resource (the terminal one the operator already read while waiting is
reused, so a waited-for job costs no extra status call):

- a job on a cluster: the cluster's machines (clusters.get, once per cluster and process) x the job's
  running time, as `allocated` cost: the Dataproc fee per vCPU and the Compute Engine instances, the
  whole cluster for the job's duration (allocation share 1);
- a Serverless batch: `runtime_info.approximate_usage` (milli-DCU-seconds and shuffle storage
  GB-seconds), priced per DCU-hour and GB-month of its tier (standard or premium).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    LookupBudget,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import bigquery_labels

SOURCE = "dataproc"
SERVERLESS_SOURCE = "dataproc_serverless"
COMPUTE_SOURCE = "compute_engine"
HOOK_MODULE = "airflow.providers.google.cloud.hooks.dataproc"
# Seconds one API call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
# The share of the finalize budget look-ups may use: pricing and the ledger write need the rest.
LOOKUP_SHARE = 0.7
MAX_REMEMBERED = 256
# https://cloud.google.com/dataproc/docs/guides/creating-managing-labels: at most 64 labels
MAX_LABELS = 64
LABEL_PRIORITY = (
    "openlineage_run_id",
    "airflow_dag_id",
    "airflow_task_id",
    "airflow_run_id",
    "airflow_try_number",
    "airflow_map_index",
)
JOB_TERMINAL = ("DONE", "ERROR", "CANCELLED")
BATCH_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# Spark properties that put a batch's driver or executors on Premium compute
PREMIUM_PROPERTIES = ("spark.dataproc.driver.compute.tier", "spark.dataproc.executor.compute.tier")
# vCPUs of the shared-core machine types, whose names carry no count
SHARED_CORE_VCPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}
_VCPUS_IN_NAME = re.compile(r"^(?:[a-z0-9]+-)?(?:custom|[a-z]+(?:-[a-z]+)?)-(\d+)(?:-\d+)?(?:-ext)?$")

# (conn id, project, region, cluster name) -> the cluster as clusters.get returned it
_clusters: dict[tuple[str, str, str, str], dict[str, Any]] = {}
_clusters_lock = threading.Lock()


# ---------------------------------------------------------------------------------------- tagging


def merged_labels(user_labels: Mapping[str, str] | None, task_tags: Mapping[str, str]) -> dict[str, str]:
    """The user's labels, plus the task's (GCP label syntax) where they do not clash, within the limit."""
    merged = dict(user_labels or {})
    labels = bigquery_labels(task_tags)
    ranked = sorted(
        labels, key=lambda k: LABEL_PRIORITY.index(k) if k in LABEL_PRIORITY else len(LABEL_PRIORITY)
    )
    for key in ranked:
        if len(merged) >= MAX_LABELS:
            break
        merged.setdefault(key, labels[key])
    return merged


def tagged_resource(resource: Any, tags: Mapping[str, str]) -> Any:
    """A copy of a job or batch (dict or proto message) carrying the labels; the caller's is kept."""
    if isinstance(resource, Mapping):
        user_labels = resource.get("labels")
        if user_labels is not None and not isinstance(user_labels, Mapping):
            return resource
        return {**resource, "labels": merged_labels(user_labels, tags)}
    if hasattr(resource, "labels"):
        copy = type(resource)(resource)  # proto-plus: a new message merged from the old one
        for key, value in merged_labels(dict(resource.labels), tags).items():
            copy.labels[key] = value
        return copy
    return resource


# ------------------------------------------------------------------------------------- measuring


def machine_type_name(uri: str | None) -> str | None:
    """`n2-standard-8` from a machine type URI or name."""
    return str(uri).rstrip("/").rsplit("/", 1)[-1] if uri else None


def vcpus_of(machine_type: str) -> int | None:
    """vCPUs of a Compute Engine machine type, read from its name (n2-standard-8, custom-6-23040)."""
    if machine_type in SHARED_CORE_VCPUS:
        return SHARED_CORE_VCPUS[machine_type]
    match = _VCPUS_IN_NAME.match(machine_type)
    return int(match.group(1)) if match else None


def _field(mapping: Mapping[str, Any] | None, snake: str) -> Any:
    """A field of a resource dict in either JSON spelling (proto field name or lowerCamelCase)."""
    if not mapping:
        return None
    if snake in mapping:
        return mapping[snake]
    head, *rest = snake.split("_")
    return mapping.get(head + "".join(part.title() for part in rest))


def _timestamp(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    text = str(value).replace("Z", "+00:00")
    if "." in text:  # RFC 3339 allows nanoseconds; Python parses microseconds
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        fraction = digits.group(0) if digits else ""
        text = f"{head}.{fraction[:6].ljust(6, '0')}{tail[len(fraction) :]}"
    return dt.datetime.fromisoformat(text)


def _state(status: Mapping[str, Any] | None) -> str:
    value = _field(status, "state")
    return str(getattr(value, "name", value) or "")


def job_window(job: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """When the job started running on the cluster and when it ended."""
    status = _field(job, "status") or {}
    history = _field(job, "status_history") or []
    started = {_state(s): _timestamp(_field(s, "state_start_time")) for s in reversed(history)}
    # RUNNING: the driver runs; a job that never got there held the cluster from its first state on
    start = started.get("RUNNING") or (
        _timestamp(_field(history[0], "state_start_time")) if history else None
    )
    end = _timestamp(_field(status, "state_start_time")) if _state(status) in JOB_TERMINAL else None
    return start, end


def cluster_machines(cluster: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(role, machine type, instances) of each instance group of a cluster."""
    config = _field(cluster, "config") or {}
    groups = []
    for role, name in (
        ("master", "master_config"),
        ("worker", "worker_config"),
        ("secondary_worker", "secondary_worker_config"),
    ):
        group = _field(config, name) or {}
        count = int(_field(group, "num_instances") or 0)
        machine = machine_type_name(_field(group, "machine_type_uri"))
        if count and machine:
            groups.append((role, machine, count))
    return groups


def job_usage(job: Mapping[str, Any], cluster: Mapping[str, Any], region: str | None) -> list[Usage]:
    """The cluster's price for the job's running time, allocated to the job: the Dataproc fee (vCPU-
    seconds) and each machine type's instance-seconds, or the job unpriced with the reason."""
    reference = _field(job, "reference") or {}
    job_id = str(_field(reference, "job_id"))
    placement = _field(job, "placement") or {}
    cluster_name = str(_field(placement, "cluster_name") or _field(cluster, "cluster_name") or "")
    start, end = job_window(job)
    attributes: dict[str, Any] = {
        "cluster_name": cluster_name,
        "cluster_uuid": str(_field(cluster, "cluster_uuid") or _field(placement, "cluster_uuid") or ""),
        "job_state": _state(_field(job, "status")),
        "allocation_share": "1",
        "allocation_basis": "job_duration",
        METHOD_ATTRIBUTE: "allocated",
    }
    if region:
        attributes["region"] = region
    if start is None or end is None:
        return [unresolved_usage(SOURCE, job_id, "the job reports no start or end time", **attributes)]
    seconds = Decimal(str((end - start).total_seconds()))
    attributes["duration_seconds"] = str(seconds)
    resource = f"{_field(reference, 'project_id')}/{region}/{cluster_name}"
    usages: list[Usage] = []
    total_vcpus = 0
    unknown: list[str] = []
    by_machine: dict[str, int] = {}
    for role, machine, count in cluster_machines(cluster):
        by_machine[machine] = by_machine.get(machine, 0) + count
        vcpus = vcpus_of(machine)
        if vcpus is None:
            unknown.append(machine)
        else:
            total_vcpus += vcpus * count
        attributes[f"{role}_machines"] = f"{count} x {machine}"
    if not by_machine:
        return [unresolved_usage(SOURCE, job_id, "the cluster reports no instance groups", **attributes)]
    if unknown:
        usages.append(
            Usage(
                SOURCE,
                "cluster_time",
                seconds,
                "second",
                resource,
                job_id,
                start,
                end,
                {
                    **attributes,
                    UNPRICED_HINT_ATTRIBUTE: f"unknown vCPU count of machine type(s) {', '.join(unknown)}",
                },
            )
        )
    else:
        usages.append(
            Usage(
                SOURCE,
                "vcpu_time",
                seconds * total_vcpus,
                "vCPU-second",
                resource,
                job_id,
                start,
                end,
                {**attributes, "cluster_vcpus": total_vcpus},
            )
        )
    for machine, count in by_machine.items():
        usages.append(
            Usage(
                COMPUTE_SOURCE,
                "instance_time",
                seconds * count,
                "instance-second",
                resource,
                job_id,
                start,
                end,
                {
                    **attributes,
                    "machine_type": machine,
                    "instances": count,
                    UNPRICED_HINT_ATTRIBUTE: f"add a compute_engine/instance_time price for machine_type {machine}",
                },
            )
        )
    return usages


def batch_tier(batch: Mapping[str, Any]) -> str:
    properties = _field(_field(batch, "runtime_config") or {}, "properties") or {}
    return (
        "premium"
        if any(str(properties.get(p, "")).lower() == "premium" for p in PREMIUM_PROPERTIES)
        else "standard"
    )


def batch_usage(batch: Mapping[str, Any]) -> list[Usage] | None:
    """DCU and shuffle storage of a finished batch, from its approximate usage; None without it."""
    usage = _field(_field(batch, "runtime_info") or {}, "approximate_usage") or {}
    milli_dcu = _field(usage, "milli_dcu_seconds")
    if milli_dcu is None:
        return None
    name = str(_field(batch, "name") or "")
    batch_id = name.rsplit("/", 1)[-1]
    tier = batch_tier(batch)
    history = _field(batch, "state_history") or []
    start = next((_timestamp(_field(s, "state_start_time")) for s in history if _state(s) == "RUNNING"), None)
    start = start or _timestamp(_field(batch, "create_time"))
    end = _timestamp(_field(batch, "state_time"))
    attributes: dict[str, Any] = {
        "tier": tier,
        "batch_state": _state(batch),
        "batch_uuid": str(_field(batch, "uuid") or ""),
        METHOD_ATTRIBUTE: "list_price",
    }
    location = re.search(r"/locations/([^/]+)/", name)
    if location:
        attributes["region"] = location.group(1)
    resource = name.split("/batches/")[0] if "/batches/" in name else None
    usages = [
        Usage(
            SERVERLESS_SOURCE,
            "dcu_time",
            Decimal(str(milli_dcu)),
            "milli-DCU-second",
            resource,
            batch_id,
            start,
            end,
            attributes,
        )
    ]
    shuffle = _field(usage, "shuffle_storage_gb_seconds")
    if shuffle is not None:
        usages.append(
            Usage(
                SERVERLESS_SOURCE,
                "shuffle_storage",
                Decimal(str(shuffle)),
                "GiB-second",
                resource,
                batch_id,
                start,
                end,
                attributes,
            )
        )
    accelerator = _field(usage, "milli_accelerator_seconds")
    if accelerator not in (None, "0", 0):
        usages.append(
            Usage(
                SERVERLESS_SOURCE,
                "accelerator_time",
                Decimal(str(accelerator)),
                "ms",
                resource,
                batch_id,
                start,
                end,
                {
                    **attributes,
                    "accelerator_type": str(_field(usage, "accelerator_type") or ""),
                    UNPRICED_HINT_ATTRIBUTE: "accelerator time is not in the price book",
                },
            )
        )
    return usages


def as_dict(message: Any) -> dict[str, Any]:
    """A proto-plus message as plain JSON values (proto field names, enum names, RFC 3339 times)."""
    if isinstance(message, Mapping):
        return dict(message)
    return type(message).to_dict(message, preserving_proto_field_name=True, use_integers_for_enums=False)


# ------------------------------------------------------------------------------------ look-ups


@dataclasses.dataclass
class DataprocJob:
    """A job read when the task ends; plain values only, so it survives a deferral."""

    job_id: str
    project_id: str
    region: str
    gcp_conn_id: str
    impersonation_chain: str | list[str] | None = None
    final_job: dict[str, Any] | None = None
    source: str = SOURCE

    def unresolved(self, reason: str) -> Usage:
        usage = unresolved_usage(SOURCE, self.job_id, reason, region=self.region)
        return dataclasses.replace(usage, resource=f"{self.project_id}/{self.region}")


@dataclasses.dataclass
class DataprocBatch:
    """A Serverless batch read when the task ends; plain values only, so it survives a deferral."""

    batch_id: str
    project_id: str
    region: str
    gcp_conn_id: str
    impersonation_chain: str | list[str] | None = None
    final_batch: dict[str, Any] | None = None
    source: str = SERVERLESS_SOURCE

    def unresolved(self, reason: str) -> Usage:
        usage = unresolved_usage(SERVERLESS_SOURCE, self.batch_id, reason, region=self.region)
        return dataclasses.replace(usage, resource=f"projects/{self.project_id}/locations/{self.region}")


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def _hook(item: DataprocJob | DataprocBatch) -> Any:
    from airflow.providers.google.cloud.hooks.dataproc import DataprocHook

    return DataprocHook(gcp_conn_id=item.gcp_conn_id, impersonation_chain=item.impersonation_chain)


def _cluster(item: DataprocJob, hook: Any, cluster_name: str, budget: _Budget) -> dict[str, Any]:
    key = (item.gcp_conn_id, item.project_id, item.region, cluster_name)
    with _clusters_lock:
        cached = _clusters.get(key)
    if cached is None:
        cached = as_dict(
            hook.get_cluster(
                cluster_name=cluster_name,
                project_id=item.project_id,
                region=item.region,
                retry=None,
                timeout=budget.timeout(),
            )
        )
        with _clusters_lock:
            _clusters[key] = cached
    return cached


def clear_cluster_cache() -> None:
    with _clusters_lock:
        _clusters.clear()


def _failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def resolve_jobs(items: list[DataprocJob], timeout_seconds: float) -> list[Usage]:
    """jobs.get for each job the task did not see finish (the API has no batch get), and each cluster
    once; a job not readable in time is kept unpriced with the reason."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.project_id, i.region, i.job_id): i for i in items}.values():
        try:
            hook = _hook(item)
            job = item.final_job
            if job is None:
                job = as_dict(
                    hook.get_job(
                        job_id=item.job_id,
                        project_id=item.project_id,
                        region=item.region,
                        retry=None,
                        timeout=budget.timeout(),
                    )
                )
        except Exception as error:
            usages.append(item.unresolved(f"jobs.get failed: {_failure(error)}"))
            continue
        state = _state(_field(job, "status"))
        if state not in JOB_TERMINAL:
            usages.append(
                item.unresolved(
                    f"the job was still {state or 'unknown'} when the task ended; find it by its labels"
                )
            )
            continue
        cluster_name = str(_field(_field(job, "placement") or {}, "cluster_name") or "")
        try:
            cluster = _cluster(item, hook, cluster_name, budget)
        except Exception as error:
            usages.append(item.unresolved(f"clusters.get {cluster_name} failed: {_failure(error)}"))
            continue
        try:
            usages += job_usage(job, cluster, item.region)
        except Exception as error:  # a resource shape we cannot read: keep the job, unpriced
            usages.append(item.unresolved(f"cannot read the job's usage: {_failure(error)}"))
    return usages


def resolve_batches(items: list[DataprocBatch], timeout_seconds: float) -> list[Usage]:
    """batches.get for each batch the task did not see finish; its approximate usage is the cost."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.project_id, i.region, i.batch_id): i for i in items}.values():
        batch = item.final_batch
        if batch is None:
            try:
                batch = as_dict(
                    _hook(item).get_batch(
                        batch_id=item.batch_id,
                        project_id=item.project_id,
                        region=item.region,
                        retry=None,
                        timeout=budget.timeout(),
                    )
                )
            except Exception as error:
                usages.append(item.unresolved(f"batches.get failed: {_failure(error)}"))
                continue
        state = _state(batch)
        try:
            found = batch_usage(batch) if state in BATCH_TERMINAL else None
        except Exception as error:
            found = None
            state = f"unreadable ({_failure(error)})"
        if found is None:
            reason = (
                f"the batch was still {state or 'unknown'} when the task ended"
                if state not in BATCH_TERMINAL
                else "the batch reports no runtime_info.approximate_usage"
            )
            usages.append(item.unresolved(reason))
        else:
            usages += found
    return usages


# -------------------------------------------------------------------------------------- wrapping

_remembered: OrderedDict[tuple[str, str], DataprocJob | DataprocBatch] = OrderedDict()
_remembered_lock = threading.Lock()


def _remember(key: tuple[str, str], item: DataprocJob | DataprocBatch) -> None:
    with _remembered_lock:
        _remembered[key] = item
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.popitem(last=False)


def _plain_chain(hook: Any) -> str | list[str] | None:
    chain = getattr(hook, "impersonation_chain", None)
    if isinstance(chain, str) or (
        isinstance(chain, (list, tuple)) and all(isinstance(c, str) for c in chain)
    ):
        return chain if isinstance(chain, str) else list(chain)
    return None


def _capture_job(session: CaptureSession, hook: Any, kwargs: Mapping[str, Any], job: Any) -> None:
    item = DataprocJob(
        job_id=job.reference.job_id,
        project_id=job.reference.project_id or kwargs.get("project_id") or hook.project_id,
        region=str(kwargs.get("region")),
        gcp_conn_id=hook.gcp_conn_id,
        impersonation_chain=_plain_chain(hook),
    )
    _remember(("job", item.job_id), item)
    session.defer(resolve_jobs, item)


def _capture_batch(session: CaptureSession, hook: Any, kwargs: Mapping[str, Any], operation: Any) -> None:
    name = getattr(getattr(operation, "metadata", None), "batch", None) or ""
    batch_id = name.rsplit("/", 1)[-1] if name else kwargs.get("batch_id")
    if not batch_id:
        session.record(
            unresolved_usage(
                SERVERLESS_SOURCE, None, "create_batch returned no batch name", region=kwargs.get("region")
            )
        )
        return
    item = DataprocBatch(
        batch_id=str(batch_id),
        project_id=str(kwargs.get("project_id") or hook.project_id),
        region=str(kwargs.get("region")),
        gcp_conn_id=hook.gcp_conn_id,
        impersonation_chain=_plain_chain(hook),
    )
    _remember(("batch", item.batch_id), item)
    session.defer(resolve_batches, item)


def _keep_final(kind: str, resource_id: Any, resource: Any) -> None:
    with _remembered_lock:
        item = _remembered.get((kind, str(resource_id)))
    if item is None:
        return
    if isinstance(item, DataprocJob) and item.final_job is None:
        if _state(_field(as_dict(resource), "status")) in JOB_TERMINAL:
            item.final_job = as_dict(resource)
    elif isinstance(item, DataprocBatch) and item.final_batch is None:
        if _state(as_dict(resource)) in BATCH_TERMINAL:
            item.final_batch = as_dict(resource)


def _tagged_call(kwargs: dict[str, Any], field: str, session: CaptureSession, source: str) -> dict[str, Any]:
    if not conf.tagging_on(source) or kwargs.get(field) is None:
        return kwargs
    tagged = guarded_step("labelling a Dataproc workload", tagged_resource, kwargs[field], session.tags)
    return kwargs if tagged is None else {**kwargs, field: tagged}


def _submit_job_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or args or not conf.source_enabled(SOURCE):
        # the hook's methods take keyword arguments only (its project-id fallback requires them)
        return wrapped(*args, **kwargs)
    call = _tagged_call(kwargs, "job", session, SOURCE)
    job = wrapped(**call)
    guarded_step("capturing a Dataproc job", _capture_job, session, instance, call, job)
    return job


def _create_batch_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or args or not conf.source_enabled(SERVERLESS_SOURCE):
        return wrapped(*args, **kwargs)
    call = _tagged_call(kwargs, "batch", session, SERVERLESS_SOURCE)
    operation = wrapped(**call)
    guarded_step("capturing a Dataproc batch", _capture_batch, session, instance, call, operation)
    return operation


def _get_wrapper(kind: str, id_argument: str):
    def wrapper(wrapped, instance, args, kwargs):
        resource = wrapped(*args, **kwargs)
        if task_session() is not None and kwargs.get(id_argument):
            guarded_step("capturing a Dataproc workload", _keep_final, kind, kwargs[id_argument], resource)
        return resource

    return wrapper


class DataprocJobs(Instrumentation):
    name = "dataproc"
    sources = (SOURCE, SERVERLESS_SOURCE)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.DataprocHook, "submit_job", _submit_job_wrapper)
        self.wrap(module.DataprocHook, "create_batch", _create_batch_wrapper)
        self.wrap(module.DataprocHook, "get_job", _get_wrapper("job", "job_id"))
        self.wrap(module.DataprocHook, "get_batch", _get_wrapper("batch", "batch_id"))
