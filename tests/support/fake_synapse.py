"""An Azure Synapse workspace's development endpoint (`<workspace>.dev.azuresynapse.net`) for tests:
pipelines (createRun, pipelineruns get, queryActivityruns) and Livy Spark batches (create, get), served
through the Azure fake of `tests.support.fake_azure_data_factory` (its HTTPS proxy, TLS and token
endpoints).

https://learn.microsoft.com/en-us/rest/api/synapse/data-plane/pipeline-run
https://learn.microsoft.com/en-us/rest/api/synapse/data-plane/spark-batch
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

from tests.support.fake_azure_data_factory import (
    STARTED_AT,
    SYNAPSE_SUFFIX,
    FakeAzure,
    Request,
    _iso,
)

_CREATE_RUN = re.compile(r"^/pipelines/(?P<pipeline>[^/]+)/createRun$")
_PIPELINE_RUN = re.compile(r"^/pipelineruns/(?P<run_id>[^/]+)$")
_QUERY_ACTIVITIES = re.compile(
    r"^/pipelines/(?P<pipeline>[^/]+)/pipelineruns/(?P<run_id>[^/]+)/queryActivityruns$"
)
_BATCHES = re.compile(r"^/livyApi/versions/(?P<version>[^/]+)/sparkPools/(?P<pool>[^/]+)/batches$")
_BATCH = re.compile(
    r"^/livyApi/versions/(?P<version>[^/]+)/sparkPools/(?P<pool>[^/]+)/batches/(?P<batch_id>\d+)$"
)


@dataclass(frozen=True)
class SparkPlan:
    """A Spark batch's timeline: queued, then running for `running_seconds`; faults for later gets."""

    queued_seconds: float = 95.5
    running_seconds: float = 1234.5
    fail_reads_after: int | None = None  # gets answered normally before every later one fails with 500
    slow_reads_after: int | None = None
    slow_seconds: float = 0.0


class SynapseWorkspace:
    """The workspace's state; `install(azure)` adds its routes to the Azure fake."""

    def __init__(self, azure: FakeAzure, workspace: str) -> None:
        self.azure = azure
        self.host = f"{workspace}{SYNAPSE_SUFFIX}"
        self.endpoint = f"https://{self.host}"
        self.spark_plans: list[tuple[str, SparkPlan]] = []
        self.batches: dict[int, dict[str, Any]] = {}
        self.batch_plans: dict[int, SparkPlan] = {}
        self.batch_reads: dict[int, int] = {}
        self._ids = itertools.count(41)
        azure.routes.append((lambda host: host == self.host, self._route))

    def plan_spark(self, name: str, plan: SparkPlan) -> None:
        self.spark_plans.append((name, plan))

    def requests(self) -> list[Request]:
        return self.azure.on_host(self.host)

    def batch_named(self, name: str) -> dict[str, Any]:
        (batch,) = [b for b in self.batches.values() if b["name"] == name]
        return batch

    def _route(self, azure: FakeAzure, request: Request) -> tuple[int, dict[str, Any]]:
        if request.authorization != "Bearer test-token":
            return 401, {"error": {"code": "Unauthorized", "message": "no valid token"}}
        if (match := _CREATE_RUN.match(request.path)) and request.method == "POST":
            return 202, {"runId": azure.new_run(match["pipeline"], request.body or {}).run_id}
        if (match := _PIPELINE_RUN.match(request.path)) and request.method == "GET":
            return azure.read_run(match["run_id"])
        if (match := _QUERY_ACTIVITIES.match(request.path)) and request.method == "POST":
            return azure.query_activities(match["run_id"])
        if (match := _BATCHES.match(request.path)) and request.method == "POST":
            return self._create_batch(match["pool"], request.body or {})
        if (match := _BATCH.match(request.path)) and request.method == "GET":
            return self._get_batch(int(match["batch_id"]))
        return 404, {"error": {"code": "NotFound", "message": f"{request.path} not found"}}

    def _create_batch(self, pool: str, options: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        plan = next((p for name, p in self.spark_plans if name == options.get("name")), SparkPlan())
        batch_id = next(self._ids)
        running_at = STARTED_AT + dt.timedelta(seconds=plan.queued_seconds)
        ended_at = running_at + dt.timedelta(seconds=plan.running_seconds)
        batch = {
            "id": batch_id,
            "name": options.get("name"),
            "workspaceName": self.host.split(".")[0],
            "sparkPoolName": pool,
            "submitterName": "airflow",
            "submitterId": "00000000-0000-0000-0000-000000000000",
            "jobType": "SparkBatch",
            "tags": options.get("tags") or {},
            "appId": f"application_1767312000000_{batch_id:04d}",
            "appInfo": {},
            "state": "success",
            "result": "Succeeded",
            "livyInfo": {
                "notStartedAt": _iso(STARTED_AT),
                "startingAt": _iso(STARTED_AT + dt.timedelta(seconds=plan.queued_seconds / 2)),
                "runningAt": _iso(running_at),
                "successAt": _iso(ended_at),
                "currentState": "success",
                "jobCreationRequest": options,
            },
            "schedulerInfo": {
                "submittedAt": _iso(STARTED_AT),
                "scheduledAt": _iso(STARTED_AT + dt.timedelta(seconds=plan.queued_seconds / 2)),
                "endedAt": _iso(ended_at),
                "currentState": "Ended",
            },
            "errorInfo": [],
            "log": [],
        }
        self.batches[batch_id] = batch
        self.batch_plans[batch_id] = plan
        self.batch_reads[batch_id] = 0
        created = {
            **batch,
            "state": "not_started",
            "result": "Uncertain",
            "livyInfo": {"currentState": "not_started"},
        }
        return 200, created

    def _get_batch(self, batch_id: int) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {"error": {"code": "NotFound", "message": f"batch {batch_id} not found"}}
        plan = self.batch_plans[batch_id]
        self.batch_reads[batch_id] += 1
        reads = self.batch_reads[batch_id]
        if plan.slow_reads_after is not None and reads > plan.slow_reads_after:
            time.sleep(plan.slow_seconds)
        if plan.fail_reads_after is not None and reads > plan.fail_reads_after:
            return 500, {"error": {"code": "InternalServerError", "message": "planned failure"}}
        return 200, batch
