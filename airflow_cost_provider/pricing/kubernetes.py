"""Kubernetes pods as usage: what each container reserved, over the time it ran. Pure: no I/O, no Airflow.

The way the Kubernetes cost tools price a pod (OpenCost, Kubecost): per container, the larger of its
request and its measured usage, for CPU and for memory, over the container's running time, at a node
price per vCPU-hour and per GiB-hour. A container's requests reserve node capacity whether the process
uses them or not; usage above the request is capacity it took from the node too. Limits are kept on
the line, not priced. GPUs (`nvidia.com/gpu`, and any `<vendor>/gpu`) are priced per GPU-hour of what
the container requested: a GPU is never shared between containers.

Input is a pod as the Kubernetes API returns it (`GET /api/v1/namespaces/{ns}/pods/{name}`, the JSON
shape, camelCase) and, optionally, the node's labels and the containers' measured usage. Each running
container becomes a `cpu_time` (vCPU-second), a `memory_time` (GiB-second) and, where requested, a
`gpu_time` (GPU-second) usage, priced from the price book (`kubernetes/<metric>`, selected by the
node's `instance_type` or `node_pool` when the book has an entry for it). A pod none of whose
containers ever started is kept as one `pod_time` usage of 0 seconds with the reason, unpriced.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.pricing.money import EXACT

SOURCE = "kubernetes"
GIB = Decimal(2) ** 30
QUANTITY_QUANTUM = Decimal("1e-9")

# The node labels that name an instance type and a node pool, by cloud (the first present wins).
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
NODE_POOL_LABELS = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
    "kubernetes.azure.com/agentpool",
    "agentpool",
    "node-pool",
)
GPU_SUFFIX = "/gpu"

# https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1.5", "512Mi", "1e9") as an exact Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None
    return EXACT.multiply(number, _SUFFIX[match.group(2)])


def cores(value: Any) -> Decimal:
    return parse_quantity(value)


def gibibytes(value: Any) -> Decimal:
    return EXACT.divide(parse_quantity(value), GIB)


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as the API writes it (`2026-01-02T00:00:00Z`), timezone-aware; None if absent."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class ContainerUsage:
    """Measured usage of one container over its running time, from a metrics source: average cores (or
    the CPU seconds it used, averaged over its running time here) and the average (or peak) working set
    in bytes, with what to keep on its lines about where they come from. Absent: requests alone are
    priced."""

    cpu_cores: Decimal | None = None
    memory_bytes: Decimal | None = None
    source: str = ""
    cpu_seconds: Decimal | None = None
    attributes: Mapping[str, Any] = dataclass_field(default_factory=dict)

    def cores_over(self, seconds: Decimal) -> Decimal | None:
        if self.cpu_cores is not None:
            return self.cpu_cores
        if self.cpu_seconds is not None and seconds > 0:
            return EXACT.divide(self.cpu_seconds, seconds)
        return None


@dataclass(frozen=True)
class RunningTime:
    start: dt.datetime | None
    end: dt.datetime | None
    still_running: bool = False

    @property
    def seconds(self) -> Decimal | None:
        if self.start is None or self.end is None or self.end < self.start:
            return None
        delta = self.end - self.start
        return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def running_time(status: Mapping[str, Any] | None, observed_at: dt.datetime) -> RunningTime:
    """Start to finish of a container from its status: terminated (startedAt..finishedAt), running
    (startedAt..observed_at), or never started. A restarted container counts from its first start
    still known (lastState.terminated.startedAt)."""
    state = (status or {}).get("state") or {}
    last = ((status or {}).get("lastState") or {}).get("terminated") or {}
    first_start = parse_time(last.get("startedAt"))
    if state.get("terminated"):
        terminated = state["terminated"]
        start, end = parse_time(terminated.get("startedAt")), parse_time(terminated.get("finishedAt"))
        if start is None:  # killed before it started: no running time
            return RunningTime(None, None)
        return RunningTime(min(filter(None, (first_start, start))), end)
    if state.get("running"):
        start = parse_time(state["running"].get("startedAt"))
        if start is None:
            return RunningTime(None, None)
        return RunningTime(min(filter(None, (first_start, start))), observed_at, still_running=True)
    if first_start is not None:  # waiting to restart after a run that ended
        return RunningTime(first_start, parse_time(last.get("finishedAt")))
    return RunningTime(None, None)


def node_attributes(node_name: str | None, labels: Mapping[str, str] | None) -> dict[str, str]:
    """The node's name, instance type and pool: the attributes the book's kubernetes prices select on."""
    attributes: dict[str, str] = {}
    if node_name:
        attributes["node"] = str(node_name)
    for key in INSTANCE_TYPE_LABELS:
        if labels and labels.get(key):
            attributes["instance_type"] = str(labels[key])
            break
    for key in NODE_POOL_LABELS:
        if labels and labels.get(key):
            attributes["node_pool"] = str(labels[key])
            break
    for key in ("topology.kubernetes.io/region", "topology.kubernetes.io/zone"):
        if labels and labels.get(key):
            attributes[key.rsplit("/", 1)[1]] = str(labels[key])
    return attributes


def _quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTITY_QUANTUM, context=EXACT)


def _resource(resources: Mapping[str, Any], kind: str, name: str) -> Any:
    return ((resources or {}).get(kind) or {}).get(name)


def _gpu(resources: Mapping[str, Any]) -> tuple[str, Decimal] | None:
    """The GPU resource a container requests (limits stand for requests: for extended resources
    Kubernetes requires them equal, and a limit alone sets the request)."""
    for kind in ("requests", "limits"):
        for name, value in ((resources or {}).get(kind) or {}).items():
            if str(name).endswith(GPU_SUFFIX):
                try:
                    count = parse_quantity(value)
                except ValueError:
                    continue
                if count > 0:
                    return str(name), count
    return None


def container_usages(
    pod_ref: Mapping[str, Any],
    container: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    observed_at: dt.datetime,
    base_attributes: Mapping[str, Any],
    measured: ContainerUsage | None = None,
) -> list[Usage]:
    """The cpu_time, memory_time and gpu_time usages of one container that ran; [] if it never ran."""
    timing = running_time(status, observed_at)
    seconds = timing.seconds
    if seconds is None:
        return []
    name = str(container.get("name") or "")
    resources = container.get("resources") or {}
    resource = f"{pod_ref['namespace']}/{pod_ref['name']}/{name}"
    attributes: dict[str, Any] = {
        **base_attributes,
        "container": name,
        "running_seconds": str(seconds),
        METHOD_ATTRIBUTE: "runtime_rate",
    }
    if measured is not None:
        attributes.update(measured.attributes)
        if measured.source:
            attributes["usage_source"] = measured.source
    if timing.still_running:
        attributes["still_running"] = True
    if status and status.get("restartCount"):
        attributes["restarts"] = int(status["restartCount"])
    usages: list[Usage] = []
    for metric, unit, parse, request_name, measured_value, label in (
        ("cpu_time", "vCPU-second", cores, "cpu", measured and measured.cores_over(seconds), "cores"),
        (
            "memory_time",
            "GiB-second",
            gibibytes,
            "memory",
            measured and measured.memory_bytes is not None and EXACT.divide(measured.memory_bytes, GIB),
            "GiB",
        ),
    ):
        line = dict(attributes)
        request_raw = _resource(resources, "requests", request_name)
        limit_raw = _resource(resources, "limits", request_name)
        if request_raw is None and limit_raw is not None:
            request_raw = limit_raw  # the API server defaults a missing request to the limit
            line["request_from_limit"] = True
        try:
            request = parse(request_raw) if request_raw is not None else None
        except ValueError:
            request, line["bad_request"] = None, str(request_raw)
        if request_raw is not None:
            line[f"{request_name}_request"] = str(request_raw)
        if limit_raw is not None:
            line[f"{request_name}_limit"] = str(limit_raw)
        used = measured_value if isinstance(measured_value, Decimal) else None
        if used is not None:
            line[f"{request_name}_usage_{label}"] = str(_quantize(used))
        if request is None and used is None:
            line[UNPRICED_HINT_ATTRIBUTE] = (
                f"the container requests no {request_name} and no usage is known (a BestEffort container "
                "shares what the node has left): configure a metrics source or set requests"
            )
            # kept as running time under its own metric: no price applies, so it is never a zero cost
            usages.append(
                Usage(
                    SOURCE,
                    f"unrequested_{metric}",
                    seconds,
                    "second",
                    resource,
                    pod_ref.get("uid"),
                    timing.start,
                    timing.end,
                    line,
                )
            )
            continue
        amount = max(request or Decimal(0), used or Decimal(0))
        line["basis"] = (
            "requests"
            if used is None
            else ("usage" if used > (request or Decimal(0)) else "requests_over_usage")
        )
        usages.append(
            Usage(
                SOURCE,
                metric,
                _quantize(EXACT.multiply(amount, seconds)),
                unit,
                resource,
                pod_ref.get("uid"),
                timing.start,
                timing.end,
                {**line, f"{request_name}_priced_{label}": str(_quantize(amount))},
            )
        )
    gpu = _gpu(resources)
    if gpu is not None:
        gpu_name, count = gpu
        usages.append(
            Usage(
                SOURCE,
                "gpu_time",
                _quantize(EXACT.multiply(count, seconds)),
                "GPU-second",
                resource,
                pod_ref.get("uid"),
                timing.start,
                timing.end,
                {**attributes, "gpu_resource": gpu_name, "gpus": str(count), "basis": "requests"},
            )
        )
    return usages


def pod_usages(
    pod: Mapping[str, Any],
    observed_at: dt.datetime,
    node_labels: Mapping[str, str] | None = None,
    measured: Mapping[str, ContainerUsage] | None = None,
    extra_attributes: Mapping[str, Any] | None = None,
) -> list[Usage]:
    """Every container's usage of one pod (init containers included: they hold their requests while
    they run); one unpriced `pod_time` usage, with the reason, when no container ever ran."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    pod_ref = {
        "namespace": str(metadata.get("namespace") or "default"),
        "name": str(metadata.get("name") or ""),
        "uid": metadata.get("uid"),
    }
    base: dict[str, Any] = {
        "namespace": pod_ref["namespace"],
        "pod": pod_ref["name"],
        "phase": str(status.get("phase") or ""),
        **node_attributes(spec.get("nodeName"), node_labels),
        **dict(extra_attributes or {}),
    }
    if status.get("reason"):
        base["pod_reason"] = str(status["reason"])
    if status.get("qosClass"):
        base["qos_class"] = str(status["qosClass"])
    usages: list[Usage] = []
    for containers_key, statuses_key, kind in (
        ("initContainers", "initContainerStatuses", "init"),
        ("containers", "containerStatuses", "main"),
    ):
        statuses = {s.get("name"): s for s in status.get(statuses_key) or [] if isinstance(s, Mapping)}
        for container in spec.get(containers_key) or []:
            if not isinstance(container, Mapping):
                continue
            usages += container_usages(
                pod_ref,
                container,
                statuses.get(container.get("name")),
                observed_at,
                {**base, "container_kind": kind},
                (measured or {}).get(str(container.get("name"))),
            )
    if not usages:
        reason = status.get("reason") or status.get("message") or ""
        why = f" ({reason})" if reason else ""
        created = parse_time(metadata.get("creationTimestamp"))
        usages.append(
            Usage(
                SOURCE,
                "pod_time",
                Decimal(0),
                "second",
                f"{pod_ref['namespace']}/{pod_ref['name']}",
                pod_ref["uid"],
                created,
                observed_at,
                {
                    **base,
                    UNPRICED_HINT_ATTRIBUTE: f"the pod never started a container (phase {base['phase'] or 'unknown'}"
                    f"{why}): no running time, nothing reserved to price",
                },
            )
        )
    return usages


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Only what pricing reads of a pod: never its environment, command, image pull secrets or
    labels (a pod's env may hold secrets; nothing of it is kept)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}

    def containers(key: str) -> list[dict[str, Any]]:
        return [
            {"name": c.get("name"), "resources": _plain_resources(c.get("resources"))}
            for c in spec.get(key) or []
            if isinstance(c, Mapping)
        ]

    def statuses(key: str) -> list[dict[str, Any]]:
        kept = []
        for s in status.get(key) or []:
            if not isinstance(s, Mapping):
                continue
            kept.append(
                {
                    "name": s.get("name"),
                    "restartCount": s.get("restartCount") or 0,
                    "state": _times_only(s.get("state")),
                    "lastState": _times_only(s.get("lastState")),
                }
            )
        return kept

    return {
        "metadata": {
            k: str(metadata[k]) for k in ("name", "namespace", "uid", "creationTimestamp") if metadata.get(k)
        },
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": containers("containers"),
            "initContainers": containers("initContainers"),
        },
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "qosClass": status.get("qosClass"),
            "containerStatuses": statuses("containerStatuses"),
            "initContainerStatuses": statuses("initContainerStatuses"),
        },
    }


def _plain_resources(resources: Any) -> dict[str, dict[str, str]]:
    if not isinstance(resources, Mapping):
        return {}
    return {
        kind: {str(k): str(v) for k, v in (resources.get(kind) or {}).items()}
        for kind in ("requests", "limits")
        if isinstance(resources.get(kind), Mapping)
    }


def _times_only(state: Any) -> dict[str, Any]:
    """A container state with its kind, times, exit code and reason (not its message)."""
    if not isinstance(state, Mapping):
        return {}
    kept: dict[str, Any] = {}
    for kind, detail in state.items():
        if not isinstance(detail, Mapping):
            continue
        kept[kind] = {
            k: (str(v) if k in ("startedAt", "finishedAt") else v)
            for k, v in detail.items()
            if k in ("startedAt", "finishedAt", "exitCode", "reason") and v is not None
        }
    return kept


def pods_usages(pods: Iterable[Mapping[str, Any]], observed_at: dt.datetime, **kwargs: Any) -> list[Usage]:
    """Each pod's usages, pod after pod: an evicted pod and the one that replaced it are two pods."""
    return [usage for pod in pods for usage in pod_usages(pod, observed_at, **kwargs)]


# ------------------------------------------------------------------------------ OpenCost allocation

# OpenCost /allocation fields: (metric, quantity field, unit, quantity divisor, cost, adjustment)
# https://www.opencost.io/docs/integrations/api
_ALLOCATION_PARTS = (
    ("cpu_time", "cpuCoreHours", "vCPU-hour", Decimal(1), "cpuCost", "cpuCostAdjustment"),
    ("memory_time", "ramByteHours", "GiB-hour", GIB, "ramCost", "ramCostAdjustment"),
    ("gpu_time", "gpuHours", "GPU-hour", Decimal(1), "gpuCost", "gpuCostAdjustment"),
    ("volume_time", "pvByteHours", "GiB-hour", GIB, "pvCost", "pvCostAdjustment"),
    ("network_transfer", "networkTransferBytes", "byte", Decimal(1), "networkCost", "networkCostAdjustment"),
)


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def allocation_usages(
    allocation: Mapping[str, Any], currency: str, url: str, extra_attributes: Mapping[str, Any] | None = None
) -> list[Usage]:
    """One pod's OpenCost allocation as usages that carry OpenCost's cost (method `allocated`): CPU,
    memory, GPU, volumes and network, each with its cost adjustment (the reconciliation with the cloud
    bill, when OpenCost has one) added in and kept beside it."""
    properties = allocation.get("properties") or {}
    namespace, pod = str(properties.get("namespace") or ""), str(properties.get("pod") or "")
    start = parse_time(allocation.get("start") or (allocation.get("window") or {}).get("start"))
    end = parse_time(allocation.get("end") or (allocation.get("window") or {}).get("end"))
    base: dict[str, Any] = {
        "namespace": namespace,
        "pod": pod,
        **({"node": str(properties["node"])} if properties.get("node") else {}),
        **({"cluster": str(properties["cluster"])} if properties.get("cluster") else {}),
        "allocation_minutes": str(_number(allocation.get("minutes")) or ""),
        **dict(extra_attributes or {}),
        METHOD_ATTRIBUTE: "allocated",
        "reported_by": "opencost",
        "reported_by_url": url,
        "reported_currency": currency,
    }
    for field in (
        "cpuCoreRequestAverage",
        "cpuCoreUsageAverage",
        "ramByteRequestAverage",
        "ramByteUsageAverage",
    ):
        value = _number(allocation.get(field))
        if value is not None:
            base[field] = str(value)
    usages: list[Usage] = []
    for metric, quantity_field, unit, divisor, cost_field, adjustment_field in _ALLOCATION_PARTS:
        cost = _number(allocation.get(cost_field)) or Decimal(0)
        adjustment = _number(allocation.get(adjustment_field)) or Decimal(0)
        quantity = _number(allocation.get(quantity_field)) or Decimal(0)
        if cost + adjustment == 0 and quantity == 0:
            continue
        usages.append(
            Usage(
                SOURCE,
                metric,
                _quantize(EXACT.divide(quantity, divisor)),
                unit,
                f"{namespace}/{pod}",
                None,
                start,
                end,
                {
                    **base,
                    "reported_cost": str(cost + adjustment),
                    "opencost_cost": str(cost),
                    "opencost_cost_adjustment": str(adjustment),
                },
            )
        )
    return usages


def allocations_by_pod(response: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(namespace, pod) -> allocation, from an /allocation answer (one set per step; `accumulate=true`
    makes it one). Idle and unallocated entries (`__idle__`, `__unallocated__`) are not pods."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for allocation_set in response.get("data") or []:
        if not isinstance(allocation_set, Mapping):
            continue
        for name, allocation in allocation_set.items():
            if not isinstance(allocation, Mapping) or str(name).startswith("__"):
                continue
            properties = allocation.get("properties") or {}
            if properties.get("namespace") and properties.get("pod"):
                found[(str(properties["namespace"]), str(properties["pod"]))] = allocation
    return found
