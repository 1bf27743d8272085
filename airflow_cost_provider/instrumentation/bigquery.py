"""BigQuery jobs started through the Google provider's `BigQueryHook.insert_job`.

`BigQueryInsertJobOperator`, the transfer operators and `BigQueryHook().insert_job(...)` in user code
all start their jobs there, and so does the hook's DB-API cursor. Each job is labelled with the task's
identity (job labels, and a sqlcommenter comment in GoogleSQL query text), and measured from the job's
own statistics: `totalBytesBilled` for on-demand projects, `totalSlotMs` for projects on an edition
(`[cost_provider] bigquery_pricing`). A job already finished when `insert_job` returns is measured from
the job it returned; any other is looked up once, with jobs.get, when the task ends.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.safety import report_failure, suppress
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import add_sql_comment, bigquery_labels, format_comment

SOURCE = "bigquery"
HOOK_MODULE = "airflow.providers.google.cloud.hooks.bigquery"

# https://cloud.google.com/bigquery/docs/labels-intro#requirements: at most 64 labels per job.
MAX_LABELS = 64
# When the user's own labels leave little room, the labels that identify the try best go first: the
# OpenLineage run id alone joins a job to Marquez and to the ledger.
LABEL_PRIORITY = (
    "openlineage_run_id",
    "airflow_dag_id",
    "airflow_task_id",
    "airflow_run_id",
    "airflow_try_number",
    "airflow_map_index",
)
# Parallel jobs.get calls at task end, for tasks that start many jobs (the API has no batch get).
MAX_LOOKUP_THREADS = 8
JOB_TYPES = ("query", "load", "copy", "extract")


# ---------------------------------------------------------------------------------------- tagging


def merged_labels(user_labels: Mapping[str, str], task_labels: Mapping[str, str]) -> dict[str, str]:
    """The user's labels, plus the task's where they do not clash and while BigQuery's limit allows."""
    merged = dict(user_labels)
    ranked = sorted(
        task_labels, key=lambda k: LABEL_PRIORITY.index(k) if k in LABEL_PRIORITY else len(LABEL_PRIORITY)
    )
    for key in ranked:
        if len(merged) >= MAX_LABELS:
            break
        merged.setdefault(key, task_labels[key])
    return merged


def is_google_sql(query_configuration: Mapping[str, Any]) -> bool:
    """Whether the query runs as GoogleSQL. The jobs API defaults to legacy SQL, whose comment syntax
    we do not rely on: only GoogleSQL text gets the comment."""
    text = str(query_configuration.get("query") or "").lstrip().lower()
    if text.startswith("#legacysql"):
        return False
    if text.startswith("#standardsql"):
        return True
    return str(query_configuration.get("useLegacySql", True)).lower() == "false"


def tagged_configuration(configuration: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a job configuration carrying the task's identity; the caller's dict is left as it was."""
    tagged = dict(configuration)
    user_labels = configuration.get("labels")
    if user_labels is None or isinstance(user_labels, Mapping):
        tagged["labels"] = merged_labels(user_labels or {}, bigquery_labels(tags))
    query = configuration.get("query")
    if isinstance(query, Mapping) and isinstance(query.get("query"), str) and is_google_sql(query):
        # the hook's own DB-API path may have commented this statement already
        if format_comment(tags) not in query["query"]:
            tagged["query"] = {**query, "query": add_sql_comment(query["query"], tags)}
    return tagged


# ------------------------------------------------------------------------------------- measuring


def _number(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _timestamp(milliseconds: Any) -> dt.datetime | None:
    number = _number(milliseconds)
    if number is None:
        return None
    return dt.datetime.fromtimestamp(float(number) / 1000, tz=dt.timezone.utc)


def _job_type(configuration: Mapping[str, Any]) -> str:
    declared = configuration.get("jobType")
    if declared:
        return str(declared).upper()
    return next((kind.upper() for kind in JOB_TYPES if kind in configuration), "UNKNOWN")


def job_resource_name(project: str | None, location: str | None) -> str | None:
    if project and location:
        return f"{project}:{location}"
    return project


def job_usage(job: Mapping[str, Any], pricing_model: str) -> Usage | None:
    """The usage of a finished job, from its REST resource; None while it runs or when its statistics
    lack the number its pricing model needs.

    On-demand projects pay per byte billed; projects on an edition per slot-ms. A job that read
    nothing (a cache hit, a metadata-only statement, a job that failed first) costs 0; a failed job
    keeps what BigQuery reports for it. Load, copy and extract jobs run free on the shared slot pool
    unless a reservation ran them.
    """
    status = job.get("status") or {}
    if status.get("state") != "DONE":
        return None
    statistics = job.get("statistics") or {}
    query = statistics.get("query") or {}
    reference = job.get("jobReference") or {}
    configuration = job.get("configuration") or {}
    job_type = _job_type(configuration)
    error = status.get("errorResult")
    cache_hit = bool(query.get("cacheHit"))
    reservation = statistics.get("reservation_id")
    on_shared_pool = job_type != "QUERY" and not reservation
    slot_ms = _number(statistics.get("totalSlotMs", query.get("totalSlotMs")))
    bytes_billed = _number(query.get("totalBytesBilled"))
    processed = _number(query.get("totalBytesProcessed", statistics.get("totalBytesProcessed")))

    if pricing_model == "on_demand":
        metric, unit, quantity = "bytes_billed", "byte", bytes_billed
        attributes: dict[str, Any] = {"pricing_model": "on_demand"}
        if on_shared_pool:
            quantity = Decimal(0)
    else:
        metric, unit, quantity = "slot_time", "slot-ms", slot_ms
        attributes = {"edition": pricing_model}
        if on_shared_pool:
            quantity = Decimal(0)
    if quantity is None:
        # BigQuery leaves out the number when nothing was read; otherwise it is not known yet
        if not (cache_hit or error or processed == 0):
            return None
        quantity = Decimal(0)

    attributes[METHOD_ATTRIBUTE] = "list_price"
    attributes["job_type"] = job_type
    if reference.get("location"):
        attributes["location"] = reference["location"]
    if job_type == "QUERY":
        attributes["cache_hit"] = cache_hit
        if query.get("statementType"):
            attributes["statement_type"] = query["statementType"]
    if processed is not None:
        attributes["total_bytes_processed"] = int(processed)
    if metric == "bytes_billed" and slot_ms is not None:
        attributes["total_slot_ms"] = int(slot_ms)
    if metric == "slot_time" and bytes_billed is not None:
        attributes["total_bytes_billed"] = int(bytes_billed)
    if reservation:
        attributes["reservation_id"] = str(reservation)
    if on_shared_pool:
        attributes["shared_slot_pool"] = True
    if error:
        attributes["failed"] = True
        attributes["error_reason"] = str(error.get("reason", "unknown"))
    return Usage(
        source=SOURCE,
        metric=metric,
        quantity=quantity,
        unit=unit,
        resource=job_resource_name(reference.get("projectId"), reference.get("location")),
        external_id=reference.get("jobId"),
        start_time=_timestamp(statistics.get("startTime") or statistics.get("creationTime")),
        end_time=_timestamp(statistics.get("endTime")),
        attributes=attributes,
    )


@dataclasses.dataclass(frozen=True)
class PendingJob:
    """A job whose statistics are read when the task ends. Plain values only, so it can be kept
    across a deferral; the hook that started it is found again by its connection."""

    job_id: str
    project: str | None
    location: str | None
    gcp_conn_id: str = "google_cloud_default"
    impersonation_chain: str | list[str] | None = None
    # insert_job raised: the job may never have been created
    insert_failed: bool = False

    @classmethod
    def of(
        cls, hook: Any, job_id: str, project: str | None, location: str | None, **kwargs: Any
    ) -> PendingJob:
        chain = getattr(hook, "impersonation_chain", None)
        item = cls(
            job_id=job_id,
            project=project,
            location=location,
            gcp_conn_id=str(getattr(hook, "gcp_conn_id", None) or cls.gcp_conn_id),
            impersonation_chain=list(chain) if isinstance(chain, (list, tuple)) else chain,
            **kwargs,
        )
        _hooks.setdefault(item.connection, hook)
        return item

    @property
    def connection(self) -> tuple[str, tuple[str, ...] | str | None]:
        chain = self.impersonation_chain
        return self.gcp_conn_id, tuple(chain) if isinstance(chain, list) else chain

    def unresolved(self, reason: str) -> Usage:
        attributes = {"location": self.location} if self.location else {}
        usage = unresolved_usage(SOURCE, self.job_id, reason, **attributes)
        return dataclasses.replace(usage, resource=job_resource_name(self.project, self.location))


# The hooks that started jobs in this process, by connection: their credentials are already loaded,
# so the look-ups at task end need no connection fetch.
_hooks: dict[tuple[str, tuple[str, ...] | str | None], Any] = {}


def _hook_for(item: PendingJob) -> Any:
    hook = _hooks.get(item.connection)
    if hook is None:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        hook = BigQueryHook(
            gcp_conn_id=item.gcp_conn_id, impersonation_chain=item.impersonation_chain, use_legacy_sql=False
        )
        _hooks[item.connection] = hook
    return hook


def resolve_jobs(items: list[PendingJob], timeout_seconds: float) -> list[Usage]:
    """jobs.get for each job the task left running (BigQuery has no batch get), in parallel, within the
    time budget. A job not answered in time is kept unpriced with the reason."""
    deadline = time.monotonic() + timeout_seconds
    unique = list({(item.project, item.location, item.job_id): item for item in items}.values())
    if len(unique) == 1:
        return _look_up(unique[0], deadline)
    usages: list[Usage] = []
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(MAX_LOOKUP_THREADS, len(unique)), thread_name_prefix="cost-provider-bigquery"
    )
    try:
        futures = {
            pool.submit(contextvars.copy_context().run, _look_up, item, deadline): item for item in unique
        }
        done, _ = concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future, item in futures.items():
            if future in done:
                usages += future.result()
            else:
                usages.append(
                    item.unresolved(f"BigQuery did not answer jobs.get within {timeout_seconds:.1f}s")
                )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return usages


def _look_up(item: PendingJob, deadline: float) -> list[Usage]:
    """One jobs.get, made as the provider's own work; any failure keeps the job, unpriced."""
    from google.api_core.exceptions import NotFound
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    with suppress():
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [item.unresolved("no time left for jobs.get within finalize_timeout")]
            client = _hook_for(item).get_client(project_id=item.project, location=item.location)
            job = client.get_job(
                item.job_id,
                project=item.project,
                location=item.location,
                retry=DEFAULT_RETRY.with_timeout(remaining),
                timeout=remaining,
            )
            resource = job_resource(job)
        except NotFound:
            if item.insert_failed:
                return []  # BigQuery refused the job before creating it: nothing ran, nothing to bill
            return [item.unresolved(f"BigQuery has no job {item.job_id} in {item.project}, {item.location}")]
        except Exception as error:
            report_failure("reading BigQuery job statistics", error, once=True)
            return [item.unresolved(f"jobs.get failed: {type(error).__name__}: {error}")]
    try:
        usage = job_usage(resource, conf.bigquery_model(item.project))
    except Exception as error:
        report_failure("measuring a BigQuery job", error, once=True)
        return [item.unresolved(f"reading the job's statistics failed: {type(error).__name__}: {error}")]
    if usage is not None:
        return [usage]
    state = (resource.get("status") or {}).get("state") or "unknown"
    if state != "DONE":
        return [
            item.unresolved(
                f"the job was still {state} when the task ended: BigQuery bills it when it finishes; "
                "look it up by job id in INFORMATION_SCHEMA.JOBS"
            )
        ]
    return [item.unresolved("BigQuery reported no totalBytesBilled or totalSlotMs for the finished job")]


# -------------------------------------------------------------------------------------- wrapping


def _prepare_call(session: CaptureSession, hook: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments with the job tagged, and its id chosen the way the hook itself
    would, so a job whose insert_job raises can still be found."""
    configuration = kwargs.get("configuration")
    if not isinstance(configuration, Mapping):
        return kwargs
    call = dict(kwargs)
    if conf.tagging_on(SOURCE):
        configuration = call["configuration"] = tagged_configuration(configuration, session.tags)
    make_job_id = getattr(hook, "_custom_job_id", None)
    if not call.get("job_id") and callable(make_job_id):
        call["job_id"] = make_job_id(configuration)
    return call


def _usage_in_project(resource: Mapping[str, Any], project: str | None) -> Usage | None:
    return job_usage(resource, conf.bigquery_model(project))


def job_resource(job: Any) -> Mapping[str, Any]:
    """The job's REST resource as the API last returned it (read, never changed). The public
    `to_api_repr()` of a query job keeps only its reference and configuration."""
    properties = getattr(job, "_properties", None)
    return properties if isinstance(properties, Mapping) else job.to_api_repr()


def _capture(session: CaptureSession, hook: Any, job: Any) -> None:
    resource = job_resource(job)
    if (resource.get("configuration") or {}).get("dryRun"):
        return  # a dry run only estimates: BigQuery does not run or bill it
    item = PendingJob.of(hook, job.job_id, job.project, job.location)
    usage = guarded_step("measuring a BigQuery job", _usage_in_project, resource, job.project)
    if usage is None:
        session.defer(resolve_jobs, item)
    else:
        session.record(usage)


def _capture_failed_insert(
    session: CaptureSession, hook: Any, kwargs: dict[str, Any], error: BaseException
) -> None:
    from google.api_core.exceptions import Conflict

    if isinstance(error, Conflict):
        return  # the job already existed: it belongs to whoever started it
    if (kwargs.get("configuration") or {}).get("dryRun"):
        return
    failed_job = getattr(error, "query_job", None)  # a query that failed while the hook waited for it
    if failed_job is not None:
        item = PendingJob.of(hook, failed_job.job_id, failed_job.project, failed_job.location)
    elif kwargs.get("job_id"):
        project = kwargs.get("project_id") or hook.project_id
        location = kwargs.get("location") or hook.location
        item = PendingJob.of(hook, kwargs["job_id"], project, location, insert_failed=True)
    else:
        return
    session.defer(resolve_jobs, item)


def _insert_job_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or args or not conf.source_enabled(SOURCE):
        # insert_job takes keyword arguments only: the hook itself rejects positional ones
        return wrapped(*args, **kwargs)
    call_kwargs = guarded_step(
        "tagging a BigQuery job", _prepare_call, session, instance, kwargs, default=kwargs
    )
    try:
        job = wrapped(**call_kwargs)
    except BaseException as error:
        guarded_step(
            "capturing a BigQuery job", _capture_failed_insert, session, instance, call_kwargs, error
        )
        raise
    guarded_step("capturing a BigQuery job", _capture, session, instance, job)
    return job


class BigQuerySqlEngine(SqlEngine):
    """BigQueryHook's DB-API cursor runs each statement as a job through insert_job, which tags and
    measures it: the statement wrapper leaves both to it rather than count the statement twice."""

    source = SOURCE

    def tag(self, sql: str, session: CaptureSession, hook: Any) -> str:
        return sql

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        return None


SQL_ENGINE = BigQuerySqlEngine()


class BigQueryJobs(Instrumentation):
    name = "bigquery"
    sources = (SOURCE,)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.BigQueryHook, "insert_job", _insert_job_wrapper)
