"""Pod pricing by hand-computed examples: per container, max(request, usage) x running time x node rate."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_cost_provider.pricing import CostLine, Unpriced, estimate, load_price_book
from airflow_cost_provider.pricing.kubernetes import (
    ContainerUsage,
    gibibytes,
    parse_quantity,
    pod_usages,
    pods_usages,
    running_time,
)

BOOK = load_price_book()
OBSERVED = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone.utc)
# the shipped defaults (Compute Engine N2 us-central1) and the m5 family's derived rates
CPU_HOUR, GIB_HOUR, GPU_HOUR = Decimal("0.031611"), Decimal("0.004237"), Decimal("0.95")
M5_CPU_HOUR, M5_GIB_HOUR = Decimal("0.031247"), Decimal("0.004188")


def pod(name, containers, statuses, *, phase="Succeeded", node="node-1", reason=None, uid=None):
    status = {"phase": phase, "containerStatuses": statuses, "qosClass": "Burstable"}
    if reason:
        status["reason"] = reason
    return {
        "metadata": {"name": name, "namespace": "etl", "uid": uid or f"uid-{name}"},
        "spec": {"nodeName": node, "containers": containers},
        "status": status,
    }


def container(name="base", requests=None, limits=None):
    resources = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "image": "python:3.12", "resources": resources}


def terminated(name, start, finish, exit_code=0):
    return {
        "name": name,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "startedAt": start, "finishedAt": finish}},
    }


def priced(usages):
    results = [estimate(u, BOOK) for u in usages]
    return {(r.usage.resource, r.usage.metric): r for r in results}


def test_quantities_are_exact():
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("2") == Decimal(2)
    assert parse_quantity("1.5") == Decimal("1.5")
    assert parse_quantity("1e3") == Decimal(1000)
    assert gibibytes("512Mi") == Decimal("0.5")
    assert gibibytes("1Gi") == Decimal(1)
    assert gibibytes("1073741824") == Decimal(1)
    assert gibibytes("1G") == Decimal(10**9) / Decimal(2**30)
    with pytest.raises(ValueError):
        parse_quantity("1 GiB")


def test_requests_only():
    usages = pod_usages(
        pod(
            "p1",
            [container(requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"})],
            [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T00:02:00Z")],
        ),
        OBSERVED,
    )
    lines = priced(usages)
    cpu, memory = lines[("etl/p1/base", "cpu_time")], lines[("etl/p1/base", "memory_time")]
    assert cpu.usage.quantity == Decimal(60) and cpu.usage.unit == "vCPU-second"  # 0.5 x 120 s
    assert memory.usage.quantity == Decimal(120) and memory.usage.unit == "GiB-second"  # 1 GiB x 120 s
    # 60 / 3600 x 0.031611 = 0.00052685; 120 / 3600 x 0.004237 = 0.00014123333.. -> nano-units
    assert cpu.amount == Decimal("0.000526850")
    assert memory.amount == Decimal("0.000141233")
    assert cpu.method == "runtime_rate" and cpu.price.ref == "2026.11.0:kubernetes/cpu_time"
    assert cpu.usage.attributes["basis"] == "requests"
    # limits recorded, not priced
    assert cpu.usage.attributes["cpu_limit"] == "1" and memory.usage.attributes["memory_limit"] == "2Gi"
    assert cpu.usage.external_id == "uid-p1"
    assert cpu.usage.start_time == dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    assert len(lines) == 2


def test_usage_above_requests_on_a_priced_instance_type():
    usages = pod_usages(
        pod(
            "p2",
            [container(requests={"cpu": "250m", "memory": "512Mi"})],
            [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T00:10:00Z")],
        ),
        OBSERVED,
        node_labels={"node.kubernetes.io/instance-type": "m5.xlarge", "eks.amazonaws.com/nodegroup": "etl"},
        measured={"base": ContainerUsage(cpu_cores=Decimal("1.5"), memory_bytes=Decimal(768 * 2**20))},
    )
    lines = priced(usages)
    cpu, memory = lines[("etl/p2/base", "cpu_time")], lines[("etl/p2/base", "memory_time")]
    assert cpu.usage.quantity == Decimal(900)  # max(0.25, 1.5) x 600 s
    assert memory.usage.quantity == Decimal(450)  # max(0.5, 0.75) GiB x 600 s
    # 900 vCPU-s = 0.25 vCPU-h x 0.031247; 450 GiB-s = 0.125 GiB-h x 0.004188
    assert cpu.amount == Decimal("0.007811750")
    assert memory.amount == Decimal("0.000523500")
    assert cpu.price.match == (("instance_type", "m5.xlarge"),)
    assert cpu.usage.attributes["basis"] == "usage" and cpu.usage.attributes["node_pool"] == "etl"


def test_requests_above_usage_price_the_requests():
    usages = pod_usages(
        pod(
            "p2b",
            [container(requests={"cpu": "2", "memory": "4Gi"})],
            [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z")],
        ),
        OBSERVED,
        measured={"base": ContainerUsage(cpu_cores=Decimal("0.1"), memory_bytes=Decimal(2**30))},
    )
    lines = priced(usages)
    assert lines[("etl/p2b/base", "cpu_time")].amount == 2 * CPU_HOUR
    assert lines[("etl/p2b/base", "memory_time")].amount == 4 * GIB_HOUR
    assert lines[("etl/p2b/base", "cpu_time")].usage.attributes["basis"] == "requests_over_usage"


def test_gpu_pod():
    usages = pod_usages(
        pod(
            "train",
            [container(requests={"cpu": "4", "memory": "16Gi"}, limits={"nvidia.com/gpu": "1"})],
            [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T00:30:00Z")],
        ),
        OBSERVED,
    )
    lines = priced(usages)
    gpu = lines[("etl/train/base", "gpu_time")]
    assert gpu.usage.quantity == Decimal(1800) and gpu.usage.unit == "GPU-second"
    assert gpu.amount == Decimal("0.475000000")  # 0.5 GPU-hour x 0.95
    assert lines[("etl/train/base", "cpu_time")].amount == Decimal("0.063222000")  # 2 vCPU-h x 0.031611
    assert lines[("etl/train/base", "memory_time")].amount == Decimal("0.033896000")  # 8 GiB-h x 0.004237
    assert gpu.usage.attributes["gpu_resource"] == "nvidia.com/gpu"


def test_a_pod_that_never_started_is_kept_unpriced_with_the_reason():
    never = pod(
        "stuck",
        [container(requests={"cpu": "1", "memory": "1Gi"})],
        [
            {
                "name": "base",
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            }
        ],
        phase="Pending",
    )
    (usage,) = pod_usages(never, OBSERVED)
    result = estimate(usage, BOOK)
    assert isinstance(result, Unpriced)
    assert usage.metric == "pod_time" and usage.quantity == 0 and usage.resource == "etl/stuck"
    assert "never started a container (phase Pending)" in result.reason


def test_a_pod_evicted_and_retried_is_two_pods_and_two_sets_of_lines():
    evicted = pod(
        "job-a",
        [container(requests={"cpu": "1", "memory": "2Gi"})],
        [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T00:05:00Z", exit_code=137)],
        phase="Failed",
        reason="Evicted",
    )
    retried = pod(
        "job-b",
        [container(requests={"cpu": "1", "memory": "2Gi"})],
        [terminated("base", "2026-12-01T00:06:00Z", "2026-12-01T00:08:00Z")],
        node="node-2",
    )
    lines = priced(pods_usages([evicted, retried], OBSERVED))
    assert sorted(lines) == [
        ("etl/job-a/base", "cpu_time"),
        ("etl/job-a/base", "memory_time"),
        ("etl/job-b/base", "cpu_time"),
        ("etl/job-b/base", "memory_time"),
    ]
    # 300 vCPU-s x 0.031611 / 3600; 600 GiB-s x 0.004237 / 3600
    assert lines[("etl/job-a/base", "cpu_time")].amount == Decimal("0.002634250")
    assert lines[("etl/job-a/base", "memory_time")].amount == Decimal("0.000706167")
    assert lines[("etl/job-b/base", "cpu_time")].amount == Decimal("0.001053700")
    assert lines[("etl/job-a/base", "cpu_time")].usage.attributes["pod_reason"] == "Evicted"
    assert lines[("etl/job-b/base", "cpu_time")].usage.attributes["node"] == "node-2"


def test_a_container_without_requests_or_usage_is_unpriced_not_zero():
    usages = pod_usages(
        pod("be", [container()], [terminated("base", "2026-12-01T00:00:00Z", "2026-12-01T00:01:00Z")]),
        OBSERVED,
    )
    results = [estimate(u, BOOK) for u in usages]
    assert all(isinstance(r, Unpriced) for r in results) and len(results) == 2
    assert {r.usage.metric for r in results} == {"unrequested_cpu_time", "unrequested_memory_time"}
    assert all(r.usage.quantity == 60 for r in results)
    assert "requests no cpu" in results[0].reason or "requests no cpu" in results[1].reason


def test_a_limit_alone_is_the_request_and_init_containers_count():
    spec_pod = pod(
        "init",
        [container(limits={"cpu": "1", "memory": "1Gi"})],
        [terminated("base", "2026-12-01T00:01:00Z", "2026-12-01T00:02:00Z")],
    )
    spec_pod["spec"]["initContainers"] = [container("setup", requests={"cpu": "2", "memory": "1Gi"})]
    spec_pod["status"]["initContainerStatuses"] = [
        terminated("setup", "2026-12-01T00:00:00Z", "2026-12-01T00:00:30Z")
    ]
    lines = priced(pod_usages(spec_pod, OBSERVED))
    assert lines[("etl/init/setup", "cpu_time")].usage.quantity == Decimal(60)  # 2 x 30 s
    assert lines[("etl/init/base", "cpu_time")].usage.quantity == Decimal(60)  # limit 1 x 60 s
    assert lines[("etl/init/base", "cpu_time")].usage.attributes["request_from_limit"] is True
    assert all(isinstance(r, CostLine) for r in lines.values())


def test_running_time_of_a_running_and_a_restarted_container():
    running = {"state": {"running": {"startedAt": "2026-12-01T00:59:00Z"}}}
    assert running_time(running, OBSERVED).seconds == Decimal(60)
    assert running_time(running, OBSERVED).still_running
    restarted = {
        "restartCount": 1,
        "lastState": {
            "terminated": {"startedAt": "2026-12-01T00:00:00Z", "finishedAt": "2026-12-01T00:01:00Z"}
        },
        "state": {"terminated": {"startedAt": "2026-12-01T00:01:10Z", "finishedAt": "2026-12-01T00:03:00Z"}},
    }
    assert running_time(restarted, OBSERVED).seconds == Decimal(180)
    assert running_time({"state": {"waiting": {}}}, OBSERVED).seconds is None


# an /allocation answer (aggregate=namespace,pod, accumulate=true) in OpenCost's own field names
ALLOCATION = {
    "code": 200,
    "data": [
        {
            "__idle__": {"name": "__idle__", "properties": {"cluster": "c"}, "totalCost": 3.1},
            "etl/job-a": {
                "name": "etl/job-a",
                "properties": {"cluster": "c", "node": "node-1", "namespace": "etl", "pod": "job-a"},
                "window": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00Z"},
                "start": "2026-12-01T00:00:00Z",
                "end": "2026-12-01T00:30:00Z",
                "minutes": 30,
                "cpuCoreRequestAverage": 2,
                "cpuCoreUsageAverage": 0.5,
                "cpuCoreHours": 1,
                "cpuCost": 0.031611,
                "cpuCostAdjustment": -0.001611,
                "gpuHours": 0.5,
                "gpuCost": 0.475,
                "gpuCostAdjustment": 0,
                "ramByteHours": 4 * 2**30,
                "ramCost": 0.016948,
                "ramCostAdjustment": 0,
                "pvByteHours": 0,
                "pvCost": 0,
                "networkTransferBytes": 0,
                "networkCost": 0,
                "totalCost": 0.522948,
            },
        }
    ],
}


def test_an_opencost_allocation_is_the_line_with_its_adjustment():
    from airflow_cost_provider.pricing.kubernetes import allocation_usages, allocations_by_pod

    found = allocations_by_pod(ALLOCATION)
    assert set(found) == {("etl", "job-a")}  # __idle__ is not a pod
    usages = allocation_usages(found[("etl", "job-a")], "USD", "http://opencost:9003/allocation")
    lines = {r.usage.metric: r for r in (estimate(u, BOOK) for u in usages)}
    assert set(lines) == {"cpu_time", "memory_time", "gpu_time"}
    cpu = lines["cpu_time"]
    assert cpu.amount == Decimal("0.030000000") and cpu.method == "allocated"  # 0.031611 - 0.001611
    assert cpu.usage.quantity == 1 and cpu.usage.unit == "vCPU-hour"
    assert cpu.price.ref == "opencost:kubernetes/cpu_time" and cpu.price.amount == Decimal("0.03")
    assert cpu.price.source_url == "http://opencost:9003/allocation"
    assert cpu.usage.attributes["opencost_cost_adjustment"] == "-0.001611"
    assert lines["memory_time"].usage.quantity == 4 and lines["memory_time"].amount == Decimal("0.016948000")
    assert lines["gpu_time"].amount == Decimal("0.475000000")
    bad = [
        type(u)(**{**u.__dict__, "attributes": {**u.attributes, "reported_currency": "usd"}}) for u in usages
    ]
    assert all(isinstance(estimate(u, BOOK), Unpriced) for u in bad)
