"""Pods started by `KubernetesPodOperator` (normal and deferrable) and `@task.kubernetes`.

Tagging: `build_pod_request_obj` returns the pod the operator will create; the task's identity labels
Airflow does not put itself (the OpenLineage run id, the team, the cost labels) are added to it,
sanitised as Airflow sanitises its own labels (tagging/kubernetes.py).

Capture: `get_or_create_pod` names each pod the task runs; `cleanup` (reached from the synchronous
path's `finally` and from the deferrable path's `trigger_reentry`) receives the pod as the operator last
read it, with its containers' requests, limits and start and finish times. That pod, reduced to what
pricing needs (never its environment, command or labels), is kept on the pending item: no call of our
own is made inside the task. At finalize, within its budget, the node each pod ran on is read once per
process for its instance type and pool labels, and a pod the task created but never cleaned up (the task
failed before, or the pod was already deleted when a deferred task resumed) is read from the API; one
that cannot be read is kept unpriced with the reason. With `prometheus_url`, one query reads the
containers' measured usage and a Spark driver's executor pods, deleted before the task ends
(instrumentation/prometheus.py); with `opencost_url`, OpenCost's allocation replaces the estimate.
Pricing is pricing/kubernetes.py: per container, max(request, usage) x running time x node rate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation import prometheus
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    LookupBudget,
    guarded_step,
    task_session,
)
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.kubernetes import (
    GIB,
    QUANTITY_QUANTUM,
    SOURCE,
    ContainerUsage,
    allocation_usages,
    allocations_by_pod,
    parse_time,
    pod_usages,
    slim_pod,
)
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.pricing.money import EXACT
from airflow_cost_provider.tagging.kubernetes import pod_labels

OPERATOR_MODULE = "airflow.providers.cncf.kubernetes.operators.pod"
# Seconds one API call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 5.0
LOOKUP_SHARE = 0.7

# (connection, in_cluster, config file, context, node name) -> its labels, or why they are not known
_nodes: dict[tuple[Any, ...], tuple[dict[str, str] | None, str | None]] = {}
_nodes_lock = threading.Lock()


@dataclasses.dataclass
class KubernetesPod:
    """A pod the task ran; plain values only, so it survives a deferral."""

    namespace: str
    name: str
    conn_id: str | None = None
    in_cluster: bool | None = None
    config_file: str | None = None
    cluster_context: str | None = None
    operator: str = "KubernetesPodOperator"
    pod: dict[str, Any] | None = None  # slim_pod() of the pod as the task last read it
    observed_at: str | None = None
    node_labels: dict[str, str] | None = None
    node_error: str | None = None
    # a Spark driver pod (label spark-role=driver): its executor pods are priced from Prometheus
    spark_driver: bool = False
    spark_app_id: str | None = None
    source: str = SOURCE

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def keep(self, pod: Mapping[str, Any]) -> None:
        """The pod (the API's JSON shape) as last read: what pricing needs, and whether it is a Spark
        driver (its labels are not kept)."""
        self.pod = slim_pod(pod)
        self.observed_at = dt.datetime.now(dt.timezone.utc).isoformat()
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get("spark-role") == "driver":
            self.spark_driver = True
            self.spark_app_id = str(labels.get("spark-app-selector") or "") or None

    def context(self) -> dict[str, Any]:
        context: dict[str, Any] = {"namespace": self.namespace, "pod": self.name, "operator": self.operator}
        if self.spark_app_id:
            context["spark_app_id"] = self.spark_app_id
        return context

    def unresolved(self, reason: str, metric: str = "pod_time", part: str = "", **extra: Any) -> Usage:
        return Usage(
            SOURCE,
            metric,
            Decimal(0),
            "second",
            f"{self.namespace}/{self.name}{part}",
            end_time=dt.datetime.now(dt.timezone.utc),
            attributes={**self.context(), **extra, UNPRICED_HINT_ATTRIBUTE: reason},
        )

    def executors_unresolved(self, reason: str) -> Usage:
        """The executor pods of a Spark driver that could not be priced, kept with the reason."""
        return self.unresolved(reason, "executor_pod_time", "/executors", spark_role="executor")


@functools.cache
def _serializer() -> Any:
    from kubernetes.client import ApiClient

    return ApiClient()


def _to_json(pod: Any) -> dict[str, Any]:
    """A V1Pod (or the dict the API returned) as the API's JSON shape (camelCase, times as text)."""
    if isinstance(pod, Mapping):
        return dict(pod)
    return _serializer().sanitize_for_serialization(pod)


def _api_error(error: BaseException) -> str:
    status = getattr(error, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(error, 'reason', '') or ''}".strip()
    return f"{type(error).__name__}: {error}"


def _node_labels(
    client: Any, cluster: tuple[Any, ...], node: str | None, timeout: float
) -> tuple[dict[str, str] | None, str | None]:
    """The labels of the node a pod ran on (instance type, pool), or why they could not be read (a
    service account without `get nodes` is common: the default rate applies then). Kept per cluster
    and node for the process, except a failure that may pass (a timeout, a refused connection)."""
    if not node:
        return None, None
    key = (*cluster, node)
    with _nodes_lock:
        if key in _nodes:
            return _nodes[key]
    try:
        with suppress():
            answer = client.read_node(node, _request_timeout=timeout)
        labels = dict(getattr(getattr(answer, "metadata", None), "labels", None) or {})
        found: tuple[dict[str, str] | None, str | None] = (labels, None)
    except Exception as error:
        found = (None, f"node {node} not readable: {_api_error(error)}")
        if getattr(error, "status", None) not in (401, 403, 404):
            return found
    with _nodes_lock:
        _nodes[key] = found
    return found


def clear_caches() -> None:
    with _nodes_lock:
        _nodes.clear()


REQUESTS_ONLY = "none (requests only)"


def item_usages(
    item: KubernetesPod,
    measured: Mapping[str, ContainerUsage] | None = None,
    note: Mapping[str, Any] | None = None,
) -> list[Usage]:
    """The pod's usage from what the task read of it (and its containers' measured usage, when a
    metrics source knows them); unpriced with the reason where nothing was read."""
    if item.pod is None:
        return [item.unresolved("the pod's status was never read")]
    observed = parse_time(item.observed_at) or dt.datetime.now(dt.timezone.utc)
    extra: dict[str, Any] = {"operator": item.operator, "usage_source": REQUESTS_ONLY, **dict(note or {})}
    if item.spark_driver:
        extra["spark_role"] = "driver"
        if item.spark_app_id:
            extra["spark_app_id"] = item.spark_app_id
    if item.node_error:
        extra["node_labels_error"] = item.node_error
    return pod_usages(
        item.pod, observed, node_labels=item.node_labels, measured=measured, extra_attributes=extra
    )


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def _client(item: KubernetesPod) -> Any:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(
        conn_id=item.conn_id,
        in_cluster=item.in_cluster,
        config_file=item.config_file,
        cluster_context=item.cluster_context,
    )
    client = hook.core_v1_client
    # one attempt per call: urllib3 would otherwise retry a timed-out read three times, four timeouts
    # in all, past the finalize budget
    pool_manager = getattr(getattr(client.api_client, "rest_client", None), "pool_manager", None)
    if pool_manager is not None:
        pool_manager.connection_pool_kw["retries"] = False
    return client


def _cluster(item: KubernetesPod) -> tuple[Any, ...]:
    return (item.conn_id, item.in_cluster, item.config_file, item.cluster_context)


def _read(item: KubernetesPod, client: Any, budget: _Budget) -> None:
    """Read a pod the task never saw finish, within the budget."""
    pod = client.read_namespaced_pod(item.name, item.namespace, _request_timeout=budget.timeout())
    item.keep(_to_json(pod))


def resolve_pods(items: list[KubernetesPod], timeout_seconds: float) -> list[Usage]:
    """One usage set per pod (the same pod named twice, e.g. before and after a deferral, counts once,
    the copy that read its status winning); a pod not read by the task is read now, and the node of
    each pod once, for its instance type and pool."""
    budget = _Budget(timeout_seconds)
    unique: dict[tuple[str, str], KubernetesPod] = {}
    for item in items:
        known = unique.get(item.key)
        if known is None or (known.pod is None and item.pod is not None):
            unique[item.key] = item
    clients: dict[tuple[Any, ...], Any] = {}

    def client_of(item: KubernetesPod) -> Any:
        key = _cluster(item)
        if key not in clients:
            clients[key] = _client(item)
        return clients[key]

    usages: list[Usage] = []
    estimated: dict[tuple[str, str], list[Usage]] = {}
    for item in unique.values():
        if item.pod is None:
            try:
                _read(item, client_of(item), budget)
            except Exception as error:
                if getattr(error, "status", None) == 404:
                    reason = "the pod was already deleted before its status could be read"
                else:
                    reason = f"reading the pod failed: {_api_error(error)}"
                usages.append(item.unresolved(reason))
                continue
        node = (item.pod.get("spec") or {}).get("nodeName")
        if node and item.node_labels is None and item.node_error is None:
            try:
                item.node_labels, item.node_error = _node_labels(
                    client_of(item), _cluster(item), node, budget.timeout()
                )
            except Exception as error:  # no time left, or no client: the default rate applies
                item.node_error = f"node {node} not read: {_api_error(error)}"
        try:
            estimated[item.key] = item_usages(item)
        except Exception as error:  # a pod shape we cannot read: keep it, unpriced
            usages.append(item.unresolved(f"cannot price the pod: {type(error).__name__}: {error}"))
    drivers = [unique[key] for key in estimated if unique[key].spark_driver]
    if estimated and conf.prometheus_url():
        estimated, executors = _measured(unique, estimated, budget, client_of)
        usages += executors
    else:
        usages += [
            item.executors_unresolved(
                "Spark deleted its executor pods when the application ended: set [cost_provider] "
                "prometheus_url to price them from their metrics"
            )
            for item in drivers
        ]
    if estimated and conf.opencost_url():
        estimated = _allocated(estimated, budget)
    return usages + [usage for found in estimated.values() for usage in found]


# ---------------------------------------------------------------------------------- Prometheus


def _span(usages: Iterable[Usage]) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    found = list(usages)
    start = min((u.start_time for u in found if u.start_time), default=now - dt.timedelta(hours=1))
    end = max((u.end_time for u in found if u.end_time), default=now)
    return start, end


def _container_usage(metrics: prometheus.ContainerMetrics, url: str) -> ContainerUsage:
    attributes: dict[str, Any] = {"usage_source_url": f"{url}/api/v1/query"}
    if metrics.cpu_seconds is not None:
        attributes["cpu_usage_seconds"] = str(metrics.cpu_seconds)
    if metrics.memory_peak_bytes is not None:
        attributes["memory_peak_GiB"] = str(
            EXACT.divide(metrics.memory_peak_bytes, GIB).quantize(QUANTITY_QUANTUM, context=EXACT)
        )
    if metrics.cpu_seconds is None and metrics.memory_avg_bytes is None:
        return ContainerUsage(source=REQUESTS_ONLY, attributes={"prometheus": NO_SAMPLES})
    return ContainerUsage(
        cpu_seconds=metrics.cpu_seconds,
        memory_bytes=metrics.memory_avg_bytes,
        source="prometheus",
        attributes=attributes,
    )


NO_SAMPLES = (
    "Prometheus has no samples of the container in the task's window (it ran shorter than a scrape "
    "interval, or is not scraped): requests x running time kept"
)


def _measured(
    items: Mapping[tuple[str, str], KubernetesPod],
    estimated: dict[tuple[str, str], list[Usage]],
    budget: _Budget,
    client_of: Callable[[KubernetesPod], Any],
) -> tuple[dict[tuple[str, str], list[Usage]], list[Usage]]:
    """One instant query for all the task's pods (and its Spark drivers' executor pods): each
    container's measured usage joins its requests in max(request, usage); a container Prometheus has
    no samples of, or a query that fails, keeps the requests with why."""
    url, extra = conf.prometheus_url(), conf.prometheus_selector()
    read = {key: items[key] for key in estimated if items[key].pod is not None}
    drivers = [item for item in read.values() if item.spark_driver]
    if not read:
        return estimated, []
    pods: dict[str, set[str]] = {}
    owners: dict[str, set[str]] = {}
    applications: dict[str, set[str]] = {}
    for namespace, name in read:
        pods.setdefault(namespace, set()).add(name)
    for item in drivers:
        owners.setdefault(item.namespace, set()).add(item.name)
        if item.spark_app_id:  # the statefulset and deployment allocators name their sets from it
            applications.setdefault(item.namespace, set()).add(item.spark_app_id)
    start, end = _span(u for key in read for u in estimated[key])
    at, range_seconds = prometheus.window(start, end, dt.datetime.now(dt.timezone.utc))
    try:
        found = prometheus.query(
            url,
            prometheus.build_query(pods, owners, range_seconds, extra, applications),
            at,
            budget.timeout(),
        )
    except Exception as error:
        why = f"Prometheus /api/v1/query failed ({_api_error(error)}): requests x running time kept"
        noted = {
            key: _noted(usages, why, "prometheus") if key in read else usages
            for key, usages in estimated.items()
        }
        return noted, [
            item.executors_unresolved(why.replace("requests x running time kept", "not priced"))
            for item in drivers
        ]
    result = dict(estimated)
    for key, item in read.items():
        metrics = found.get(key)
        spec = item.pod.get("spec") or {}
        names = [
            str(c.get("name")) for kind in ("initContainers", "containers") for c in spec.get(kind) or []
        ]
        known = metrics.containers if metrics else {}
        measured = {
            name: _container_usage(known[name], url)
            if name in known
            else ContainerUsage(source=REQUESTS_ONLY, attributes={"prometheus": NO_SAMPLES})
            for name in names
        }
        note = {} if metrics else {"prometheus": NO_SAMPLES}
        try:
            result[key] = item_usages(item, measured, note)
        except Exception as error:  # keep the estimate: it priced already
            result[key] = _noted(
                estimated[key],
                f"cannot use Prometheus' answer: {type(error).__name__}: {error}",
                "prometheus",
            )
    executors: list[Usage] = []
    for driver in drivers:
        try:
            executors += _executor_usages(driver, found, result[driver.key], url, budget, client_of)
        except Exception as error:  # an answer we cannot read: keep them, unpriced
            executors.append(
                driver.executors_unresolved(
                    f"cannot price the executor pods: {type(error).__name__}: {error}"
                )
            )
    return result, executors


def _executor_usages(
    driver: KubernetesPod,
    found: Mapping[tuple[str, str], prometheus.PodMetrics],
    driver_usages: list[Usage],
    url: str,
    budget: _Budget,
    client_of: Callable[[KubernetesPod], Any],
) -> list[Usage]:
    """The executor pods of a driver (owned by it, or by its application's StatefulSet or
    Deployment), priced as pods: their requests (kube-state-metrics) from their container's start to
    the driver's end (executors stop with the application), with their measured usage."""
    pods = {
        m.pod: (m, allocator)
        for m in found.values()
        if m.namespace == driver.namespace
        and (allocator := prometheus.executor_allocator(m, driver.name, driver.spark_app_id))
    }
    if not pods:
        return [
            driver.executors_unresolved(
                f"Prometheus has no executor pods owned by {driver.name} or by its application's "
                "StatefulSet or Deployment in the task's window (kube-state-metrics' kube_pod_owner "
                "is needed to find them)"
            )
        ]
    driver_start, driver_end = _span(driver_usages)
    usages: list[Usage] = []
    for _, (metrics, allocator) in sorted(pods.items()):
        labels, error = None, None
        if metrics.node:
            try:
                labels, error = _node_labels(
                    client_of(driver), _cluster(driver), metrics.node, budget.timeout()
                )
            except Exception as failure:  # no time left, or no client: the default rate applies
                error = f"node {metrics.node} not read: {_api_error(failure)}"
        extra: dict[str, Any] = {
            **driver.context(),
            "pod": metrics.pod,
            "spark_role": "executor",
            "driver_pod": driver.name,
            "spark_pods_allocator": allocator,
            "running_time": "its container's start (container_start_time_seconds) to the driver's end",
        }
        if error:
            extra["node_labels_error"] = error
        pod, measured = _executor_pod(metrics, driver_start, driver_end, url)
        usages += pod_usages(pod, driver_end, node_labels=labels, measured=measured, extra_attributes=extra)
    return usages


def _executor_pod(
    metrics: prometheus.PodMetrics, driver_start: dt.datetime, driver_end: dt.datetime, url: str
) -> tuple[dict[str, Any], dict[str, ContainerUsage]]:
    """An executor pod as the API would have shown it at its end, from its metrics."""
    containers, statuses, measured = [], [], {}
    for name, container in sorted(metrics.containers.items()):
        requests = {resource: str(value) for resource, value in sorted(container.requests.items())}
        started = min(max(container.started or driver_start, driver_start), driver_end)
        containers.append({"name": name, "resources": {"requests": requests} if requests else {}})
        statuses.append(
            {
                "name": name,
                "restartCount": 0,
                "state": {
                    "terminated": {"startedAt": started.isoformat(), "finishedAt": driver_end.isoformat()}
                },
            }
        )
        measured[name] = _container_usage(container, url)
        if container.started is None:
            measured[name] = dataclasses.replace(
                measured[name], attributes={**measured[name].attributes, "start_from": "the driver's start"}
            )
    pod = {
        "metadata": {"name": metrics.pod, "namespace": metrics.namespace},
        "spec": {"nodeName": metrics.node, "containers": containers},
        "status": {"phase": "", "containerStatuses": statuses},
    }
    return pod, measured


def _window(estimated: dict[tuple[str, str], list[Usage]]) -> tuple[dt.datetime, dt.datetime]:
    """The task's pods' window, widened to whole minutes (OpenCost's resolution)."""
    now = dt.datetime.now(dt.timezone.utc)
    starts = [u.start_time for found in estimated.values() for u in found if u.start_time]
    ends = [u.end_time for found in estimated.values() for u in found if u.end_time]
    start = min(starts, default=now - dt.timedelta(hours=1)).replace(second=0, microsecond=0)
    end = max(ends, default=now)
    if end.second or end.microsecond:
        end = end.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return start, max(end, start + dt.timedelta(minutes=1))


def _allocated(
    estimated: dict[tuple[str, str], list[Usage]], budget: _Budget
) -> dict[tuple[str, str], list[Usage]]:
    """One /allocation call for all the task's pods: each pod OpenCost knows takes its allocation as
    its lines (method allocated); the others keep the estimate, with why."""
    import requests

    url, currency = conf.opencost_url(), conf.opencost_currency()
    start, end = _window(estimated)
    pods = sorted({pod for _, pod in estimated})
    params = {
        "window": f"{start:%Y-%m-%dT%H:%M:%SZ},{end:%Y-%m-%dT%H:%M:%SZ}",
        "aggregate": "namespace,pod",
        "accumulate": "true",
        "filter": "pod:" + ",".join(f'"{pod}"' for pod in pods),
    }
    try:
        with suppress():
            answer = requests.get(f"{url}/allocation", params=params, timeout=budget.timeout())
        answer.raise_for_status()
        found = allocations_by_pod(answer.json())
    except Exception as error:
        why = f"OpenCost /allocation failed ({_api_error(error)}): requests x running time kept"
        return {key: _noted(usages, why) for key, usages in estimated.items()}
    result: dict[tuple[str, str], list[Usage]] = {}
    for key, usages in estimated.items():
        allocation = found.get(key)
        allocated = allocation_usages(allocation, currency, f"{url}/allocation") if allocation else []
        if allocated:
            operator = next(
                (u.attributes.get("operator") for u in usages if u.attributes.get("operator")), None
            )
            result[key] = [
                dataclasses.replace(
                    u,
                    external_id=next((e.external_id for e in usages if e.external_id), None),
                    attributes={**u.attributes, "operator": operator, "estimate": _estimate_note(usages)},
                )
                for u in allocated
            ]
        else:
            result[key] = _noted(usages, "OpenCost has no allocation for the pod in the task's window (yet)")
    return result


def _noted(usages: list[Usage], why: str, key: str = "opencost") -> list[Usage]:
    return [dataclasses.replace(u, attributes={**u.attributes, key: why}) for u in usages]


def _estimate_note(usages: list[Usage]) -> str:
    """What the estimate was, kept beside the allocation: metric=quantity unit, ..."""
    return ", ".join(f"{u.resource}:{u.metric}={u.quantity} {u.unit}" for u in usages)


# -------------------------------------------------------------------------------------- wrapping


def _register(session: CaptureSession, operator: Any, namespace: str, name: str) -> KubernetesPod:
    """The session's pending item of this pod (one per pod, also after a deferral), created once."""
    with session.lock:
        for item in session.pending.get(resolve_pods, []):
            if isinstance(item, KubernetesPod) and item.key == (namespace, name):
                return item
        item = KubernetesPod(
            namespace=namespace,
            name=name,
            conn_id=getattr(operator, "kubernetes_conn_id", None),
            in_cluster=getattr(operator, "in_cluster", None),
            config_file=getattr(operator, "config_file", None),
            cluster_context=getattr(operator, "cluster_context", None),
            operator=type(operator).__name__,
        )
        session.defer(resolve_pods, item)
        return item


def _pod_key(pod: Any) -> tuple[str, str] | None:
    metadata = getattr(pod, "metadata", None)
    name, namespace = getattr(metadata, "name", None), getattr(metadata, "namespace", None)
    return (str(namespace or "default"), str(name)) if name else None


def _capture_created(session: CaptureSession, operator: Any, pod: Any) -> None:
    key = _pod_key(pod)
    if key is not None:
        _register(session, operator, *key)


def _capture_final(session: CaptureSession, operator: Any, pod: Any, remote_pod: Any) -> None:
    """Keep the pod as the operator last read it (no call of our own inside the task: a container still
    running then is counted up to that moment, marked `still_running`); without one, finalize reads it."""
    key = _pod_key(remote_pod) or _pod_key(pod)
    if key is None:
        return
    item = _register(session, operator, *key)
    if remote_pod is not None:
        item.keep(_to_json(remote_pod))


def _tag_pod(session: CaptureSession, pod: Any) -> None:
    metadata = getattr(pod, "metadata", None)
    if metadata is None:
        return
    existing = dict(metadata.labels or {})
    added = pod_labels(session.tags, existing)
    if added:
        metadata.labels = {**existing, **added}


def _build_wrapper(wrapped, instance, args, kwargs):
    pod = wrapped(*args, **kwargs)
    session = task_session()
    if session is not None and conf.source_enabled(SOURCE) and conf.tagging_on(SOURCE):
        guarded_step("labelling a Kubernetes pod", _tag_pod, session, pod)
    return pod


def _create_wrapper(wrapped, instance, args, kwargs):
    pod = wrapped(*args, **kwargs)
    session = task_session()
    if session is not None and conf.source_enabled(SOURCE):
        guarded_step("capturing a Kubernetes pod", _capture_created, session, instance, pod)
    return pod


def _cleanup_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is not None and conf.source_enabled(SOURCE):
        pod = kwargs.get("pod", args[0] if args else None)
        remote_pod = kwargs.get("remote_pod", args[1] if len(args) > 1 else None)
        guarded_step("capturing a Kubernetes pod", _capture_final, session, instance, pod, remote_pod)
    return wrapped(*args, **kwargs)


def _reentry_wrapper(wrapped, instance, args, kwargs):
    """A resumed deferrable task: name the pod from the trigger's event, so a pod deleted before the
    operator could read it again is still kept (unpriced, with the reason)."""
    session = task_session()
    if session is not None and conf.source_enabled(SOURCE):
        event = kwargs.get("event", args[1] if len(args) > 1 else None)
        if isinstance(event, Mapping) and event.get("name"):
            guarded_step(
                "capturing a Kubernetes pod",
                _register,
                session,
                instance,
                str(event.get("namespace") or "default"),
                str(event["name"]),
            )
    return wrapped(*args, **kwargs)


class KubernetesPods(Instrumentation):
    name = "kubernetes"
    sources = (SOURCE,)
    modules = (OPERATOR_MODULE,)

    def patch(self, module: Any) -> None:
        operator = module.KubernetesPodOperator
        self.wrap(operator, "build_pod_request_obj", _build_wrapper)
        self.wrap(operator, "get_or_create_pod", _create_wrapper)
        self.wrap(operator, "cleanup", _cleanup_wrapper)
        self.wrap(operator, "trigger_reentry", _reentry_wrapper)
