"""A Kubernetes API server's pod endpoints on 127.0.0.1, for tests.

It answers what the cncf-kubernetes provider's clients send (the `kubernetes` client for the operator,
`kubernetes_asyncio` for the deferrable trigger), in the API's own JSON shapes: create, list (by label
selector), read, patch and delete pods, a pod's log, its events (list and watch), and nodes. Each pod
runs to a planned outcome chosen by the longest plan name its pod name starts with: Pending for a
while, then Running, then Succeeded (or Failed), its containers' `state.terminated.startedAt` and
`finishedAt` a planned number of seconds apart (so costs do not depend on the machine), and optionally
gone (404) once read terminal a number of times, like a pod the cluster garbage-collected. A node can
answer slowly.

https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.http_recorder import serving
from tests.support.json_http import JsonHandler, Request

_POD = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")
_NODE = re.compile(r"^/api/v1/nodes/(?P<name>[^/]+)$")
_SPARK_APPS = re.compile(
    r"^/apis/sparkoperator\.k8s\.io/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/sparkapplications"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)
_FILTER_POD = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class PodPlan:
    pending_seconds: float = 0.3  # wall time Pending after creation
    running_seconds: float = 1.0  # wall time Running after that
    reported_seconds: int = 120  # finishedAt - startedAt that the status reports
    exit_code: int = 0
    node: str = "node-a"
    # gone (404) once its terminal status was read this many times, as a pod the cluster
    # garbage-collected; None: kept until deleted
    vanish_after_terminal_reads: int | None = None
    # the costs OpenCost's /allocation reports for the pod (cpuCost, cpuCostAdjustment, ramCost, ...);
    # None: OpenCost does not know the pod
    opencost: dict[str, float] | None = None


@dataclass
class _Pod:
    resource: dict[str, Any]
    plan: PodPlan
    created: float
    started_at: dt.datetime
    terminal_reads: int = 0
    gone: bool = False


@dataclass
class FakeKubernetes:
    port: int = 0
    plans: dict[str, PodPlan] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    slow_nodes: dict[str, float] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)
    # SparkApplications (the Spark operator's custom resource) by (namespace, name), with their app id
    spark_apps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deleted_spark_apps: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[_Pod] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _uids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def connection(self, kubeconfig: Path) -> dict[str, Any]:
        return {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(kubeconfig), "in_cluster": False, "namespace": "default"},
        }

    def created(self) -> list[dict[str, Any]]:
        """The pod bodies the server received on create, in order."""
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith("/pods")]

    def plan_for(self, name: str) -> PodPlan:
        matching = [prefix for prefix in self.plans if name.startswith(prefix)]
        return self.plans[max(matching, key=len)] if matching else PodPlan()

    # ------------------------------------------------------------------------------- pod lifecycle

    def _status(self, pod: _Pod) -> dict[str, Any]:
        elapsed = time.monotonic() - pod.created
        plan = pod.plan
        started = pod.started_at
        finished = started + dt.timedelta(seconds=plan.reported_seconds)
        names = [c["name"] for c in pod.resource["spec"].get("containers", [])]
        if elapsed < plan.pending_seconds:
            phase = "Pending"
            states = {n: {"waiting": {"reason": "ContainerCreating"}} for n in names}
        elif elapsed < plan.pending_seconds + plan.running_seconds:
            phase = "Running"
            states = {n: {"running": {"startedAt": _rfc3339(started)}} for n in names}
        else:
            phase = "Succeeded" if plan.exit_code == 0 else "Failed"
            states = {
                n: {
                    "terminated": {
                        "exitCode": plan.exit_code,
                        "reason": "Completed" if plan.exit_code == 0 else "Error",
                        "startedAt": _rfc3339(started),
                        "finishedAt": _rfc3339(finished),
                        "containerID": f"containerd://{pod.resource['metadata']['uid']}-{n}",
                    }
                }
                for n in names
            }
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "10.0.0.10",
            "podIP": "10.1.0.20",
            "qosClass": "Burstable",
            "startTime": pod.resource["metadata"]["creationTimestamp"],
            "containerStatuses": [
                {
                    "name": n,
                    "image": "busybox",
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": states[n],
                    "lastState": {},
                }
                for n in names
            ],
        }
        return status

    def _view(self, pod: _Pod) -> dict[str, Any] | None:
        if pod.gone:
            return None
        resource = copy.deepcopy(pod.resource)
        resource["status"] = self._status(pod)
        if resource["status"]["phase"] in ("Succeeded", "Failed"):
            pod.terminal_reads += 1
            limit = pod.plan.vanish_after_terminal_reads
            if limit is not None and pod.terminal_reads > limit:
                pod.gone = True
                return None
        return resource

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        resource = copy.deepcopy(body)
        metadata = resource.setdefault("metadata", {})
        metadata.setdefault("namespace", namespace)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = f"{metadata['generateName']}{next(self._uids):05d}"
        plan = self.plan_for(metadata["name"])
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        metadata.update(
            uid=f"00000000-0000-4000-8000-{next(self._uids):012d}",
            creationTimestamp=_rfc3339(now),
            resourceVersion=str(next(self._uids)),
        )
        resource.setdefault("spec", {})["nodeName"] = plan.node
        pod = _Pod(resource, plan, time.monotonic(), now + dt.timedelta(seconds=1))
        self.pods[(namespace, metadata["name"])] = pod
        answer = copy.deepcopy(resource)
        answer["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        return answer

    def create_spark_app(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """What the Spark operator does with a new SparkApplication: spark-submit starts the driver pod
        `<name>-driver`, labelled as Spark labels it (`spark-role`, `spark-app-selector`) beside the
        spec's driver labels, its container `spark-kubernetes-driver` requesting the spec's cores and
        memory plus overhead. (Its executor pods the test gives to Prometheus: Spark deletes them.)"""
        resource = copy.deepcopy(body)
        metadata = resource.setdefault("metadata", {})
        name = metadata["name"]
        driver = resource["spec"].get("driver") or {}
        app_id = f"spark-{next(self._uids):032x}"
        memory_mib = _mib(str(driver.get("memory", "1g"))) + _mib(str(driver.get("memoryOverhead", "384m")))
        self.create(
            namespace,
            {
                "metadata": {
                    "name": f"{name}-driver",
                    "labels": {
                        **(driver.get("labels") or {}),
                        "spark-role": "driver",
                        "spark-app-selector": app_id,
                        "spark-app-name": name,
                        "sparkoperator.k8s.io/app-name": name,
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "spark-kubernetes-driver",
                            "image": resource["spec"].get("image"),
                            "resources": {
                                "requests": {"cpu": str(driver.get("cores", 1)), "memory": f"{memory_mib}Mi"},
                                "limits": {"memory": f"{memory_mib}Mi"},
                            },
                        }
                    ]
                },
            },
        )
        metadata.update(namespace=namespace, uid=f"00000000-0000-4000-8000-{next(self._uids):012d}")
        resource["status"] = {"sparkApplicationId": app_id, "applicationState": {"state": "RUNNING"}}
        self.spark_apps[(namespace, name)] = resource
        return resource

    def allocation(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """OpenCost's /allocation answer (aggregate=namespace,pod, accumulate=true): one set, keyed
        `namespace/pod`, for the pods named by `filter=pod:"a","b"` that have planned costs, plus the
        cluster's __idle__ entry. https://www.opencost.io/docs/integrations/api"""
        wanted = set(_FILTER_POD.findall(query.get("filter", [""])[0]))
        start, end = query["window"][0].split(",")
        entries: dict[str, Any] = {
            "__idle__": {"name": "__idle__", "properties": {"cluster": "default-cluster"}, "totalCost": 1.5}
        }
        with self.lock:
            pods = [pod for (ns, name), pod in self.pods.items() if name in wanted] + [
                pod for pod in self.deleted if pod.resource["metadata"]["name"] in wanted
            ]
        for pod in pods:
            costs = pod.plan.opencost
            if costs is None:
                continue
            metadata = pod.resource["metadata"]
            hours = pod.plan.reported_seconds / 3600
            requests = (pod.resource["spec"]["containers"][0].get("resources") or {}).get("requests") or {}
            cores = _cores(requests.get("cpu", "0"))
            ram = _bytes(requests.get("memory", "0"))
            key = f"{metadata['namespace']}/{metadata['name']}"
            entries[key] = {
                "name": key,
                "properties": {
                    "cluster": "default-cluster",
                    "node": pod.plan.node,
                    "namespace": metadata["namespace"],
                    "pod": metadata["name"],
                    "labels": metadata.get("labels") or {},
                },
                "window": {"start": start, "end": end},
                "start": _rfc3339(pod.started_at),
                "end": _rfc3339(pod.started_at + dt.timedelta(seconds=pod.plan.reported_seconds)),
                "minutes": pod.plan.reported_seconds / 60,
                "cpuCores": cores,
                "cpuCoreRequestAverage": cores,
                "cpuCoreUsageAverage": cores / 4,
                "cpuCoreHours": cores * hours,
                "cpuCost": 0.0,
                "cpuCostAdjustment": 0.0,
                "cpuEfficiency": 0.25,
                "gpuCount": 0,
                "gpuHours": 0,
                "gpuCost": 0,
                "gpuCostAdjustment": 0,
                "networkTransferBytes": 0,
                "networkReceiveBytes": 0,
                "networkCost": 0,
                "networkCostAdjustment": 0,
                "loadBalancerCost": 0,
                "loadBalancerCostAdjustment": 0,
                "pvBytes": 0,
                "pvByteHours": 0,
                "pvCost": 0,
                "pvCostAdjustment": 0,
                "ramBytes": ram,
                "ramByteRequestAverage": ram,
                "ramByteUsageAverage": ram / 2,
                "ramByteHours": ram * hours,
                "ramCost": 0.0,
                "ramCostAdjustment": 0.0,
                "ramEfficiency": 0.5,
                "sharedCost": 0,
                "externalCost": 0,
                "totalCost": 0.0,
                "totalEfficiency": 0.3,
                "rawAllocationOnly": None,
            }
            entries[key].update(costs)
            entries[key]["totalCost"] = sum(
                entries[key][f] for f in ("cpuCost", "gpuCost", "ramCost", "pvCost", "networkCost")
            ) + sum(entries[key][f] for f in ("cpuCostAdjustment", "ramCostAdjustment"))
        return {"code": 200, "data": [entries]}


def _cores(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _bytes(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(text[:-2]) * units[text[-2:]] if text[-2:] in units else float(text)


def _mib(text: str) -> int:
    """A Spark memory size (512m, 4g) in MiB."""
    number, unit = int(text[:-1]), text[-1].lower()
    return number * 1024 if unit == "g" else number


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(JsonHandler):
    server_version = "fake-kubernetes/1"
    fake: FakeKubernetes

    def _handle(self) -> None:
        method, path, query = self.command, self.url_path, self.query()
        body = self.read_json(invalid_as_text=True)
        fake = self.fake
        with fake.lock:
            fake.requests.append(Request(method, path, query, body))
        if path == "/allocation":
            return self.reply_json(200, fake.allocation(query))
        if match := _NODE.match(path):
            name = match["name"]
            delay = fake.slow_nodes.get(name)
            if delay:
                time.sleep(delay)
            if name not in fake.nodes:
                return self.reply_json(404, _status(404, "NotFound", f'nodes "{name}" not found'))
            return self.reply_json(
                200,
                {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": fake.nodes[name]}},
            )
        if match := _EVENTS.match(path):
            if query.get("watch", ["false"])[0].lower() in ("true", "1"):
                return self.reply(200, b"", self.json_content_type)  # a watch that ends at once
            return self.reply_json(
                200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}
            )
        if match := _SPARK_APPS.match(path):
            key = (match["ns"], match["name"])
            if match["name"] is None and method == "POST":
                with fake.lock:
                    return self.reply_json(201, fake.create_spark_app(match["ns"], body))
            if key not in fake.spark_apps:
                return self.reply_json(
                    404, _status(404, "NotFound", f'sparkapplications "{match["name"]}" not found')
                )
            if method == "DELETE":
                with fake.lock:
                    fake.deleted_spark_apps.append(fake.spark_apps.pop(key))
                    driver = fake.pods.pop((match["ns"], f"{match['name']}-driver"), None)
                    if driver is not None:
                        fake.deleted.append(driver)
                return self.reply_json(200, _status(200, "Success", "deleted") | {"status": "Success"})
            return self.reply_json(200, fake.spark_apps[key])
        match = _POD.match(path)
        if not match:
            return self.reply_json(404, _status(404, "NotFound", f"no route {path}"))
        namespace, name, sub = match["ns"], match["name"], match["sub"]
        if name is None:
            if method == "POST":
                with fake.lock:
                    return self.reply_json(201, fake.create(namespace, body))
            selector = query.get("labelSelector", [""])[0]
            with fake.lock:
                items = [
                    view
                    for (ns, _), pod in fake.pods.items()
                    if ns == namespace and _matches(pod.resource["metadata"].get("labels") or {}, selector)
                    for view in [fake._view(pod)]
                    if view is not None
                ]
            return self.reply_json(
                200,
                {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items},
            )
        with fake.lock:
            pod = fake.pods.get((namespace, name))
        if pod is None or pod.gone:
            return self.reply_json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        if sub == "log":
            # a followed log ends when the container does
            if query.get("follow", ["false"])[0].lower() == "true":
                deadline = pod.created + pod.plan.pending_seconds + pod.plan.running_seconds
                time.sleep(max(0.0, deadline - time.monotonic()))
            stamp = _rfc3339(pod.started_at).replace("Z", ".000000000Z")
            lines = "" if "timestamps" not in query else f"{stamp} "
            return self.reply_text(200, f"{lines}hello from {name}\n")
        if method == "DELETE":
            with fake.lock:
                view = fake._view(pod) or copy.deepcopy(pod.resource)
                fake.deleted.append(fake.pods.pop((namespace, name)))
            return self.reply_json(200, view)
        if method == "PATCH":
            with fake.lock:
                labels = ((body or {}).get("metadata") or {}).get("labels") or {}
                pod.resource["metadata"].setdefault("labels", {}).update(labels)
                view = fake._view(pod)
            return (
                self.reply_json(200, view) if view else self.reply_json(404, _status(404, "NotFound", name))
            )
        with fake.lock:
            view = fake._view(pod)
        if view is None:
            return self.reply_json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        return self.reply_json(200, view)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815


@contextmanager
def fake_kubernetes(
    plans: dict[str, PodPlan] | None = None,
    nodes: dict[str, dict[str, str]] | None = None,
    slow_nodes: dict[str, float] | None = None,
) -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes(plans=dict(plans or {}), nodes=dict(nodes or {}), slow_nodes=dict(slow_nodes or {}))
    with serving(_Handler, fake):
        yield fake
