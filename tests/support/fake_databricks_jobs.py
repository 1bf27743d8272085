"""A Databricks workspace's Jobs and Clusters REST API on 127.0.0.1, for tests.

It answers what `DatabricksHook` sends (POST jobs/runs/submit and jobs/run-now, GET jobs/runs/get,
GET clusters/get, under api/2.1 or api/2.2, and GET api/2.0/pipelines/{id}, whose `latest_updates`
gain an update each time a run's pipeline task starts) with the API's own shapes, records every
request, and runs each run to a planned outcome: how many runs/get reads it stays RUNNING for, how long each task held
its compute (reported as start_time, end_time and the three phase durations), or a fault (runs/get
answering 500, or answering slowly) for the look-ups made after the task itself stopped reading.

https://docs.databricks.com/api/workspace/jobs/getrun
https://docs.databricks.com/api/workspace/pipelines/get
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, Request, running

_PATH = re.compile(r"^/api/2\.[012]/(?P<endpoint>.+)$")
_PIPELINE = re.compile(r"^pipelines/(?P<pipeline_id>[^/]+)$")
# A fixed clock: every run starts here, so durations (and so costs) do not depend on the machine.
EPOCH_MS = 1_767_312_000_000  # 2026-01-02T00:00:00Z


@dataclass(frozen=True)
class RunPlan:
    """How a run goes. `task_ms` maps a task key to (setup, execution, cleanup) milliseconds; other
    tasks take `default_task_ms`. Tasks run one after another, in the order the request lists them."""

    running_reads: int = 1
    task_ms: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    default_task_ms: tuple[int, int, int] = (60_000, 240_000, 5_000)
    result_state: str = "SUCCESS"
    # faults for reads once the run is terminal: answer 500, or sleep this long before answering
    fail_terminal_reads: bool = False
    slow_terminal_reads_seconds: float = 0.0


@dataclass
class _Run:
    resource: dict[str, Any]
    plan: RunPlan
    reads: int = 0


def workspace_connection(port: int, token: str, extra: dict[str, Any]) -> dict[str, Any]:
    """An Airflow connection (JSON form) to a Databricks fake on `port` of 127.0.0.1, over plain HTTP."""
    return {
        "conn_type": "databricks",
        "host": "127.0.0.1",
        "port": port,
        "schema": "http",
        "password": token,
        "extra": extra,
    }


def _param(request: Request, name: str) -> str | None:
    """A GET parameter: in the query string (requests) or in a JSON body (the async hook's aiohttp)."""
    if name in request.query:
        return request.query[name][0]
    if isinstance(request.body, dict) and name in request.body:
        return str(request.body[name])
    return None


def _tasks_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's tasks; a single-task request (task fields at the top level) becomes one task, as the
    Jobs API 2.1+ reports it."""
    if isinstance(body.get("tasks"), list):
        return copy.deepcopy(body["tasks"])
    task = {
        k: copy.deepcopy(v)
        for k, v in body.items()
        if k.endswith("_task") or k in ("new_cluster", "existing_cluster_id")
    }
    task["task_key"] = body.get("run_name") or "task"
    return [task]


class FakeDatabricksJobs(LocalServer):
    def __init__(
        self,
        token: str,
        jobs: dict[int, dict[str, Any]] | None = None,
        clusters: dict[str, dict[str, Any]] | None = None,
        pipelines: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.token = token
        self.jobs = jobs or {}
        self.clusters = clusters or {}
        # pipeline id -> its `spec` (GET /api/2.0/pipelines/{id}); a pipeline task starts an update
        self.pipelines = pipelines or {}
        self.updates: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[Request] = []
        self.plans: list[tuple[str, RunPlan]] = []
        self.runs: dict[int, _Run] = {}
        self._run_ids = itertools.count(880_001)
        self._cluster_ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An Airflow connection (JSON form) to this workspace over plain HTTP."""
        return workspace_connection(self.port, self.token, extra)

    def plan(self, name: str, plan: RunPlan) -> None:
        """Run runs whose run_name (or, for run-now, job name) is `name` by `plan`."""
        self.plans.append((name, plan))

    # ------------------------------------------------------------------ what the tests read

    def submitted(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith("/jobs/runs/submit")]

    def run_now_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith("/jobs/run-now")]

    def run_reads(self, run_id: int) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.path.endswith("/jobs/runs/get") and _param(r, "run_id") == str(run_id)
        ]

    def cluster_reads(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/clusters/get")]

    def run_named(self, name: str) -> dict[str, Any]:
        (run,) = [r.resource for r in self.runs.values() if r.resource["run_name"] == name]
        return run

    # ------------------------------------------------------------------ the API

    def _plan_for(self, name: str) -> RunPlan:
        return next((plan for planned, plan in self.plans if planned == name), RunPlan())

    def create_run(self, body: dict[str, Any], job_id: int | None) -> dict[str, Any]:
        settings = self.jobs.get(job_id, {}) if job_id is not None else body
        run_name = settings.get("name") if job_id is not None else body.get("run_name") or "Untitled"
        plan = self._plan_for(run_name)
        tasks = _tasks_of(settings)
        clock = EPOCH_MS
        for task in tasks:
            setup, execution, cleanup = plan.task_ms.get(task["task_key"], plan.default_task_ms)
            task.update(
                start_time=clock,
                setup_duration=setup,
                execution_duration=execution,
                cleanup_duration=cleanup,
                end_time=clock + setup + execution + cleanup,
                attempt_number=0,
            )
            if "new_cluster" in task or "job_cluster_key" in task:
                task["cluster_instance"] = {
                    "cluster_id": f"0102-000000-job{next(self._cluster_ids):04d}",
                    "spark_context_id": "5512345678901234567",
                }
            elif task.get("existing_cluster_id"):
                task["cluster_instance"] = {"cluster_id": task["existing_cluster_id"]}
            pipeline_id = (task.get("pipeline_task") or {}).get("pipeline_id")
            if pipeline_id in self.pipelines:
                self.start_update(pipeline_id, clock, "JOB_TASK")
            clock = task["end_time"]
        with self._lock:
            run_id = next(self._run_ids)
            resource = {
                "job_id": job_id if job_id is not None else run_id - 100_000,
                "run_id": run_id,
                "number_in_job": run_id,
                "original_attempt_run_id": run_id,
                "creator_user_name": "airflow@example.com",
                "run_name": run_name,
                "run_page_url": f"http://127.0.0.1:{self.port}/?o=1#job/{job_id or 0}/run/{run_id}",
                "run_type": "JOB_RUN" if job_id is not None else "SUBMIT_RUN",
                "trigger": "ONE_TIME",
                "format": "MULTI_TASK",
                "start_time": EPOCH_MS,
                "tasks": tasks,
                "job_clusters": copy.deepcopy(settings.get("job_clusters") or []),
                "_end_time": clock,
            }
            self.runs[run_id] = _Run(resource, plan)
        return {"run_id": run_id, "number_in_job": run_id}

    def start_update(self, pipeline_id: str, at_ms: int, cause: str) -> str:
        """An update of the pipeline, created at `at_ms` (a minute after the previous one stands in for
        an earlier scheduled update: only the one at the task's start is the task's)."""
        with self._lock:
            updates = self.updates.setdefault(pipeline_id, [])
            update_id = f"{pipeline_id[:8]}-0000-4000-8000-{len(updates) + 1:012d}"
            created = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.timezone.utc)
            updates.insert(
                0,
                {
                    "update_id": update_id,
                    "state": "COMPLETED",
                    "creation_time": created.strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{created.microsecond // 1000:03d}Z",
                    "cause": cause,
                },
            )
        return update_id

    def read_pipeline(self, pipeline_id: str) -> tuple[int, dict[str, Any]]:
        spec = self.pipelines.get(pipeline_id)
        if spec is None:
            return 404, {
                "error_code": "RESOURCE_DOES_NOT_EXIST",
                "message": f"The specified pipeline {pipeline_id} was not found.",
            }
        return 200, {
            "pipeline_id": pipeline_id,
            "spec": {"id": pipeline_id, **copy.deepcopy(spec)},
            "state": "IDLE",
            "cluster_id": "0102-000000-dlt00001",
            "name": spec.get("name", pipeline_id),
            "health": "HEALTHY",
            "creator_user_name": "airflow@example.com",
            "run_as_user_name": "airflow@example.com",
            "last_modified": EPOCH_MS - 86_400_000,
            "latest_updates": copy.deepcopy(self.updates.get(pipeline_id, [])),
        }

    def read_run(self, run_id: int) -> tuple[int, dict[str, Any]]:
        with self._lock:
            run = self.runs.get(run_id)
            if run is None:
                return 404, {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"Run {run_id} does not exist.",
                }
            run.reads += 1
            terminal = run.reads > run.plan.running_reads
        if terminal and run.plan.slow_terminal_reads_seconds:
            time.sleep(run.plan.slow_terminal_reads_seconds)
        if terminal and run.plan.fail_terminal_reads:
            return 500, {"error_code": "INTERNAL_ERROR", "message": "planned failure"}
        view = {k: copy.deepcopy(v) for k, v in run.resource.items() if not k.startswith("_")}
        if terminal:
            end = run.resource["_end_time"]
            view.update(
                end_time=end,
                setup_duration=0,
                execution_duration=0,
                cleanup_duration=0,
                run_duration=end - EPOCH_MS,
                state={
                    "life_cycle_state": "TERMINATED",
                    "result_state": run.plan.result_state,
                    "state_message": "",
                    "user_cancelled_or_timedout": False,
                },
                status={
                    "state": "TERMINATED",
                    "termination_details": {"code": run.plan.result_state, "type": "SUCCESS"},
                },
            )
            for task in view["tasks"]:
                task["state"] = {"life_cycle_state": "TERMINATED", "result_state": run.plan.result_state}
        else:
            view.update(
                end_time=0,
                state={"life_cycle_state": "RUNNING", "state_message": "In run"},
                status={"state": "RUNNING"},
            )
            for task in view["tasks"]:
                task.update(end_time=0, state={"life_cycle_state": "RUNNING"})
        return 200, view


class _Handler(JsonHandler):
    server: FakeDatabricksJobs
    protocol_version = "HTTP/1.1"

    def _record(self, method: str) -> tuple[str, Request] | None:
        authorization = self.headers.get("Authorization")
        request = Request(method, self.url_path, self.query(), self.read_json(), authorization)
        self.server.requests.append(request)
        if authorization != f"Bearer {self.server.token}":
            self.reply_json(401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."})
            return None
        match = _PATH.match(request.path)
        if match is None:
            self.reply_json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{request.path} not found"})
            return None
        return match.group("endpoint"), request

    def do_POST(self) -> None:  # noqa: N802
        recorded = self._record("POST")
        if recorded is None:
            return
        endpoint, request = recorded
        body = request.body
        if endpoint == "jobs/runs/submit":
            return self.reply_json(200, self.server.create_run(body or {}, None))
        if endpoint == "jobs/run-now":
            job_id = int((body or {}).get("job_id", 0))
            if job_id not in self.server.jobs:
                return self.reply_json(
                    400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Job {job_id} does not exist."}
                )
            return self.reply_json(200, self.server.create_run(body, job_id))
        self.reply_json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{endpoint} not found"})

    def do_GET(self) -> None:  # noqa: N802
        recorded = self._record("GET")
        if recorded is None:
            return
        endpoint, request = recorded
        if endpoint == "jobs/runs/get":
            return self.reply_json(*self.server.read_run(int(_param(request, "run_id") or 0)))
        if (pipeline := _PIPELINE.match(endpoint)) is not None:
            return self.reply_json(*self.server.read_pipeline(pipeline.group("pipeline_id")))
        if endpoint == "clusters/get":
            cluster_id = _param(request, "cluster_id") or ""
            if cluster_id in self.server.clusters:
                return self.reply_json(200, {"cluster_id": cluster_id, **self.server.clusters[cluster_id]})
            return self.reply_json(
                400,
                {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Cluster {cluster_id} does not exist"},
            )
        self.reply_json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{endpoint} not found"})


@contextmanager
def fake_databricks_jobs(
    token: str,
    jobs: dict[int, dict[str, Any]] | None = None,
    clusters: dict[str, dict[str, Any]] | None = None,
    pipelines: dict[str, dict[str, Any]] | None = None,
) -> Iterator[FakeDatabricksJobs]:
    with running(FakeDatabricksJobs(token, jobs, clusters, pipelines)) as server:
        yield server
