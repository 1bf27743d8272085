"""Azure Synapse pipeline runs and Spark batch jobs started through the Microsoft Azure provider's hooks.

- `AzureSynapsePipelineHook.run_pipeline` (`AzureSynapseRunPipelineOperator`, normal and deferrable):
  measured like a Data Factory pipeline run, from its activity runs (count, and each activity's
  `billingReference`), read from the workspace's development endpoint when the task ends. A pipeline run
  takes no tags and its parameters are the pipeline's own: the run id is the join key.
- `AzureSynapseHook.run_spark_job` (`AzureSynapseRunSparkBatchOperator`): the Livy batch carries the
  task's identity in its `tags` (merged with the user's own), and is measured when the task ends from
  the batch (one get) as the vCores it asked for (driver + executors) x the time it ran, priced per
  vCore-hour of the pool's node family. An estimate: a pool bills whole nodes while they are up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.azure_data_factory import (
    Budget,
    _get,
    _when,
    as_plain,
    failure,
    keep_final_run,
    paged_activity_runs,
    remember,
    resolve_pipeline_runs,
)
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

PIPELINES_SOURCE = "synapse_pipelines"
SPARK_SOURCE = "synapse_spark"
HOOK_MODULE = "airflow.providers.microsoft.azure.hooks.synapse"
SPARK_TERMINAL = ("success", "dead", "killed", "error")
# Livy tags: the service keeps at most 50 per batch; keys and values as free text of modest length.
MAX_TAGS = 50
TAG_TEXT_MAX = 256
# Synapse Spark pools run memory-optimized nodes unless the pool is hardware accelerated (GPU).
DEFAULT_NODE_FAMILY = "memory_optimized"


# ---------------------------------------------------------------------------------- pipelines


@dataclasses.dataclass
class SynapsePipelineRun:
    """A pipeline run read when the task ends; plain values only, so it survives a deferral."""

    run_id: str
    conn_id: str
    endpoint: str
    pipeline: str
    final_run: dict[str, Any] | None = None
    source: str = PIPELINES_SOURCE

    @property
    def resource(self) -> str:
        return self.endpoint

    def unresolved(self, reason: str) -> Usage:
        usage = unresolved_usage(PIPELINES_SOURCE, self.run_id, reason, pipeline=self.pipeline)
        return dataclasses.replace(usage, resource=self.endpoint)


# (conn id, endpoint) -> a hook of the task's, whose client already holds a token
_hooks: OrderedDict[Any, Any] = OrderedDict()
_pipeline_runs: OrderedDict[str, SynapsePipelineRun] = OrderedDict()


def _artifacts(item: SynapsePipelineRun) -> Any:
    hook = _hooks.get(("pipelines", item.conn_id, item.endpoint))
    if hook is None:
        from airflow.providers.microsoft.azure.hooks.synapse import AzureSynapsePipelineHook

        hook = AzureSynapsePipelineHook(
            azure_synapse_conn_id=item.conn_id, azure_synapse_workspace_dev_endpoint=item.endpoint
        )
    return hook.get_conn()


def _read_run(item: SynapsePipelineRun, budget: Budget) -> dict[str, Any]:
    return as_plain(_artifacts(item).pipeline_run.get_pipeline_run(item.run_id, **budget.call_options()))


def _read_activities(item: SynapsePipelineRun, run: Mapping[str, Any], budget: Budget) -> list[Any]:
    from azure.synapse.artifacts.models import RunFilterParameters

    client = _artifacts(item)
    return paged_activity_runs(
        lambda run_filter: client.pipeline_run.query_activity_runs(
            item.pipeline, item.run_id, run_filter, **budget.call_options()
        ),
        RunFilterParameters,
        run,
    )


def resolve_synapse_pipeline_runs(items: list[SynapsePipelineRun], timeout_seconds: float) -> list[Usage]:
    return resolve_pipeline_runs(items, timeout_seconds, _read_run, _read_activities)


def _capture_pipeline(session: CaptureSession, hook: Any, pipeline: str, response: Any) -> None:
    item = SynapsePipelineRun(
        run_id=str(response.run_id),
        conn_id=hook.conn_id,
        endpoint=str(hook.azure_synapse_workspace_dev_endpoint),
        pipeline=str(pipeline),
    )
    remember(_hooks, ("pipelines", item.conn_id, item.endpoint), hook)
    remember(_pipeline_runs, item.run_id, item)
    session.defer(resolve_synapse_pipeline_runs, item)


def _run_pipeline_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(PIPELINES_SOURCE):
        return wrapped(*args, **kwargs)
    response = wrapped(*args, **kwargs)
    pipeline = kwargs.get("pipeline_name", args[0] if args else None)
    guarded_step("capturing a Synapse pipeline run", _capture_pipeline, session, instance, pipeline, response)
    return response


def _get_pipeline_run_wrapper(wrapped, instance, args, kwargs):
    run = wrapped(*args, **kwargs)
    if task_session() is not None:
        run_id = kwargs.get("run_id", args[0] if args else None)
        guarded_step("capturing a Synapse pipeline run", keep_final_run, _pipeline_runs, run_id, run)
    return run


# -------------------------------------------------------------------------------------- Spark


def _tag_text(value: Any) -> str:
    return str(value)[:TAG_TEXT_MAX]


def merged_tags(user_tags: Mapping[str, str] | None, task_tags: Mapping[str, str]) -> dict[str, str]:
    """The user's Livy tags, plus the task's where they do not clash and while the limit allows."""
    merged = dict(user_tags or {})
    for key, value in task_tags.items():
        if len(merged) >= MAX_TAGS:
            break
        merged.setdefault(_tag_text(key), _tag_text(value))
    return merged


def tagged_payload(payload: Any, tags: Mapping[str, str]) -> Any:
    """A copy of the batch options (SDK model or dict) carrying the tags; the caller's is kept."""
    if isinstance(payload, Mapping):
        return {**payload, "tags": merged_tags(payload.get("tags"), tags)}
    copy = type(payload).deserialize(payload.serialize(keep_readonly=True))
    copy.tags = merged_tags(getattr(payload, "tags", None), tags)
    return copy


def requested_vcores(payload: Any) -> int | None:
    """Driver cores + executor cores x executors, as the batch asked for them."""
    driver = _get(payload, "driver_cores", "driverCores")
    executor = _get(payload, "executor_cores", "executorCores")
    count = _get(payload, "executor_count", "numExecutors")
    if driver is None or executor is None or count is None:
        return None
    return int(driver) + int(executor) * int(count)


def spark_window(job: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """From when the batch ran to when it ended (Livy's own timestamps, else the scheduler's)."""
    livy = _get(job, "livyInfo") or {}
    scheduler = _get(job, "schedulerInfo", "scheduler") or {}
    start = _when(_get(livy, "runningAt")) or _when(_get(scheduler, "scheduledAt"))
    end = next(
        (
            _when(_get(livy, key))
            for key in ("successAt", "deadAt", "killedAt", "recoveringAt")
            if _get(livy, key)
        ),
        None,
    ) or _when(_get(scheduler, "endedAt"))
    return start, end


@dataclasses.dataclass
class SparkBatch:
    """A Spark batch read when the task ends; plain values only, so it survives a deferral."""

    batch_id: int
    conn_id: str
    spark_pool: str
    vcores: int | None
    endpoint: str = ""
    source: str = SPARK_SOURCE

    def unresolved(self, reason: str) -> Usage:
        usage = unresolved_usage(SPARK_SOURCE, str(self.batch_id), reason, spark_pool=self.spark_pool)
        return dataclasses.replace(usage, resource=self.spark_pool)


def spark_usage(item: SparkBatch, job: Mapping[str, Any]) -> Usage:
    state = str(_get(job, "state") or "").lower()
    if state not in SPARK_TERMINAL:
        return item.unresolved(f"the batch was still {state or 'unknown'} when the task ended")
    start, end = spark_window(job)
    if start is None or end is None:
        return item.unresolved("the batch reports no running or end time")
    if item.vcores is None:
        return item.unresolved("the batch options name no driver and executor cores")
    seconds = Decimal(str((end - start).total_seconds()))
    attributes = {
        "spark_pool": item.spark_pool,
        "node_family": DEFAULT_NODE_FAMILY,
        "vcores": item.vcores,
        "duration_seconds": str(seconds),
        "batch_state": state,
        "result": str(_get(job, "result") or ""),
        METHOD_ATTRIBUTE: "list_price",
    }
    return Usage(
        SPARK_SOURCE,
        "vcore_time",
        seconds * item.vcores,
        "vCore-second",
        item.spark_pool,
        str(item.batch_id),
        start,
        end,
        attributes,
    )


def _spark_client(item: SparkBatch) -> Any:
    hook = _hooks.get(("spark", item.conn_id, item.spark_pool))
    if hook is None:
        from airflow.providers.microsoft.azure.hooks.synapse import AzureSynapseHook

        hook = AzureSynapseHook(azure_synapse_conn_id=item.conn_id, spark_pool=item.spark_pool)
    return hook.get_conn()


def resolve_spark_batches(items: list[SparkBatch], timeout_seconds: float) -> list[Usage]:
    """One get per batch (Livy has no batch get); a batch not readable in time is kept unpriced."""
    budget = Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.conn_id, i.spark_pool, i.batch_id): i for i in items}.values():
        try:
            job = as_plain(
                _spark_client(item).spark_batch.get_spark_batch_job(
                    item.batch_id, detailed=True, **budget.call_options()
                )
            )
        except Exception as error:
            usages.append(item.unresolved(f"Spark batch look-up failed: {failure(error)}"))
            continue
        try:
            usages.append(spark_usage(item, job))
        except Exception as error:
            usages.append(item.unresolved(f"cannot read the batch: {failure(error)}"))
    return usages


def _capture_spark(session: CaptureSession, hook: Any, payload: Any, job: Any) -> None:
    item = SparkBatch(
        batch_id=int(job.id),
        conn_id=hook.conn_id,
        spark_pool=str(hook.spark_pool),
        vcores=requested_vcores(payload),
    )
    remember(_hooks, ("spark", item.conn_id, item.spark_pool), hook)
    session.defer(resolve_spark_batches, item)


def _run_spark_job_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SPARK_SOURCE):
        return wrapped(*args, **kwargs)
    payload = kwargs.get("payload", args[0] if args else None)
    if payload is None:
        return wrapped(*args, **kwargs)
    if conf.tagging_on(SPARK_SOURCE):
        tagged = guarded_step("tagging a Synapse Spark batch", tagged_payload, payload, session.tags)
        if tagged is not None:
            payload = tagged
    job = wrapped(payload=payload)
    guarded_step("capturing a Synapse Spark batch", _capture_spark, session, instance, payload, job)
    return job


class SynapseJobs(Instrumentation):
    name = "synapse"
    sources = (PIPELINES_SOURCE, SPARK_SOURCE)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.AzureSynapsePipelineHook, "run_pipeline", _run_pipeline_wrapper)
        self.wrap(module.AzureSynapsePipelineHook, "get_pipeline_run", _get_pipeline_run_wrapper)
        self.wrap(module.AzureSynapseHook, "run_spark_job", _run_spark_job_wrapper)
