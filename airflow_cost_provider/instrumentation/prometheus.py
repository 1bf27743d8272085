"""What a task's Kubernetes pods used, read from Prometheus: the source OpenCost and Kubecost read too.

One instant query (`GET {prometheus_url}/api/v1/query`; a POST of the same form when it is too long
for a URL) per finished task, evaluated when the task
ends, with range selectors reaching back past the first container's start, for all the task's pods at
once. It reads the metrics the kubelet's cAdvisor exposes, by namespace, pod and container:

- `container_cpu_usage_seconds_total`: the CPU seconds a container used. The counter starts at 0 with
  the container, so its largest value in the window is what the container used up to the last scrape;
  restarts are separate series (their cgroup `id`), summed. (`increase()` over the window would lose
  what was used before the first scrape: a quarter of a two-minute container scraped every 30 s.)
- `container_memory_working_set_bytes`: average (priced, as OpenCost prices memory) and peak (kept).

A Spark driver's executor pods, deleted when the application ends, are found through
kube-state-metrics, whose series outlive them: `kube_pod_owner` names their owner. Spark's default
`direct` pods allocator makes the driver pod the owner (in cluster mode, so that they are collected
with the driver); the `statefulset` allocator creates a StatefulSet `spark-s-<app id>-<resource
profile id>` that owns them, the `deployment` allocator a Deployment `spark-d-<app id>-<resource
profile id>` whose ReplicaSet owns them (`kube_replicaset_owner` names the Deployment): both named
from the application id, the driver's `spark-app-selector` label. `kube_pod_container_resource_requests`
gives their requests and `kube_pod_info` their node; cAdvisor's `container_start_time_seconds` gives
each executor container's start. Pure apart from `query()`: the PromQL text and the reading of its
answer are plain functions.

https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

CPU = "container_cpu_usage_seconds_total"
MEMORY = "container_memory_working_set_bytes"
START = "container_start_time_seconds"
OWNER = "kube_pod_owner"
REPLICASET_OWNER = "kube_replicaset_owner"
REQUESTS = "kube_pod_container_resource_requests"
POD_INFO = "kube_pod_info"
# Spark names an executor pod `<prefix>-exec-<id>` (BasicExecutorFeatureStep; the id is a counter):
# narrows the scan, the owner decides
EXECUTOR_POD = ".+-exec-[0-9]+"
# The `statefulset` and `deployment` pods allocators name their set `spark-s-`/`spark-d-` + the
# application id + `-<resource profile id>` (StatefulSetPodsAllocator, DeploymentPodsAllocator); the
# StatefulSet's pods add `-<ordinal>`, the Deployment's ReplicaSet `-<pod template hash>` and its
# pods `-<hash>-<suffix>`
SET_PREFIXES = {"StatefulSet": "spark-s-", "Deployment": "spark-d-"}
ALLOCATORS = {"Pod": "direct", "StatefulSet": "statefulset", "Deployment": "deployment"}
# Longest query string sent in a URL (proxies commonly refuse request lines past 8 KiB)
MAX_GET_QUERY = 6000
# Before the first container's start: the range is anchored on it, whatever the scrape alignment.
MARGIN_SECONDS = 60
_MEASURE = "measure"
# cAdvisor's pod-level cgroup (container="") and the sandbox ("POD") are not containers of the spec
_CONTAINERS = 'container!="",container!="POD"'


@dataclass
class ContainerMetrics:
    cpu_seconds: Decimal | None = None
    memory_avg_bytes: Decimal | None = None
    memory_peak_bytes: Decimal | None = None
    started: dt.datetime | None = None
    requests: dict[str, Decimal] = field(default_factory=dict)  # cpu (cores), memory (bytes)


@dataclass
class PodMetrics:
    namespace: str
    pod: str
    owner: str | None = None  # an executor's owner: its driver pod, StatefulSet or Deployment
    owner_kind: str | None = None  # Pod, StatefulSet or Deployment
    node: str | None = None
    containers: dict[str, ContainerMetrics] = field(default_factory=dict)


def _text(value: str) -> str:
    """A PromQL double-quoted string's content."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _alternatives(names: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these names (Prometheus anchors its regexes)."""
    return "|".join(re.sub(r"([^A-Za-z0-9_-])", r"\\\1", name) for name in sorted(set(names)))


def _selector(metric: str, matchers: Iterable[str], extra: str) -> str:
    return f"{metric}{{{','.join([*matchers, *([extra] if extra else [])])}}}"


def _tagged(expression: str, measure: str) -> str:
    return f'label_replace({expression}, "{_MEASURE}", "{measure}", "", "")'


def _usage_parts(pods: str, range_: str, extra: str) -> list[tuple[str, str]]:
    """(measure, expression) of the cAdvisor usage of the containers `pods` selects."""
    cpu = _selector(CPU, [pods, _CONTAINERS], extra)
    memory = _selector(MEMORY, [pods, _CONTAINERS], extra)
    by = "by (namespace, pod, container)"
    return [
        (
            "cpu_seconds",
            f"sum {by} (max by (namespace, pod, container, id) (max_over_time({cpu}[{range_}])))",
        ),
        ("memory_avg_bytes", f"max {by} (avg_over_time({memory}[{range_}]))"),
        ("memory_peak_bytes", f"max {by} (max_over_time({memory}[{range_}]))"),
    ]


def _owners(space: str, owners: list[str], applications: list[str], range_: str, extra: str) -> str:
    """Value 1 per executor pod, labelled with its owner (`owner_kind`, `owner_name`): the driver pods
    (the `direct` allocator), or the StatefulSets and Deployments named from the application ids."""
    by = "max by (namespace, pod, owner_kind, owner_name)"
    parts = []
    if owners:
        pod = _selector(
            OWNER, [space, 'owner_kind="Pod"', f'owner_name=~"{_text(_alternatives(owners))}"'], extra
        )
        parts.append(f"{by} (max_over_time({pod}[{range_}]))")
    if applications:
        apps = _text(_alternatives(applications))
        stateful = _selector(
            OWNER,
            [
                space,
                'owner_kind="StatefulSet"',
                f'owner_name=~"{SET_PREFIXES["StatefulSet"]}({apps})-[0-9]+"',
            ],
            extra,
        )
        parts.append(f"{by} (max_over_time({stateful}[{range_}]))")
        # the pod's ReplicaSet, then the Deployment that owns it, which carries the application id
        replicated = _selector(
            OWNER,
            [
                space,
                'owner_kind="ReplicaSet"',
                f'owner_name=~"{SET_PREFIXES["Deployment"]}({apps})-[0-9]+-.+"',
            ],
            extra,
        )
        deployment = _selector(
            REPLICASET_OWNER,
            [space, 'owner_kind="Deployment"', f'owner_name=~"{SET_PREFIXES["Deployment"]}({apps})-[0-9]+"'],
            extra,
        )
        parts.append(
            f"{by} (label_replace(max_over_time({replicated}[{range_}]), "
            '"replicaset", "$1", "owner_name", "(.+)") * on (namespace, replicaset) group_left '
            "(owner_kind, owner_name) max by (namespace, replicaset, owner_kind, owner_name) "
            f"(max_over_time({deployment}[{range_}])))"
        )
    return " or ".join(parts)


def build_query(
    pods: Mapping[str, Iterable[str]],
    drivers: Mapping[str, Iterable[str]],
    range_seconds: int,
    extra_selector: str = "",
    applications: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """One PromQL expression for every measure of the pods (namespace -> names) and of the executor
    pods of the drivers (namespace -> driver pod names) and of the Spark applications (namespace ->
    application ids, for the `statefulset` and `deployment` allocators); each answer carries its
    `measure` label."""
    range_ = f"{int(range_seconds)}s"
    applications = applications or {}
    parts: list[str] = []
    for namespace in sorted(pods):
        names = sorted(set(pods[namespace]))
        if not names:
            continue
        where = f'namespace="{_text(namespace)}",pod=~"{_text(_alternatives(names))}"'
        parts += [
            _tagged(expression, measure)
            for measure, expression in _usage_parts(where, range_, extra_selector)
        ]
    for namespace in sorted(set(drivers) | set(applications)):
        owners = sorted(set(drivers.get(namespace) or ()))
        apps = sorted(set(applications.get(namespace) or ()))
        if not owners and not apps:
            continue
        space = f'namespace="{_text(namespace)}"'
        names = EXECUTOR_POD
        if apps:  # a StatefulSet's pods and a Deployment's, named from the application id
            names += f"|spark-[sd]-({_text(_alternatives(apps))})-.+"
        where = f'{space},pod=~"{names}"'
        owner = _owners(space, owners, apps, range_, extra_selector)
        start = _selector(START, [where, _CONTAINERS], extra_selector)
        requests = _selector(REQUESTS, [where, 'resource=~"cpu|memory"'], extra_selector)
        info = _selector(POD_INFO, [where], extra_selector)
        executor_parts = _usage_parts(where, range_, extra_selector) + [
            ("start_seconds", f"min by (namespace, pod, container) (min_over_time({start}[{range_}]))"),
            (
                "request",
                f"max by (namespace, pod, container, resource) (max_over_time({requests}[{range_}]))",
            ),
            ("node", f"max by (namespace, pod, node) (max_over_time({info}[{range_}]))"),
        ]
        measures = " or ".join(
            _tagged(expression, f"executor_{measure}") for measure, expression in executor_parts
        )
        # the owner once for all the measures: value 1 per executor pod, carrying its owner's kind
        # and name onto each of the pod's answers
        parts.append(f"({measures}) * on (namespace, pod) group_left (owner_kind, owner_name) ({owner})")
    return " or ".join(parts)


def executor_allocator(metrics: PodMetrics, driver: str, application: str | None) -> str | None:
    """The Spark pods allocator (`direct`, `statefulset`, `deployment`) under which the driver pod
    (of that application id) made this executor pod; None when the pod is not one of its executors."""
    if metrics.owner is None:
        return None
    kind = metrics.owner_kind or "Pod"
    if kind == "Pod":
        return ALLOCATORS[kind] if metrics.owner == driver else None
    prefix = SET_PREFIXES.get(kind)
    if not prefix or not application:
        return None
    # the set of this application: its id, then the resource profile id
    mine = re.fullmatch(f"{re.escape(prefix + application)}-[0-9]+", metrics.owner)
    return ALLOCATORS[kind] if mine else None


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number >= 0 else None


def read_answer(answer: Mapping[str, Any]) -> dict[tuple[str, str], PodMetrics]:
    """(namespace, pod) -> its metrics, from the API's answer to build_query's expression."""
    if answer.get("status") != "success":
        raise ValueError(
            f"Prometheus answered {answer.get('errorType') or 'error'}: {answer.get('error') or answer}"
        )
    data = answer.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"Prometheus answered a {data.get('resultType')!r}, not a vector")
    pods: dict[tuple[str, str], PodMetrics] = {}
    for sample in data.get("result") or []:
        labels = sample.get("metric") or {}
        value = sample.get("value") or [None, None]
        measure = str(labels.get(_MEASURE) or "").removeprefix("executor_")
        namespace, pod = labels.get("namespace"), labels.get("pod")
        number = _number(value[1] if len(value) > 1 else None)
        if not namespace or not pod or number is None:
            continue
        metrics = pods.setdefault((namespace, pod), PodMetrics(namespace, pod))
        if labels.get("owner_name"):
            metrics.owner = str(labels["owner_name"])
            metrics.owner_kind = str(labels.get("owner_kind") or "") or None
        if measure == "node":
            metrics.node = str(labels.get("node") or "") or None
            continue
        container = str(labels.get("container") or "")
        if not container:
            continue
        found = metrics.containers.setdefault(container, ContainerMetrics())
        if measure == "cpu_seconds":
            found.cpu_seconds = number
        elif measure == "memory_avg_bytes":
            found.memory_avg_bytes = number
        elif measure == "memory_peak_bytes":
            found.memory_peak_bytes = number
        elif measure == "start_seconds" and number > 0:
            found.started = dt.datetime.fromtimestamp(float(number), tz=dt.timezone.utc)
        elif measure == "request" and labels.get("resource") in ("cpu", "memory"):
            found.requests[str(labels["resource"])] = number
    return pods


def window(start: dt.datetime, end: dt.datetime, now: dt.datetime) -> tuple[float, int]:
    """(evaluation time, range in whole seconds): evaluated at the task's end (or at the last
    container's end, if later), reaching MARGIN_SECONDS before the first container's start."""
    at = max(now, end)
    return at.timestamp(), math.ceil((at - start).total_seconds()) + MARGIN_SECONDS


def query(url: str, expression: str, at: float, timeout: float) -> dict[tuple[str, str], PodMetrics]:
    """The one call: the pods' metrics, or an exception saying why not."""
    import requests

    from airflow_cost_provider.capture.safety import suppress

    params = {"query": expression, "time": f"{at:.3f}"}
    with suppress():
        if len(urlencode(params)) <= MAX_GET_QUERY:
            response = requests.get(
                f"{url}/api/v1/query", params=params, timeout=timeout, headers={"Accept": "application/json"}
            )
        else:  # the API takes the same form in a POST body, past what proxies allow in a URL
            response = requests.post(
                f"{url}/api/v1/query", data=params, timeout=timeout, headers={"Accept": "application/json"}
            )
    if response.status_code != 200:
        try:
            detail = response.json().get("error") or ""
        except ValueError:
            detail = ""
        raise LookupError(f"HTTP {response.status_code}{': ' + str(detail)[:200] if detail else ''}")
    return read_answer(response.json())
