"""The Dataproc v1 REST API on 127.0.0.1, for tests: jobs (submit, get), clusters (get) and Serverless
batches (create, get), with the API's JSON shapes, every request recorded.

`google-cloud-dataproc` speaks this API with its REST transport; the provider's `DataprocHook` builds
its clients for gRPC on the regional endpoint and offers no endpoint or transport setting, so the test
DAG points the hook's client factories at this server with `route_dataproc_hook_to(url)` (the hook's
job, cluster and batch methods themselves run unchanged).

https://cloud.google.com/dataproc/docs/reference/rest
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, Request, running

_SUBMIT = re.compile(r"^/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)/jobs:submit$")
_JOB = re.compile(r"^/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)/jobs/(?P<job_id>[^/:]+)$")
_CLUSTER = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)/clusters/(?P<name>[^/:]+)$"
)
_BATCHES = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/batches$")
_BATCH = re.compile(r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/batches/[^/:]+)$")
# A fixed clock, so durations (and so costs) do not depend on the machine.
SUBMITTED_AT = "2026-01-02T00:00:00Z"


@dataclass(frozen=True)
class JobPlan:
    """A job's timeline: queued, then running for `running_seconds`; optional faults for jobs.get."""

    queued_seconds: str = "12.5"
    running_seconds: str = "754.25"
    final_state: str = "DONE"
    fail_reads: bool = False
    slow_reads_seconds: float = 0.0


@dataclass(frozen=True)
class BatchPlan:
    milli_dcu_seconds: int = 1_234_567_890
    shuffle_storage_gb_seconds: int = 456_789
    running_seconds: int = 600
    final_state: str = "SUCCEEDED"
    fail_reads: bool = False
    slow_reads_seconds: float = 0.0


@dataclass
class _Store:
    jobs: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    job_plans: dict[str, JobPlan] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_plans: dict[str, BatchPlan] = field(default_factory=dict)


def _at(offset_seconds: str | float) -> str:
    """SUBMITTED_AT + offset, in RFC 3339 with the fraction the API gives."""
    base = 1_767_312_000  # SUBMITTED_AT as epoch seconds
    whole, _, fraction = f"{float(offset_seconds):.6f}".partition(".")
    moment = time.gmtime(base + int(whole))
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{fraction}Z"


class FakeDataproc(LocalServer):
    def __init__(self, clusters: dict[str, dict[str, Any]]) -> None:
        self.clusters = clusters
        self.requests: list[Request] = []
        self.store = _Store()
        self.plans: list[tuple[str, JobPlan | BatchPlan]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def plan(self, marker: str, plan: JobPlan | BatchPlan) -> None:
        """Run jobs or batches whose main file URI contains `marker` by `plan`."""
        self.plans.append((marker, plan))

    # ------------------------------------------------------------------ what the tests read

    def submitted_jobs(self) -> list[dict[str, Any]]:
        return [r.body["job"] for r in self.requests if r.method == "POST" and _SUBMIT.match(r.path)]

    def created_batches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and _BATCHES.match(r.path)]

    def reads(self, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and pattern in r.path]

    def job(self, marker: str) -> dict[str, Any]:
        (job,) = [j for j in self.store.jobs.values() if marker in json.dumps(j.get("pysparkJob", {}))]
        return job

    def batch(self, marker: str) -> dict[str, Any]:
        (batch,) = [b for b in self.store.batches.values() if marker in json.dumps(b.get("pysparkBatch", {}))]
        return batch

    # ------------------------------------------------------------------ the API

    def _plan_for(self, resource: dict[str, Any], kind: type) -> Any:
        text = json.dumps(resource)
        return next((p for marker, p in self.plans if marker in text and isinstance(p, kind)), kind())

    def submit_job(self, project: str, region: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job = dict(body.get("job") or {})
        placement = dict(job.get("placement") or {})
        cluster = self.clusters.get(placement.get("clusterName", ""))
        if cluster is None:
            return 404, _error(
                404,
                f"Not found: Cluster projects/{project}/regions/{region}/clusters/{placement.get('clusterName')}",
            )
        plan = self._plan_for(job, JobPlan)
        with self._lock:
            job_id = (job.get("reference") or {}).get("jobId") or f"job-{next(self._ids):04d}"
            placement["clusterUuid"] = cluster["clusterUuid"]
            running_from = float(plan.queued_seconds)
            ended = running_from + float(plan.running_seconds)
            job.update(
                reference={"projectId": project, "jobId": job_id},
                placement=placement,
                jobUuid=f"uuid-{job_id}",
                status={"state": plan.final_state, "stateStartTime": _at(ended)},
                statusHistory=[
                    {"state": "PENDING", "stateStartTime": _at(0)},
                    {"state": "SETUP_DONE", "stateStartTime": _at(float(plan.queued_seconds) / 2)},
                    {"state": "RUNNING", "stateStartTime": _at(running_from)},
                ],
                done=True,
            )
            self.store.jobs[(project, region, job_id)] = job
            self.store.job_plans[job_id] = plan
        submitted = dict(
            job, status={"state": "PENDING", "stateStartTime": _at(0)}, statusHistory=[], done=False
        )
        return 200, submitted

    def get_job(self, project: str, region: str, job_id: str) -> tuple[int, dict[str, Any]]:
        job = self.store.jobs.get((project, region, job_id))
        if job is None:
            return 404, _error(404, f"Not found: Job projects/{project}/regions/{region}/jobs/{job_id}")
        plan = self.store.job_plans[job_id]
        if plan.slow_reads_seconds:
            time.sleep(plan.slow_reads_seconds)
        if plan.fail_reads:
            return 500, _error(500, "Internal error encountered.")
        return 200, job

    def create_batch(self, project: str, region: str, query: dict[str, list[str]], body: dict[str, Any]):
        plan = self._plan_for(body, BatchPlan)
        batch_id = query.get("batchId", [f"batch-{next(self._ids):04d}"])[0]
        name = f"projects/{project}/locations/{region}/batches/{batch_id}"
        batch = dict(body)
        batch.update(
            name=name,
            uuid=f"uuid-{batch_id}",
            createTime=_at(0),
            state=plan.final_state,
            stateTime=_at(30 + plan.running_seconds),
            stateHistory=[
                {"state": "PENDING", "stateStartTime": _at(0)},
                {"state": "RUNNING", "stateStartTime": _at(30)},
            ],
            runtimeInfo={
                "approximateUsage": {
                    "milliDcuSeconds": str(plan.milli_dcu_seconds),
                    "shuffleStorageGbSeconds": str(plan.shuffle_storage_gb_seconds),
                }
            },
            creator="airflow@example.iam.gserviceaccount.com",
        )
        with self._lock:
            self.store.batches[name] = batch
            self.store.batch_plans[name] = plan
        operation = {
            "name": f"projects/{project}/regions/{region}/operations/op-{batch_id}",
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.dataproc.v1.BatchOperationMetadata",
                "batch": name,
                "batchUuid": batch["uuid"],
                "createTime": _at(0),
                "operationType": "BATCH",
                "description": f"Batch {batch_id}",
                "labels": batch.get("labels", {}),
            },
            "done": False,
        }
        return 200, operation

    def get_batch(self, name: str) -> tuple[int, dict[str, Any]]:
        batch = self.store.batches.get(name)
        if batch is None:
            return 404, _error(404, f"Not found: Batch {name}")
        plan = self.store.batch_plans[name]
        if plan.slow_reads_seconds:
            time.sleep(plan.slow_reads_seconds)
        if plan.fail_reads:
            return 500, _error(500, "Internal error encountered.")
        return 200, batch


def _error(code: int, message: str) -> dict[str, Any]:
    status = {404: "NOT_FOUND", 500: "INTERNAL"}.get(code, "UNKNOWN")
    return {"error": {"code": code, "message": message, "status": status}}


class _Handler(JsonHandler):
    server: FakeDataproc
    protocol_version = "HTTP/1.1"

    def _read(self, method: str) -> tuple[str, Request]:
        request = Request(method, self.url_path, self.query(), self.read_json())
        self.server.requests.append(request)
        return request.path, request

    def do_POST(self) -> None:  # noqa: N802
        path, request = self._read("POST")
        if match := _SUBMIT.match(path):
            return self.reply_json(
                *self.server.submit_job(match["project"], match["region"], request.body or {})
            )
        if match := _BATCHES.match(path):
            return self.reply_json(
                *self.server.create_batch(
                    match["project"], match["region"], request.query, request.body or {}
                )
            )
        self.reply_json(404, _error(404, f"{path} not found"))

    def do_GET(self) -> None:  # noqa: N802
        path, _ = self._read("GET")
        if match := _JOB.match(path):
            return self.reply_json(*self.server.get_job(match["project"], match["region"], match["job_id"]))
        if match := _CLUSTER.match(path):
            cluster = self.server.clusters.get(match["name"])
            if cluster is None:
                return self.reply_json(404, _error(404, f"Not found: Cluster {match['name']}"))
            return self.reply_json(
                200, {"projectId": match["project"], "clusterName": match["name"], **cluster}
            )
        if match := _BATCH.match(path):
            return self.reply_json(*self.server.get_batch(match["name"]))
        self.reply_json(404, _error(404, f"{path} not found"))


@contextmanager
def fake_dataproc(clusters: dict[str, dict[str, Any]]) -> Iterator[FakeDataproc]:
    with running(FakeDataproc(clusters)) as server:
        yield server


def route_dataproc_hook_to(url: str) -> None:
    """Make `DataprocHook` build its job, cluster and batch clients with the REST transport against
    `url` (what a private endpoint setting would do), keeping the hook's own credentials."""
    from airflow.providers.google.cloud.hooks import dataproc
    from google.api_core.client_options import ClientOptions
    from google.cloud.dataproc_v1 import BatchControllerClient, ClusterControllerClient, JobControllerClient

    def factory(client_class: type):
        def make_client(self, region: str | None = None):
            return client_class(
                credentials=self.get_credentials(),
                transport="rest",
                client_options=ClientOptions(api_endpoint=url),
            )

        return make_client

    class RestBatchControllerClient(BatchControllerClient):
        """The hook names a new batch's parent `projects/*/regions/*`, which the gRPC API accepts and
        the REST binding (`projects/*/locations/*`) does not: send the REST spelling."""

        def create_batch(self, request=None, **kwargs):
            if isinstance(request, dict) and "/regions/" in str(request.get("parent", "")):
                request = {**request, "parent": request["parent"].replace("/regions/", "/locations/")}
            return super().create_batch(request=request, **kwargs)

    dataproc.DataprocHook.get_job_client = factory(JobControllerClient)
    dataproc.DataprocHook.get_cluster_client = factory(ClusterControllerClient)
    dataproc.DataprocHook.get_batch_client = factory(RestBatchControllerClient)
