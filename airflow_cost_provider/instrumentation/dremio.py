"""Dremio queries sent through the REST API with the HTTP provider's `HttpHook` (and so `HttpOperator`).

Airflow has no Dremio provider: DAGs reach Dremio through its REST API, `POST /api/v3/sql` (Dremio
Software) or `POST /v0/projects/{project_id}/sql` (Dremio Cloud), which answers with a job id, then
poll `GET .../job/{id}` until the job is COMPLETED, FAILED or CANCELED. Both calls go through
`HttpHook.run`, which this module wraps:

- the `sql` of a submitted query carries the task's identity as a sqlcommenter comment, which Dremio
  keeps with the job (`sys.jobs_recent.query`, `sys.project.history.jobs.query`);
- the job id the server returns is kept, and the terminal job the task itself reads while polling is
  kept with it, so a waited-for job costs no extra call;
- when the task ends, each job the task did not see finish is read once with `GET .../job/{id}` on the
  same connection, within the finalize budget.

Measured: the time the job held its engine, from `resourceSchedulingEndedAt` (the engine slot was
granted; `startedAt` when absent) to `endedAt`, with the job's queue (Software) or engine (Cloud),
state, type and row count. Priced in DCUs, Dremio's unit of engine time: an engine bills
`uptime x DCUs per hour of its size`, so a job is `its engine time x that rate` (method `runtime_rate`:
a share of the engine's uptime, not its idle time). The rate comes from the connection's
`[cost_provider] connection_pricing` attributes: `engine_size` (a Dremio Cloud size, looked up in
the price book's `dremio_cloud_dcu_per_hour` factors) or `dcu_per_hour` (Dremio Software: 1 DCU is
1 vCPU-hour, so the engine's executor cores). Without either, the engine time is kept unpriced with
the reason.

A DB-API hook of connection type `dremio` (Arrow Flight or ODBC under `DbApiHook`) goes through the
common SQL instrumentation: its statements get the same comment, and `SQL_ENGINE` prices the time the
client waited for each the same way (no job id reaches such a client).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    LookupBudget,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.pricing.money import EXACT
from airflow_cost_provider.tagging import append_comment

SOURCE = "dremio"
HOOK_MODULE = "airflow.providers.http.hooks.http"
DCU_FACTOR_TABLE = "dremio_cloud_dcu_per_hour"
# Seconds one job look-up may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
LOOKUP_SHARE = 0.7
MAX_REMEMBERED_JOBS = 256
DCU_QUANTUM = Decimal("1e-12")
MS_PER_HOUR = Decimal(3_600_000)
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")

# `api/v3/sql` or `v0/projects/{id}/sql`, after whatever path prefix the connection's host holds
_SQL_PATH = re.compile(r"(?:^|/)(?:api/v3|v0/projects/(?P<project>[^/]+))/sql/?$")
_JOB_PATH = re.compile(r"(?:^|/)(?:api/v3|v0/projects/(?P<project>[^/]+))/job/(?P<job>[^/]+)/?$")

# Authorization headers a task passed to `HttpHook.run` itself, per (connection, job id): the look-up
# needs them when the connection does not hold them. Kept in this process only, never on the item.
_auth_headers: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()
# (connection, job id) -> the pending item, so the terminal job the task reads is kept on it
_items_by_job: OrderedDict[tuple[str, str], DremioJob] = OrderedDict()
_lock = threading.Lock()


# ---------------------------------------------------------------------------------------- tagging


def _path_of(endpoint: Any) -> str:
    return str(endpoint or "").split("?", 1)[0].split("#", 1)[0].rstrip("/")


def sql_endpoint(endpoint: Any) -> tuple[bool, str | None]:
    """(is the endpoint Dremio's SQL API, the Dremio Cloud project id in it)."""
    match = _SQL_PATH.search(_path_of(endpoint))
    return (match is not None, match.group("project") if match else None)


def job_endpoint(endpoint: Any) -> tuple[str | None, str | None]:
    """(job id, project id) of a `GET .../job/{id}` endpoint; (None, None) for any other."""
    match = _JOB_PATH.search(_path_of(endpoint))
    return (match.group("job"), match.group("project")) if match else (None, None)


def tagged_body(body: Any, comment: str) -> Any:
    """The SQL request body with the comment appended to its `sql`; the same type as given (a JSON
    text or a dict), the caller's object left unchanged. Anything else is returned as it is."""
    if isinstance(body, (str, bytes)):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body
        if not isinstance(parsed, dict) or not isinstance(parsed.get("sql"), str):
            return body
        text = json.dumps({**parsed, "sql": append_comment(parsed["sql"], comment)})
        return text.encode() if isinstance(body, bytes) else text
    if isinstance(body, Mapping) and isinstance(body.get("sql"), str):
        return {**body, "sql": append_comment(body["sql"], comment)}
    return body


# ------------------------------------------------------------------------------------- measuring


def _when(value: Any) -> dt.datetime | None:
    """An ISO 8601 time as the job API writes it ("2022-12-13T18:34:14.069Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _ms_between(start: dt.datetime, end: dt.datetime) -> Decimal:
    delta = end - start
    return (
        Decimal(delta.days * 86_400_000) + Decimal(delta.seconds * 1000) + Decimal(delta.microseconds) / 1000
    )


def dcus(dcu_per_hour: Decimal, duration_ms: Decimal) -> Decimal:
    return EXACT.divide(EXACT.multiply(dcu_per_hour, duration_ms), MS_PER_HOUR).quantize(
        DCU_QUANTUM, context=EXACT
    )


def _factor(size: str) -> Decimal | None:
    from airflow_cost_provider import tracker

    return tracker.price_book().factor(DCU_FACTOR_TABLE, size)


def dcu_rate(pricing: Mapping[str, str]) -> tuple[Decimal | None, str]:
    """The engine's DCUs per hour from the connection's pricing attributes, and why not when None."""
    if pricing.get("dcu_per_hour"):
        try:
            rate = Decimal(pricing["dcu_per_hour"])
        except InvalidOperation:
            return None, f"dcu_per_hour {pricing['dcu_per_hour']!r} is not a number"
        if rate.is_finite() and rate >= 0:
            return rate, ""
        return None, f"dcu_per_hour {pricing['dcu_per_hour']!r} is not a number of DCUs per hour"
    size = pricing.get("engine_size")
    if size:
        rate = _factor(size)
        if rate is None:
            return (
                None,
                f"no DCU rate for engine_size {size!r} in the price book's factors.{DCU_FACTOR_TABLE}",
            )
        return rate, ""
    return None, ""


@dataclasses.dataclass
class DremioJob:
    """A job the task submitted, read when the task ends; plain values only, so it survives a
    deferral. `final_job` is the terminal job as the task itself last read it, when it did."""

    job_id: str
    conn_id: str
    project_id: str | None = None
    submitted_at: str | None = None
    final_job: dict[str, Any] | None = None
    source: str = SOURCE

    @property
    def deployment(self) -> str:
        return "cloud" if self.project_id else "software"

    @property
    def job_path(self) -> str:
        job = quote(self.job_id, safe="")
        if self.project_id:
            return f"v0/projects/{quote(self.project_id, safe='')}/job/{job}"
        return f"api/v3/job/{job}"

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.job_id, reason, conn_id=self.conn_id, deployment=self.deployment)


def is_terminal(job: Mapping[str, Any]) -> bool:
    return str(job.get("jobState") or "") in TERMINAL_STATES


def job_usage(item: DremioJob, job: Mapping[str, Any], pricing: Mapping[str, str]) -> Usage:
    """The engine time of one terminal job, in DCUs when the engine's rate is known."""
    state = str(job.get("jobState") or "")
    if state not in TERMINAL_STATES:
        return item.unresolved(
            f"the job was still {state or 'in an unknown state'} when the task ended: look it up by job id in "
            "sys.jobs_recent (Dremio Software) or sys.project.history.jobs (Dremio Cloud)"
        )
    start = _when(job.get("resourceSchedulingEndedAt")) or _when(job.get("startedAt"))
    end = _when(job.get("endedAt"))
    attributes: dict[str, Any] = {
        **pricing,
        "conn_id": item.conn_id,
        "deployment": item.deployment,
        "job_state": state,
    }
    if item.project_id:
        attributes["project_id"] = item.project_id
    for field, key in (("queryType", "query_type"), ("queueName", "queue_name"), ("queueId", "queue_id")):
        if job.get(field):
            attributes[key] = str(job[field])
    if isinstance(job.get("rowCount"), int):
        attributes["row_count"] = job["rowCount"]
    if state != "COMPLETED":
        attributes["failed"] = True
    relationships = (job.get("acceleration") or {}).get("reflectionRelationships") or []
    if any(isinstance(r, Mapping) and r.get("relationship") == "CHOSEN" for r in relationships):
        attributes["accelerated"] = True
    if start is None or end is None or end < start:
        if state != "COMPLETED" and start is None:
            # a job that failed in planning never held the engine
            attributes[UNPRICED_HINT_ATTRIBUTE] = f"the job {state} before it reached an engine"
        else:
            attributes[UNPRICED_HINT_ATTRIBUTE] = "the job reports no start and end time"
        return Usage(
            SOURCE, "queries", Decimal(1), "query", item.conn_id, item.job_id, start, end, attributes
        )
    duration = _ms_between(start, end)
    attributes["duration_ms"] = str(duration)
    resource = str(job.get("queueName") or item.conn_id)
    rate, problem = dcu_rate(pricing)
    attributes[METHOD_ATTRIBUTE] = "runtime_rate"
    if rate is None:
        attributes[UNPRICED_HINT_ATTRIBUTE] = problem or (
            f"connection {item.conn_id!r} names no engine size: set [cost_provider] connection_pricing "
            f'{{"{item.conn_id}": {{"engine_size": "Medium"}}}} (Dremio Cloud) or '
            f'{{"{item.conn_id}": {{"dcu_per_hour": "<executor cores>"}}}} (Dremio Software), '
            "or add a dremio/engine_time price per hour"
        )
        return Usage(SOURCE, "engine_time", duration, "ms", resource, item.job_id, start, end, attributes)
    attributes["dcu_per_hour"] = str(rate)
    attributes[UNPRICED_HINT_ATTRIBUTE] = (
        "Dremio Cloud's price per DCU is your organization's contract or pay-as-you-go rate: "
        "add it as a dremio/dcu price (unit DCU) to your price book"
    )
    return Usage(SOURCE, "dcu", dcus(rate, duration), "DCU", resource, item.job_id, start, end, attributes)


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def fetch_job(item: DremioJob, timeout: float) -> dict[str, Any]:
    """`GET .../job/{id}` with the task's connection (its host, extra headers and login) and the
    Authorization header the task sent with the query, if it sent one."""
    from airflow.providers.http.hooks.http import HttpHook

    with _lock:
        headers = dict(_auth_headers.get((item.conn_id, item.job_id), {}))
    hook = HttpHook(method="GET", http_conn_id=item.conn_id)
    response = hook.run(
        item.job_path, headers=headers or None, extra_options={"timeout": timeout, "check_response": True}
    )
    job = response.json()
    if not isinstance(job, dict):
        raise ValueError(f"the job API answered {type(job).__name__}, not a job object")
    return job


def resolve_jobs(items: list[DremioJob], timeout_seconds: float) -> list[Usage]:
    """One look-up per job the task did not see finish (the job API has no batch get), then each
    job's usage; a job not readable in time is kept unpriced with the reason."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.conn_id, i.job_id): i for i in items}.values():
        job = item.final_job
        if job is None:
            try:
                job = fetch_job(item, budget.timeout())
            except Exception as error:
                usages.append(item.unresolved(f"GET {item.job_path} failed: {type(error).__name__}: {error}"))
                continue
        try:
            usages.append(job_usage(item, job, conf.pricing_for_connection(item.conn_id)))
        except Exception as error:  # a job shape or price book we cannot read: keep the job, unpriced
            usages.append(item.unresolved(f"cannot read its engine time: {type(error).__name__}: {error}"))
    with _lock:
        for item in items:
            _auth_headers.pop((item.conn_id, item.job_id), None)
    return usages


# -------------------------------------------------------------------------------------- wrapping


def _remember(mapping: OrderedDict, key: Any, value: Any) -> None:
    mapping[key] = value
    while len(mapping) > MAX_REMEMBERED_JOBS:
        mapping.popitem(last=False)


def _authorization(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        return {}
    return {k: str(v) for k, v in headers.items() if str(k).lower() == "authorization"}


def _capture(session: CaptureSession, hook: Any, response: Any, project_id: str | None, headers: Any) -> None:
    if getattr(response, "status_code", 200) >= 400:
        return  # the server did not accept the query (the task asked not to check the response)
    body = response.json()
    job_id = body.get("id") if isinstance(body, Mapping) else None
    conn_id = str(hook.http_conn_id)
    if not job_id:
        session.record(
            unresolved_usage(SOURCE, None, "the SQL API answered without a job id", conn_id=conn_id)
        )
        return
    item = DremioJob(
        job_id=str(job_id),
        conn_id=conn_id,
        project_id=project_id,
        submitted_at=dt.datetime.now(dt.timezone.utc).isoformat(),
    )
    with _lock:
        _remember(_items_by_job, (conn_id, item.job_id), item)
        if auth := _authorization(headers):
            _remember(_auth_headers, (conn_id, item.job_id), auth)
    session.defer(resolve_jobs, item)


def _keep_final_job(hook: Any, job_id: str, response: Any) -> None:
    if getattr(response, "status_code", 200) >= 400:
        return
    job = response.json()
    if not isinstance(job, Mapping) or not is_terminal(job):
        return
    with _lock:
        item = _items_by_job.get((str(hook.http_conn_id), job_id))
    if item is not None and item.final_job is None:
        item.final_job = dict(job)


def _argument(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    return kwargs[name] if name in kwargs else (args[position] if len(args) > position else None)


def _tag_call(session: CaptureSession, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments with the SQL body tagged, in whichever argument carried it."""
    if isinstance(kwargs.get("json"), Mapping):
        return args, {**kwargs, "json": tagged_body(kwargs["json"], session.sql_comment)}
    if "data" in kwargs:
        return args, {**kwargs, "data": tagged_body(kwargs["data"], session.sql_comment)}
    if len(args) > 1:
        return (args[0], tagged_body(args[1], session.sql_comment), *args[2:]), kwargs
    return args, kwargs


def _run_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    method = str(getattr(instance, "method", "")).upper()
    endpoint = _argument(args, kwargs, 0, "endpoint")
    if method == "POST":
        is_sql, project_id = sql_endpoint(endpoint)
        if not is_sql:
            return wrapped(*args, **kwargs)
        call_args, call_kwargs = args, kwargs
        if conf.tagging_on(SOURCE):
            call_args, call_kwargs = guarded_step(
                "tagging a Dremio query", _tag_call, session, args, kwargs, default=(args, kwargs)
            )
        response = wrapped(*call_args, **call_kwargs)
        headers = _argument(args, kwargs, 2, "headers")
        guarded_step("capturing a Dremio job", _capture, session, instance, response, project_id, headers)
        return response
    if method == "GET":
        job_id, _project = job_endpoint(endpoint)
        response = wrapped(*args, **kwargs)
        if job_id:
            guarded_step("capturing a Dremio job", _keep_final_job, instance, job_id, response)
        return response
    return wrapped(*args, **kwargs)


# ----------------------------------------------------------------------------- DB-API statements


def statement_usage(statement: Statement, pricing: Mapping[str, str]) -> Usage:
    """A statement a DB-API hook of conn_type `dremio` ran (Arrow Flight, ODBC): no job id reaches the
    client, so its engine time is the time the client waited for it, in DCUs when the rate is known."""
    duration = (statement.elapsed * 1000).quantize(Decimal("0.001"))
    rate, problem = dcu_rate(pricing)
    deployment = pricing.get("deployment") or ("cloud" if pricing.get("engine_size") else "software")
    attributes: dict[str, Any] = {
        **pricing,
        "conn_id": statement.conn_id,
        "deployment": deployment,
        "duration_ms": str(duration),
        "timed_by": "client",
        METHOD_ATTRIBUTE: "runtime_rate",
    }
    if (rows := statement.row_count()) is not None:
        attributes["row_count"] = rows
    if statement.failed:
        attributes["failed"] = True
    start, end = statement.start_time, statement.end_time
    if rate is None:
        attributes[UNPRICED_HINT_ATTRIBUTE] = problem or (
            f"connection {statement.conn_id!r} names no engine size: set [cost_provider] connection_pricing "
            f'{{"{statement.conn_id}": {{"engine_size": "Medium"}}}} or {{"dcu_per_hour": "<executor cores>"}}'
        )
        return Usage(SOURCE, "engine_time", duration, "ms", statement.conn_id, None, start, end, attributes)
    attributes["dcu_per_hour"] = str(rate)
    attributes[UNPRICED_HINT_ATTRIBUTE] = f"add a dremio/dcu price (unit DCU) for deployment {deployment}"
    return Usage(SOURCE, "dcu", dcus(rate, duration), "DCU", statement.conn_id, None, start, end, attributes)


class DremioSqlEngine(SqlEngine):
    source = SOURCE

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        session.record(statement_usage(statement, conf.pricing_for_connection(statement.conn_id)))


SQL_ENGINE = DremioSqlEngine()


class DremioJobs(Instrumentation):
    name = "dremio"
    sources = (SOURCE,)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.HttpHook, "run", _run_wrapper)


def clear_state() -> None:
    with _lock:
        _auth_headers.clear()
        _items_by_job.clear()
