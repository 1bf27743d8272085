"""Dremio's REST SQL and Job API on 127.0.0.1, for tests: Dremio Software's `api/v3` and Dremio Cloud's
`v0/projects/{project_id}` paths, with the API's own shapes.

POST .../sql with `{"sql": ..., "context": [...]}` answers `{"id": "<job id>"}`; GET .../job/{id}
answers the job object (jobState, rowCount, errorMessage, startedAt, endedAt, acceleration, queryType,
queueName, queueId, resourceSchedulingStartedAt, resourceSchedulingEndedAt, cancellationReason).
Every request needs `Authorization: Bearer <token>` (or Dremio Software's `_dremio<token>`); others get
401. Every request is recorded.

A job's outcome comes from its SQL: `SELECT <n> ...` completes, having held its engine `n`
milliseconds; SQL containing `FAIL_ME` fails in execution the same way; SQL containing `'slow'` is
read RUNNING once before it ends; SQL containing `NEVER_ENDS` stays RUNNING. Faults for the job reads:
SQL containing `LOOKUP_FAILS` makes them answer 500, `LOOKUP_SLOW` makes them answer after 8 seconds. Times run on a fixed clock (job k starts at EPOCH + k minutes), so the
engine time, and so the cost, does not depend on the machine.

https://docs.dremio.com/software/api/job https://docs.dremio.com/cloud/api/job/
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, SentRequest, running

_PATH = re.compile(r"^(?:/api/v3|/v0/projects/(?P<project>[^/]+))/(?P<rest>sql|job/(?P<job>[^/?]+))/?$")
_SELECT = re.compile(r"^\s*SELECT\s+(\d+)\b", re.IGNORECASE)
EPOCH = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
SCHEDULING_MS = 20  # resourceSchedulingStartedAt -> resourceSchedulingEndedAt
PLANNING_MS = 100  # startedAt -> resourceSchedulingStartedAt


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class FakeJob:
    job_id: str
    project_id: str | None
    sql: str
    submitted: dt.datetime
    engine_ms: int
    outcome: str  # COMPLETED | FAILED | NEVER_ENDS
    running_reads: int = 0
    reads: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def executing_from(self) -> dt.datetime:
        return self.submitted + dt.timedelta(milliseconds=PLANNING_MS + SCHEDULING_MS)

    def resource(self, queue: str) -> dict[str, Any]:
        self.reads += 1
        running = self.outcome == "NEVER_ENDS" or self.reads <= self.running_reads
        job: dict[str, Any] = {
            "jobState": "RUNNING" if running else self.outcome,
            "rowCount": 0 if running or self.outcome != "COMPLETED" else 1,
            "errorMessage": "" if self.outcome != "FAILED" or running else "Query failed: division by zero",
            "startedAt": iso(self.submitted),
            "queryType": "REST",
            "queueName": queue,
            "queueId": "f6a5ef4f-ce5c-4be4-95b2-092c36721dc5",
            "resourceSchedulingStartedAt": iso(self.submitted + dt.timedelta(milliseconds=PLANNING_MS)),
            "resourceSchedulingEndedAt": iso(self.executing_from),
            "cancellationReason": "",
        }
        if not running:
            job["endedAt"] = iso(self.executing_from + dt.timedelta(milliseconds=self.engine_ms))
            job["acceleration"] = {
                "reflectionRelationships": [
                    {
                        "datasetId": "ef99ab32-aa47-4f4c-4d1c-d40f8035b846",
                        "reflectionId": "63fd1c83-5cde-4133-9e2d-60543550580a",
                        "relationship": "CONSIDERED",
                    }
                ]
            }
        return job


class FakeDremio(LocalServer):
    def __init__(self, token: str, queue: str) -> None:
        super().__init__(_Handler)
        self.token = token
        self.queue = queue
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[SentRequest] = []
        self.lock = threading.Lock()
        self._counter = itertools.count()

    def authorized(self, header: str | None) -> bool:
        return header in (f"Bearer {self.token}", f"_dremio{self.token}")

    def submit(self, project_id: str | None, sql: str) -> FakeJob:
        if "NEVER_ENDS" in sql:
            outcome, engine_ms = "NEVER_ENDS", 0
        else:
            match = _SELECT.match(sql)
            engine_ms = int(match.group(1)) if match else 50
            outcome = "FAILED" if "FAIL_ME" in sql else "COMPLETED"
        with self.lock:
            index = next(self._counter)
            job = FakeJob(
                job_id=str(uuid.UUID(int=0x1D3091B1_D0BE_0169_8ACE_E43F562C0000 + index)),
                project_id=project_id,
                sql=sql,
                submitted=EPOCH + dt.timedelta(minutes=index),
                engine_ms=engine_ms,
                outcome=outcome,
                running_reads=1 if "'slow'" in sql else 0,
            )
            self.jobs[job.job_id] = job
        return job


class _Handler(JsonHandler):
    server: FakeDremio

    def _handle(self) -> None:
        method = self.command
        body = self.read_json(invalid_as_text=True)
        authorization = self.headers.get("Authorization")
        with self.server.lock:
            self.server.requests.append(SentRequest(method, self.path, body, authorization))
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            return self.reply_json(404, {"errorMessage": f"no such endpoint {self.path}"})
        if not self.server.authorized(authorization):
            return self.reply_json(401, {"errorMessage": "Unauthorized"})
        if match.group("rest") == "sql":
            if method != "POST" or not isinstance(body, dict) or not isinstance(body.get("sql"), str):
                return self.reply_json(400, {"errorMessage": "a JSON body with sql is required"})
            job = self.server.submit(match.group("project"), body["sql"])
            job.requests.append((method, self.path))
            return self.reply_json(200, {"id": job.job_id})
        job = self.server.jobs.get(match.group("job"))
        if method != "GET" or job is None or job.project_id != match.group("project"):
            return self.reply_json(
                404, {"errorMessage": f"Could not find a job with id {match.group('job')}"}
            )
        job.requests.append((method, self.path))
        if "LOOKUP_FAILS" in job.sql:
            return self.reply_json(
                500, {"errorMessage": "Something went wrong. Please check the log file for details"}
            )
        if "LOOKUP_SLOW" in job.sql:
            time.sleep(8)
        return self.reply_json(200, job.resource(self.server.queue))

    do_GET = do_POST = _handle  # noqa: N815


@contextmanager
def fake_dremio(token: str, queue: str = "LARGE") -> Iterator[FakeDremio]:
    with running(FakeDremio(token, queue)) as server:
        yield server
