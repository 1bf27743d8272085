"""A Spark cluster's REST endpoints on 127.0.0.1, for tests, and a stand-in `spark-submit` executable.

One server answers, each with its own API's shapes:

- the YARN ResourceManager: GET /ws/v1/cluster/apps/{id} ({"app": {...}} with vcoreSeconds,
  memorySeconds, elapsedTime; a RemoteException with 404 for an unknown id),
  https://hadoop.apache.org/docs/current/hadoop-yarn/hadoop-yarn-site/ResourceManagerRest.html
- the Spark history server: GET /api/v1/applications[?minDate&limit], /applications/{id},
  /applications/{id}[/{attemptId}]/allexecutors and /environment,
  https://spark.apache.org/docs/latest/monitoring.html#rest-api
- Apache Livy: POST /batches, GET /batches/{id}, /batches/{id}/state, /batches/{id}/log, DELETE,
  https://livy.apache.org/docs/latest/rest-api.html
- the standalone master's REST submission server: GET /v1/submissions/status/{driverId}.

Faults per application id: `slow` (answers after a delay) and unknown ids (404). Every request is kept.

`install_spark_submit(folder, plan_file)` writes a `spark-submit` that prints, for the application
named by `--name`, the lines the plan file gives (what the real one prints for that master), records
its arguments next to the plan, and exits 0.
"""

from __future__ import annotations

import calendar
import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.support.json_http import JsonHandler, LocalServer, Request, running

# A fixed clock: applications start here, so durations (and so costs) do not depend on the machine.
EPOCH_MS = 1_767_312_000_000  # 2026-01-02T00:00:00Z


def spark_date(ms: int) -> str:
    """The history server's date format: 2026-01-02T00:00:05.123GMT."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}GMT"


@dataclass
class HistoryApp:
    """An application as the history server knows it. `executors`: (id, cores, add ms, remove ms|None)
    relative to the start; the driver is listed too, as the real server does."""

    app_id: str
    name: str
    duration_ms: int
    executors: list[tuple[str, int, int, int | None]]
    properties: dict[str, str] = field(default_factory=dict)
    attempt_id: str | None = None
    start_ms: int = EPOCH_MS
    # the spark-submit call (by --name) it came from: its --conf pairs are its properties, and it
    # starts when that call was made
    submitted_as: str | None = None

    def info(self) -> dict[str, Any]:
        end = self.start_ms + self.duration_ms
        attempt: dict[str, Any] = {
            "startTime": spark_date(self.start_ms),
            "endTime": spark_date(end),
            "lastUpdated": spark_date(end + 1_000),
            "duration": self.duration_ms,
            "sparkUser": "etl",
            "completed": True,
            "appSparkVersion": "3.5.3",
            "startTimeEpoch": self.start_ms,
            "endTimeEpoch": end,
            "lastUpdatedEpoch": end + 1_000,
        }
        if self.attempt_id:
            attempt["attemptId"] = self.attempt_id
        return {"id": self.app_id, "name": self.name, "attempts": [attempt]}

    def allexecutors(self) -> list[dict[str, Any]]:
        rows = [self._executor("driver", 0, 0, None)]
        rows += [self._executor(*e) for e in self.executors]
        return rows

    def _executor(self, executor_id: str, cores: int, added: int, removed: int | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": executor_id,
            "hostPort": f"10.0.0.{len(executor_id) + 10}:4{len(executor_id)}123",
            "isActive": removed is None,
            "rddBlocks": 0,
            "memoryUsed": 0,
            "diskUsed": 0,
            "totalCores": cores,
            "maxTasks": cores,
            "activeTasks": 0,
            "failedTasks": 0,
            "completedTasks": 12,
            "totalTasks": 12,
            "totalDuration": 40_000,
            "totalGCTime": 300,
            "totalInputBytes": 1_048_576,
            "totalShuffleRead": 0,
            "totalShuffleWrite": 0,
            "isBlacklisted": False,
            "maxMemory": 2_101_975_449,
            "addTime": spark_date(self.start_ms + added),
            "executorLogs": {},
            "memoryMetrics": {
                "usedOnHeapStorageMemory": 0,
                "usedOffHeapStorageMemory": 0,
                "totalOnHeapStorageMemory": 2_101_975_449,
                "totalOffHeapStorageMemory": 0,
            },
            "blacklistedInStages": [],
            "peakMemoryMetrics": {"JVMHeapMemory": 512_000_000, "JVMOffHeapMemory": 90_000_000},
            "attributes": {},
            "resources": {},
            "resourceProfileId": 0,
            "isExcluded": False,
            "excludedInStages": [],
        }
        if removed is not None:
            row["removeTime"] = spark_date(self.start_ms + removed)
            row["removeReason"] = "Executor killed by driver."
        return row

    def environment(self) -> dict[str, Any]:
        properties = {"spark.app.id": self.app_id, "spark.app.name": self.name, **self.properties}
        return {
            "runtime": {"javaVersion": "17.0.12", "javaHome": "/opt/java", "scalaVersion": "version 2.12.18"},
            "sparkProperties": sorted([k, v] for k, v in properties.items()),
            "hadoopProperties": [],
            "systemProperties": [["java.vendor", "Eclipse Adoptium"]],
            "metricsProperties": [],
            "classpathEntries": [],
            "resourceProfiles": [],
        }


def yarn_app(
    app_id: str, name: str, vcore_seconds: int, memory_seconds: int, elapsed_ms: int, **extra
) -> dict:
    """A finished application as /ws/v1/cluster/apps/{id} reports it."""
    cluster_ts = int(app_id.split("_")[1])
    return {
        "id": app_id,
        "user": "etl",
        "name": name,
        "queue": "root.etl",
        "state": "FINISHED",
        "finalStatus": "SUCCEEDED",
        "progress": 100.0,
        "trackingUI": "History",
        "trackingUrl": f"http://rm:8088/proxy/{app_id}/",
        "diagnostics": "",
        "clusterId": cluster_ts,
        "applicationType": "SPARK",
        "applicationTags": "",
        "priority": 0,
        "startedTime": EPOCH_MS,
        "launchTime": EPOCH_MS + 800,
        "finishedTime": EPOCH_MS + elapsed_ms,
        "elapsedTime": elapsed_ms,
        "amContainerLogs": f"http://nm:8042/node/containerlogs/container_{cluster_ts}_0001_01_000001/etl",
        "amHostHttpAddress": "nm:8042",
        "amRPCAddress": "nm:35000",
        "masterNodeId": "nm:45454",
        "allocatedMB": -1,
        "allocatedVCores": -1,
        "reservedMB": -1,
        "reservedVCores": -1,
        "runningContainers": -1,
        "memorySeconds": memory_seconds,
        "vcoreSeconds": vcore_seconds,
        "queueUsagePercentage": 0.0,
        "clusterUsagePercentage": 0.0,
        "resourceSecondsMap": {
            "entry": [
                {"key": "memory-mb", "value": str(memory_seconds)},
                {"key": "vcores", "value": str(vcore_seconds)},
            ]
        },
        "preemptedResourceMB": 0,
        "preemptedResourceVCores": 0,
        "numNonAMContainerPreempted": 0,
        "numAMContainerPreempted": 0,
        "logAggregationStatus": "SUCCEEDED",
        "unmanagedApplication": False,
        "amNodeLabelExpression": "",
        **extra,
    }


class FakeSparkCluster(LocalServer):
    def __init__(self) -> None:
        self.yarn: dict[str, dict[str, Any]] = {}
        self.history: dict[str, HistoryApp] = {}
        self.slow: dict[str, float] = {}
        # Livy: batch name -> the YARN application id it runs as
        self.livy_apps: dict[str, str] = {}
        self.batches: dict[int, dict[str, Any]] = {}
        self.drivers: dict[str, str] = {}  # standalone driver id -> state
        self.requests: list[Request] = []
        self.spark_submit_plan: Path | None = None
        self._batch_ids = itertools.count(0)
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def add_history(self, app: HistoryApp) -> None:
        self.history[app.app_id] = app

    def _submitted(self, app: HistoryApp) -> HistoryApp:
        """The app as the spark-submit call it came from made it."""
        if not app.submitted_as or self.spark_submit_plan is None:
            return app
        call = spark_submit_calls(self.spark_submit_plan, with_time=True).get(app.submitted_as)
        if call is None:
            return app
        argv, started = call
        return replace(app, properties={**conf_of(argv), **app.properties}, start_ms=started)

    def requested(self, path_part: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path_part in r.path]

    def livy_posts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requested("/batches") if r.method == "POST"]

    # ----------------------------------------------------------------------------- routing

    def answer(self, request: Request) -> tuple[int, Any]:
        path = request.path.rstrip("/")
        for app_id, delay in self.slow.items():
            if app_id in path:
                time.sleep(delay)
        if match := re.fullmatch(r"/ws/v1/cluster/apps/([^/]+)", path):
            app = self.yarn.get(match.group(1))
            if app is None:
                return 404, {
                    "RemoteException": {
                        "exception": "NotFoundException",
                        "message": f"java.lang.Exception: app with id: {match.group(1)} not found",
                        "javaClassName": "org.apache.hadoop.yarn.webapp.NotFoundException",
                    }
                }
            return 200, {"app": app}
        if path == "/api/v1/applications":
            return 200, self._list_history(request.query)
        if match := re.fullmatch(
            r"/api/v1/applications/([^/]+)(?:/([^/]+))?(?:/(allexecutors|environment))?", path
        ):
            app_id, attempt, what = match.groups()
            if attempt in ("allexecutors", "environment") and what is None:
                attempt, what = None, attempt
            app = self.history.get(app_id)
            app = self._submitted(app) if app is not None else None
            if app is None or (attempt is not None and attempt != app.attempt_id):
                return 404, f"no such app: {app_id}"
            if what is None:
                return 200, app.info()
            return 200, app.allexecutors() if what == "allexecutors" else app.environment()
        if match := re.fullmatch(r"/v1/submissions/status/([^/]+)", path):
            driver = match.group(1)
            return 200, {
                "action": "SubmissionStatusResponse",
                "driverState": self.drivers.get(driver, "FINISHED"),
                "serverSparkVersion": "3.5.3",
                "submissionId": driver,
                "success": True,
                "workerHostPort": "10.0.0.5:40123",
                "workerId": "worker-20260101000000-10.0.0.5-40123",
            }
        return self._livy(request, path)

    def _list_history(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        since = query.get("minDate", [None])[0]
        apps = sorted(
            (self._submitted(a) for a in self.history.values()), key=lambda a: a.start_ms, reverse=True
        )
        if since:
            since_ms = (
                calendar.timegm(time.strptime(since.replace("GMT", "")[:19], "%Y-%m-%dT%H:%M:%S")) * 1000
            )
            apps = [a for a in apps if a.start_ms >= since_ms]
        limit = int(query.get("limit", [len(apps)])[0])
        return [a.info() for a in apps[:limit]]

    def _livy(self, request: Request, path: str) -> tuple[int, Any]:
        if path == "/batches" and request.method == "POST":
            body = request.body or {}
            with self._lock:
                batch_id = next(self._batch_ids)
                self.batches[batch_id] = {
                    "id": batch_id,
                    "name": body.get("name"),
                    "owner": None,
                    "proxyUser": body.get("proxyUser"),
                    "state": "starting",
                    "appId": None,
                    "appInfo": {"driverLogUrl": None, "sparkUiUrl": None},
                    "log": ["stdout: ", "\nstderr: "],
                    "_reads": 0,
                }
            return 201, self._batch(batch_id)
        match = re.fullmatch(r"/batches/(\d+)(?:/(state|log))?", path)
        if not match or int(match.group(1)) not in self.batches:
            return 404, {"msg": f"Session '{match.group(1) if match else path}' not found."}
        batch_id, what = int(match.group(1)), match.group(2)
        batch = self.batches[batch_id]
        if request.method == "DELETE":
            return 200, {"msg": "deleted"}
        if what == "state":
            with self._lock:
                batch["_reads"] += 1
                if batch["_reads"] >= 2:
                    batch["state"] = "success"
                    batch["appId"] = self.livy_apps.get(batch["name"] or "")
                    batch["appInfo"] = {
                        "driverLogUrl": "http://nm:8042/node/containerlogs/container_1/etl",
                        "sparkUiUrl": f"http://rm:8088/proxy/{batch['appId']}/",
                    }
                else:
                    batch["state"] = "running"
            return 200, {"id": batch_id, "state": batch["state"]}
        if what == "log":
            return 200, {"id": batch_id, "from": 0, "total": 2, "log": ["stdout: ", "\nstderr: "]}
        return 200, self._batch(batch_id)

    def _batch(self, batch_id: int) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}


class _Handler(JsonHandler):
    server: FakeSparkCluster

    def _handle(self) -> None:
        body = self.read_json(invalid_as_text=True)
        request = Request(self.command, unquote(self.url_path), self.query(), body)
        with self.server._lock:
            self.server.requests.append(request)
        status, payload = self.server.answer(request)
        if isinstance(payload, str):
            return self.reply_text(status, payload)
        # Jackson's pretty printer, as Spark's REST submission server writes it: `"key" : value`
        separators = (",", " : ") if request.path.startswith("/v1/submissions") else None
        self.reply_json(status, payload, indent=2, separators=separators)

    do_GET = do_POST = do_DELETE = _handle  # noqa: N815


@contextmanager
def fake_spark_cluster() -> Iterator[FakeSparkCluster]:
    with running(FakeSparkCluster()) as server:
        yield server


# ------------------------------------------------------------------------------ spark-submit

_SPARK_SUBMIT = '''#!{python}
"""spark-submit stand-in: prints what the real one prints for the application --name names."""
import json, os, sys, time
plan_file = {plan_file!r}
args = sys.argv[1:]
name = args[args.index("--name") + 1] if "--name" in args else "default-name"
with open(plan_file + ".calls.jsonl", "a") as calls:
    calls.write(json.dumps({{"name": name, "argv": args, "time_ms": int(time.time() * 1000)}}) + "\\n")
with open(plan_file) as f:
    plan = json.load(f)
for line in plan.get(name, {{}}).get("lines", []):
    print(line, flush=True)
sys.exit(plan.get(name, {{}}).get("exit", 0))
'''


def install_spark_submit(folder: Path, plan: dict[str, dict[str, Any]]) -> Path:
    """A `spark-submit` in `folder` printing `plan[name]["lines"]`; returns the plan file."""
    folder.mkdir(parents=True, exist_ok=True)
    plan_file = folder / "spark-submit-plan.json"
    plan_file.write_text(json.dumps(plan))
    script = folder / "spark-submit"
    script.write_text(_SPARK_SUBMIT.format(python=sys.executable, plan_file=str(plan_file)))
    script.chmod(0o755)
    return plan_file


def spark_submit_calls(plan_file: Path, with_time: bool = False) -> dict[str, Any]:
    """Each application name -> the arguments spark-submit was called with (and when, in epoch ms)."""
    calls_file = Path(str(plan_file) + ".calls.jsonl")
    if not calls_file.exists():
        return {}
    calls = [json.loads(line) for line in calls_file.read_text().splitlines() if line]
    return {call["name"]: (call["argv"], call["time_ms"]) if with_time else call["argv"] for call in calls}


def conf_of(argv: list[str]) -> dict[str, str]:
    """The --conf key=value pairs of a spark-submit call."""
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")


def yarn_cluster_lines(app_id: str) -> list[str]:
    """What spark-submit --master yarn --deploy-mode cluster prints (Client's log, waiting to the end)."""
    return [
        "26/01/02 00:00:00 INFO Client: Requesting a new application from cluster with 4 NodeManagers",
        "26/01/02 00:00:00 INFO Client: Setting up container launch context for our AM",
        f"26/01/02 00:00:01 INFO Client: Submitting application {app_id} to ResourceManager",
        f"26/01/02 00:00:01 INFO YarnClientImpl: Submitted application {app_id}",
        f"26/01/02 00:00:02 INFO Client: Application report for {app_id} (state: ACCEPTED)",
        f"26/01/02 00:00:03 INFO Client: Application report for {app_id} (state: RUNNING)",
        f"26/01/02 00:02:00 INFO Client: Application report for {app_id} (state: FINISHED)",
        "26/01/02 00:02:00 INFO Client: ",
        "\t client token: N/A",
        "\t final status: SUCCEEDED",
        f"\t tracking URL: http://rm:8088/proxy/{app_id}/",
        "\t user: etl",
    ]


def kubernetes_cluster_lines(pod: str, app_id: str) -> list[str]:
    """What spark-submit --master k8s://... --deploy-mode cluster prints (LoggingPodStatusWatcherImpl)."""
    status = [
        f"\t pod name: {pod}",
        "\t namespace: spark-jobs",
        f"\t labels: spark-app-name -> etl, spark-app-selector -> {app_id}, spark-role -> driver",
        "\t pod uid: 3f1c0b6e-7d4a-4c39-9d8e-2b7c4f1a9e10",
    ]
    return [
        "26/01/02 00:00:00 INFO KubernetesClientUtils: Spark configuration files loaded from Some(/opt/spark/conf)",
        "26/01/02 00:00:01 INFO LoggingPodStatusWatcherImpl: State changed, new state: ",
        *status,
        "\t phase: Pending",
        f"26/01/02 00:00:01 INFO LoggingPodStatusWatcherImpl: Waiting for application etl with application ID {app_id} and submission ID spark-jobs:{pod} to finish...",
        "26/01/02 00:03:00 INFO LoggingPodStatusWatcherImpl: State changed, new state: ",
        *status,
        "\t phase: Succeeded",
        "\t container status: ",
        "\t\t container name: spark-kubernetes-driver",
        "\t\t container image: apache/spark:3.5.3",
        "\t\t container state: terminated",
        "\t\t container started at: 2026-01-02T00:00:05Z",
        "\t\t container finished at: 2026-01-02T00:03:00Z",
        "\t\t exit code: 0",
        "\t\t termination reason: Completed",
        f"26/01/02 00:03:00 INFO LoggingPodStatusWatcherImpl: Application etl with application ID {app_id} and submission ID spark-jobs:{pod} finished",
        "\t Exit code: 0",
    ]


def standalone_client_lines(app_id: str) -> list[str]:
    """spark-submit --master spark://... in client mode: the driver runs here and logs its app id."""
    return [
        "26/01/02 00:00:00 INFO SparkContext: Running Spark version 3.5.3",
        "26/01/02 00:00:01 INFO StandaloneAppClient$ClientEndpoint: Connecting to master spark://127.0.0.1:7077...",
        f"26/01/02 00:00:01 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID {app_id}",
        f"26/01/02 00:00:01 INFO StandaloneAppClient$ClientEndpoint: Executor added: {app_id}/0 on worker-1",
        "26/01/02 00:01:30 INFO SparkContext: Successfully stopped SparkContext",
    ]


def standalone_cluster_lines(driver_id: str) -> list[str]:
    """spark-submit --master spark://... --deploy-mode cluster: the master takes the driver; only its
    id comes back."""
    return [
        "26/01/02 00:00:00 INFO RestSubmissionClient: Submitting a request to launch an application in spark://127.0.0.1:7077.",
        f"26/01/02 00:00:01 INFO RestSubmissionClient: Submission successfully created as {driver_id}. Polling submission state...",
        f"26/01/02 00:00:01 INFO ClientEndpoint: Driver successfully submitted as {driver_id}",
    ]
