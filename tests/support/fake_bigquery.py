"""A BigQuery REST v2 server on 127.0.0.1 for tests, where no emulator exists.

It answers the calls `google-cloud-bigquery` makes for jobs (jobs.insert, jobs.get,
jobs.getQueryResults, jobs.cancel) with the API's real resource shapes, records every request, and
runs each job to a planned outcome: its statistics (bytes billed, slot-ms, cache hit), how many status
reads it stays RUNNING for, an error, or never finishing. Point the client at it with the
`BIGQUERY_EMULATOR_HOST` environment variable the client library reads.

https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.support.json_http import JsonHandler, LocalServer, running

_JOBS = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs$")
_JOB = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs/(?P<job_id>[^/]+)$")
_CANCEL = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs/(?P<job_id>[^/]+)/cancel$")
_QUERY_RESULTS = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/queries/(?P<job_id>[^/]+)$")

# The HTTP status BigQuery answers a failed job's getQueryResults with, by error reason.
_ERROR_STATUS = {"invalidQuery": 400, "notFound": 404, "accessDenied": 403, "quotaExceeded": 403}


@dataclass(frozen=True)
class JobPlan:
    """How a job the fake receives runs, and what its statistics say once it is done."""

    bytes_billed: int = 0
    bytes_processed: int | None = None  # default: bytes_billed
    slot_ms: int = 0
    cache_hit: bool = False
    statement_type: str = "SELECT"
    # status reads (jobs.get or getQueryResults) answered RUNNING before the job is DONE
    running_reads: int = 1
    never_finishes: bool = False
    error_reason: str | None = None  # e.g. "invalidQuery": the job ends DONE with this errorResult
    reservation_id: str | None = None
    # more of JobStatistics2 as BigQuery reports it for this job (e.g. a BigLake table's
    # referencedTables, metadataCacheStatistics, externalServiceCosts), added to statistics.query
    query_statistics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class _Job:
    resource: dict[str, Any]
    plan: JobPlan
    reads: int = 0
    cancelled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now_ms() -> str:
    return str(int(time.time() * 1000))


class FakeBigQuery(LocalServer):
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.plans: list[tuple[str, JobPlan]] = []
        self.default_plan = JobPlan(bytes_billed=10_485_760, slot_ms=250)
        self.jobs: dict[tuple[str, str], _Job] = {}
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def plan(self, query_contains: str, plan: JobPlan) -> None:
        """Run query jobs whose text contains `query_contains` by `plan` (first match wins)."""
        self.plans.append((query_contains, plan))

    # ------------------------------------------------------------------ what the tests read

    def inserted(self) -> list[dict[str, Any]]:
        """The bodies of every jobs.insert request, in order."""
        return [r.body for r in self.requests if r.method == "POST" and _JOBS.match(r.path)]

    def inserted_where(self, query_contains: str) -> list[dict[str, Any]]:
        return [
            body
            for body in self.inserted()
            if query_contains in body.get("configuration", {}).get("query", {}).get("query", "")
        ]

    def job_reads(self, job_id: str) -> list[Request]:
        """jobs.get requests for one job."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/jobs/{job_id}")]

    def resource(self, project: str, job_id: str) -> dict[str, Any]:
        return self.jobs[(project, job_id)].resource

    # ------------------------------------------------------------------ the API

    def _plan_for(self, configuration: dict[str, Any]) -> JobPlan:
        query = configuration.get("query", {}).get("query")
        if query is None:
            return JobPlan(bytes_billed=0, slot_ms=self.default_plan.slot_ms, statement_type="")
        return next((plan for text, plan in self.plans if text in query), self.default_plan)

    def insert(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reference = job_reference(project, body, len(self.jobs) + 1)
        configuration = dict(body.get("configuration") or {})
        job_type = next((t for t in ("query", "load", "copy", "extract") if t in configuration), "query")
        configuration["jobType"] = job_type.upper()
        key = (project, reference["jobId"])
        with self._lock:
            if key in self.jobs:
                return 409, _error(
                    409,
                    "duplicate",
                    f"Already Exists: Job {project}:{reference['location']}.{reference['jobId']}",
                )
            plan = self._plan_for(configuration)
            resource = {
                "kind": "bigquery#job",
                "etag": f'"{len(self.jobs)}"',
                "id": f"{project}:{reference['location']}.{reference['jobId']}",
                "selfLink": f"{self.url}/bigquery/v2/projects/{project}/jobs/{reference['jobId']}",
                "user_email": "tests@example.iam.gserviceaccount.com",
                "jobReference": reference,
                "configuration": configuration,
                "status": {"state": "RUNNING"},
                "statistics": {"creationTime": _now_ms(), "startTime": _now_ms()},
            }
            job = _Job(resource, plan)
            if configuration.get("dryRun"):
                _finish(job)
                return 200, resource
            self.jobs[key] = job
            if plan.running_reads <= 0 and not plan.never_finishes:
                _finish(job)
            return 200, json.loads(json.dumps(resource))

    def read(self, project: str, job_id: str) -> _Job | None:
        job = self.jobs.get((project, job_id))
        if job is None:
            return None
        with job.lock:
            if job.resource["status"]["state"] != "DONE" and not job.plan.never_finishes:
                job.reads += 1
                if job.reads > job.plan.running_reads:
                    _finish(job)
        return job


def _finish(job: _Job) -> None:
    plan, resource = job.plan, job.resource
    statistics = resource["statistics"]
    statistics["endTime"] = _now_ms()
    processed = plan.bytes_processed if plan.bytes_processed is not None else plan.bytes_billed
    billed = 0 if plan.cache_hit else plan.bytes_billed
    slot_ms = 0 if plan.cache_hit else plan.slot_ms
    statistics["totalBytesProcessed"] = str(processed)
    if slot_ms:
        statistics["totalSlotMs"] = str(slot_ms)
    if plan.reservation_id:
        statistics["reservation_id"] = plan.reservation_id
    if resource["configuration"]["jobType"] == "QUERY":
        query = {
            "totalBytesProcessed": str(processed),
            "totalBytesBilled": str(billed),
            "cacheHit": plan.cache_hit,
            "statementType": plan.statement_type,
            "billingTier": 1,
        }
        if slot_ms:
            query["totalSlotMs"] = str(slot_ms)
        query.update(json.loads(json.dumps(plan.query_statistics)))
        statistics["query"] = query
    resource["status"] = {"state": "DONE"}
    if job.cancelled:
        resource["status"]["errorResult"] = {"reason": "stopped", "message": "Job execution was cancelled"}
    elif plan.error_reason:
        error = {
            "reason": plan.error_reason,
            "location": "query",
            "message": f"{plan.error_reason} in the fake",
        }
        resource["status"].update(errorResult=error, errors=[error])


def _error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


def job_reference(project: str, body: dict[str, Any], number: int) -> dict[str, Any]:
    """jobs.insert's jobReference with what BigQuery fills in: the project, a job id, location US."""
    reference = dict(body.get("jobReference") or {})
    reference.setdefault("projectId", project)
    reference.setdefault("jobId", f"job_{number}")
    reference["location"] = reference.get("location") or "US"
    return reference


class BigQueryHandler(JsonHandler):
    """What the BigQuery fakes share: the API's content type, and every request kept in the server's
    `requests`."""

    protocol_version = "HTTP/1.1"
    json_content_type = "application/json; charset=UTF-8"

    def _record(self) -> tuple[str, dict[str, str], Any]:
        path, query, body = unquote(self.url_path), self.query_last(), self.read_json()
        self.server.requests.append(Request(self.command, path, query, body))  # type: ignore[attr-defined]
        return path, query, body

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        self.reply_json(status, payload)


class _Handler(BigQueryHandler):
    server: FakeBigQuery

    def _not_found(self, what: str) -> None:
        self._send(404, _error(404, "notFound", f"Not found: {what}"))

    def do_POST(self) -> None:  # noqa: N802
        path, _query, body = self._record()
        if match := _JOBS.match(path):
            self._send(*self.server.insert(match["project"], body or {}))
        elif match := _CANCEL.match(path):
            job = self.server.jobs.get((match["project"], match["job_id"]))
            if job is None:
                return self._not_found(f"Job {match['project']}:{match['job_id']}")
            job.cancelled = True
            _finish(job)
            self._send(200, {"kind": "bigquery#jobCancelResponse", "job": job.resource})
        else:
            self._not_found(path)

    def do_GET(self) -> None:  # noqa: N802
        path, query, _body = self._record()
        if match := _JOB.match(path):
            job = self.server.read(match["project"], match["job_id"])
            if job is None:
                return self._not_found(
                    f"Job {match['project']}:{query.get('location', 'US')}.{match['job_id']}"
                )
            self._send(200, job.resource)
        elif match := _QUERY_RESULTS.match(path):
            job = self.server.read(match["project"], match["job_id"])
            if job is None:
                return self._not_found(
                    f"Job {match['project']}:{query.get('location', 'US')}.{match['job_id']}"
                )
            self._send(*_query_results(job))
        else:
            # tables, datasets: the tests' jobs reference none that exist
            self._not_found(path)


def _query_results(job: _Job) -> tuple[int, dict[str, Any]]:
    """jobs.getQueryResults: the job's completion and its (empty) result set."""
    resource = job.resource
    done = resource["status"]["state"] == "DONE"
    error = resource["status"].get("errorResult")
    if done and error:
        return _ERROR_STATUS.get(error["reason"], 400), _error(
            _ERROR_STATUS.get(error["reason"], 400), error["reason"], error["message"]
        )
    payload: dict[str, Any] = {
        "kind": "bigquery#getQueryResultsResponse",
        "etag": resource["etag"],
        "jobReference": resource["jobReference"],
        "jobComplete": done,
    }
    if done:
        query = resource["statistics"].get("query", {})
        payload.update(
            schema={"fields": [{"name": "n", "type": "INTEGER", "mode": "NULLABLE"}]},
            totalRows="0",
            totalBytesProcessed=query.get("totalBytesProcessed", "0"),
            cacheHit=query.get("cacheHit", False),
        )
    return 200, payload


@contextmanager
def fake_bigquery() -> Iterator[FakeBigQuery]:
    with running(FakeBigQuery()) as server:
        yield server
