"""Kubernetes pods end to end: the provider's own KubernetesPodOperator (normal and deferrable),
@task.kubernetes and SparkKubernetesOperator under `airflow dags test`, against a Kubernetes API server
and a Prometheus HTTP API on 127.0.0.1. Asserts what the servers received (pods labelled with the task's
identity, team and cost labels, sanitised as Airflow sanitises its own; one Prometheus query per task)
and the facet and ledger lines: per container, max(request, measured usage) x running time x the node's
rate (by its instance type where the book has one), the GPU per GPU-hour, a Spark driver's executor
pods from their metrics after Spark deleted them, and the faults (a node that answers too slowly, a pod
deleted before a resumed task could read it) leaving the task alone."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest

from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tagging.kubernetes import safe_label_value
from tests.integration.dags.cost_kubernetes import LONG_LABEL
from tests.support.airflow_env import ledger_rows
from tests.support.fake_kubernetes import PodPlan, fake_kubernetes
from tests.support.fake_prometheus import ContainerUse, container_series, executor_series, fake_prometheus
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
BOOK = "2026.11.0"
CPU_HOUR, GIB_HOUR, GPU_HOUR = Decimal("0.031611"), Decimal("0.004237"), Decimal("0.95")
M5_CPU_HOUR, M5_GIB_HOUR = Decimal("0.031247"), Decimal("0.004188")
PLANS = {
    "etl-step": PodPlan(reported_seconds=120, node="node-m5"),
    "deferred-step": PodPlan(
        running_seconds=3,
        reported_seconds=300,
        node="node-plain",
        # OpenCost knows this pod (the others it has not seen yet): its allocation becomes the lines
        opencost={
            "cpuCost": 0.0052,
            "cpuCostAdjustment": -0.0002,
            "ramCost": 0.0014,
            "ramCostAdjustment": 0.0001,
        },
    ),
    # gone once the trigger saw it finish (its one terminal read): the resumed task finds no pod. It
    # runs long enough for the trigger's first read to find it running, even on a busy machine.
    "collected-early": PodPlan(running_seconds=8, reported_seconds=60, vanish_after_terminal_reads=1),
    "gpu-scoring": PodPlan(reported_seconds=60, node="node-gpu"),
    "spark-etl": PodPlan(reported_seconds=300, node="node-m5"),
}
GIB = 2**30
# What the containers used, as Prometheus scraped it: etl_step's CPU below its request (0.3 of 0.5
# cores), its memory above (1.5 GiB on average of 1 GiB requested, 2 GiB at its peak)
USE = {
    "etl-step": {"base": ContainerUse(36.0, (1 * GIB, 2 * GIB, 1.5 * GIB, 1.5 * GIB))},
    "spark-etl": {"spark-kubernetes-driver": ContainerUse(240.0, (1.5 * GIB,) * 3)},
}
# the Spark application's two executors (2 cores, 4g + 512m each), from 10 s after the driver started
# to its end (290 s): the first used 3 cores on average, the second 5 GiB of memory
EXECUTORS = (ContainerUse(870.0, (3 * GIB,) * 4), ContainerUse(290.0, (5 * GIB,) * 4))
EXECUTOR_REQUESTS = {"cpu": 2.0, "memory": 4608 * 2**20}
NODES = {
    "node-m5": {"node.kubernetes.io/instance-type": "m5.xlarge", "eks.amazonaws.com/nodegroup": "etl"},
    "node-plain": {"kubernetes.io/hostname": "node-plain"},
    "node-gpu": {"node.kubernetes.io/instance-type": "g4dn.xlarge"},
}


@pytest.fixture(scope="module")
def cluster():
    # the GPU node answers after the whole finalize budget: its labels are never known
    with fake_kubernetes(PLANS, NODES, slow_nodes={"node-gpu": 8.0}) as server:
        yield server


def scrapes(cluster):
    """What Prometheus holds of the fake cluster's pods (deleted ones too) when it is asked: cAdvisor's
    series of the containers USE plans, and a SparkApplication's executor pods, owned by its driver;
    plus another application's executor in the same namespace, which is not the task's."""
    now = time.time()
    decoy = executor_series(
        "etl",
        "other-app-0a1b2c3d4e5f6a7b-exec-1",
        "other-app-driver",
        "node-m5",
        EXECUTOR_REQUESTS,
        now - 3600,
        now + 3600,
        ContainerUse(7200.0, (8 * GIB,)),
    )
    # and one of an application run under Spark's `statefulset` pods allocator
    other_set = f"spark-s-spark-{'f' * 32}-0"
    decoy += executor_series(
        "etl",
        f"{other_set}-0",
        other_set,
        "node-m5",
        EXECUTOR_REQUESTS,
        now - 3600,
        now + 3600,
        ContainerUse(7200.0, (8 * GIB,)),
        owner_kind="StatefulSet",
    )

    def source():
        with cluster.lock:
            pods = list(cluster.pods.values()) + list(cluster.deleted)
            apps = list(cluster.spark_apps.values()) + list(cluster.deleted_spark_apps)
        found = list(decoy)
        by_name = {}
        for pod in pods:
            metadata = pod.resource["metadata"]
            start = pod.started_at.timestamp()
            end = start + pod.plan.reported_seconds
            by_name[metadata["name"]] = (start, end)
            for prefix, containers in USE.items():
                if metadata["name"].startswith(prefix):
                    for container, use in containers.items():
                        found += container_series(
                            metadata["namespace"],
                            metadata["name"],
                            container,
                            start,
                            end,
                            use,
                            metadata["uid"],
                        )
        for app in apps:
            name, namespace = app["metadata"]["name"], app["metadata"]["namespace"]
            start, end = by_name[f"{name}-driver"]
            for number, use in enumerate(EXECUTORS, 1):
                found += executor_series(
                    namespace,
                    f"{name}-9f8e7d6c5b4a3f2e-exec-{number}",
                    f"{name}-driver",
                    "node-m5",
                    EXECUTOR_REQUESTS,
                    start + 10,
                    end,
                    use,
                )
        return found

    return source


@pytest.fixture(scope="module")
def prometheus(cluster):
    with fake_prometheus(source=scrapes(cluster)) as server:
        yield server


@pytest.fixture(scope="module")
def k8s_run(airflow_env, cluster, prometheus, tmp_path_factory):
    kubeconfig = cluster.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    run = airflow_env.dags_test(
        "cost_kubernetes",
        env={
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(cluster.connection(kubeconfig)),
            # the fake answers OpenCost's /allocation too
            "AIRFLOW__COST_PROVIDER__OPENCOST_URL": cluster.url,
            "AIRFLOW__COST_PROVIDER__PROMETHEUS_URL": prometheus.url,
        },
        timeout=400,
    )
    failure = run.output.find("Traceback")
    assert run.process.returncode == 0, (
        run.output[failure : failure + 6000] if failure >= 0 else run.output[-6000:]
    )
    return run


@pytest.fixture(scope="module")
def events(k8s_run) -> dict[str, dict]:
    events = k8s_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def k8s_facet(events, task_id: str) -> tuple[dict[tuple[str, str], dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    lines = {
        (line["resource"], line["metric"]): line for line in facet["lines"] if line["source"] == "kubernetes"
    }
    return lines, [item for item in facet["unpriced"] if item["source"] == "kubernetes"]


def pod_named(cluster, prefix: str) -> dict:
    (body,) = [b for b in cluster.created() if b["metadata"]["name"].startswith(prefix)]
    return body


def expected(quantity: Decimal, rate: Decimal) -> Decimal:
    return quantize_amount(quantity * rate / 3600)


def assert_line(line: dict, quantity: Decimal, unit: str, rate: Decimal, ref: str) -> None:
    assert Decimal(str(line["quantity"])) == quantity
    assert line["unit"] == unit
    assert Decimal(str(line["amount"])) == expected(quantity, rate)
    assert line["currency"] == "USD" and line["method"] == "runtime_rate"
    assert line["priceRef"] == ref


def test_pods_carry_the_task_identity_team_and_cost_labels(k8s_run, cluster, events):
    labels = pod_named(cluster, "etl-step")["metadata"]["labels"]
    # Airflow's own labels are kept as Airflow wrote them
    assert labels["dag_id"] == "cost_kubernetes" and labels["task_id"] == "etl_step"
    assert labels["try_number"] == "1" and labels["kubernetes_pod_operator"] == "True"
    # and what it lacks is added
    assert labels["openlineage_run_id"] == events["etl_step"]["run"]["runId"]
    assert labels["airflow_team"] == "data-platform"
    # a value longer than 63 characters is cut the way Airflow cuts its own: 53 + "-" + 9 of its MD5
    assert len(LONG_LABEL) > 63
    assert labels["cost_label_project"] == safe_label_value(LONG_LABEL)
    assert len(labels["cost_label_project"]) == 63
    assert all(len(k) <= 63 and len(v) <= 63 for k, v in labels.items())
    # the deferrable and decorated pods too
    for prefix, task_id in (("deferred-step", "deferred_step"), ("gpu-scoring", "gpu_scoring")):
        labels = pod_named(cluster, prefix)["metadata"]["labels"]
        assert labels["task_id"] == task_id
        assert labels["openlineage_run_id"] == events[task_id]["run"]["runId"]


def test_a_pod_on_a_priced_instance_type(k8s_run, cluster, events):
    name = pod_named(cluster, "etl-step")["metadata"]["name"]
    lines, unpriced = k8s_facet(events, "etl_step")
    assert unpriced == []
    assert set(lines) == {(f"etl/{name}/base", "cpu_time"), (f"etl/{name}/base", "memory_time")}
    # 0.5 vCPU x 120 s = 60 vCPU-s at the m5.xlarge-derived 0.031247 per vCPU-hour -> 0.000520783
    cpu = lines[(f"etl/{name}/base", "cpu_time")]
    assert_line(
        cpu, Decimal(60), "vCPU-second", M5_CPU_HOUR, f"{BOOK}:kubernetes/cpu_time[instance_type=m5.xlarge]"
    )
    assert Decimal(str(cpu["amount"])) == Decimal("0.000520783")
    # it used 1.5 GiB on average, above its 1 GiB request: 1.5 GiB x 120 s at 0.004188 per GiB-hour
    memory = lines[(f"etl/{name}/base", "memory_time")]
    assert_line(
        memory,
        Decimal(180),
        "GiB-second",
        M5_GIB_HOUR,
        f"{BOOK}:kubernetes/memory_time[instance_type=m5.xlarge]",
    )
    assert Decimal(str(memory["amount"])) == Decimal("0.000209400")


def test_usage_measured_by_prometheus_joins_the_requests(k8s_run, cluster, prometheus):
    name = pod_named(cluster, "etl-step")["metadata"]["name"]
    rows = usage_rows(k8s_run, "etl_step")
    cpu, memory = rows[(f"etl/{name}/base", "cpu_time")], rows[(f"etl/{name}/base", "memory_time")]
    assert cpu["usage_source"] == memory["usage_source"] == "prometheus"
    assert cpu["usage_source_url"] == f"{prometheus.url}/api/v1/query"
    # 36 CPU seconds over 120 s: 0.3 cores, below the 0.5 requested; 1.5 GiB above the 1 GiB requested
    assert cpu["cpu_usage_seconds"] == "36" and cpu["cpu_usage_cores"] == "0.300000000"
    assert cpu["basis"] == "requests_over_usage" and cpu["cpu_priced_cores"] == "0.500000000"
    assert memory["memory_usage_GiB"] == "1.500000000" and memory["basis"] == "usage"
    assert memory["memory_peak_GiB"] == "2.000000000"
    # one query for the task, evaluated at its container's end, reaching back a minute past its start
    (query,) = [q for q in prometheus.queries if name in q.query]
    assert query.method == "GET"
    selector = f'{{namespace="etl",pod=~"{name}",container!="",container!="POD"}}'
    assert f"container_cpu_usage_seconds_total{selector}[180s]" in query.query
    assert f"container_memory_working_set_bytes{selector}[180s]" in query.query
    assert set(re.findall(r"\[(\d+)s\]", query.query)) == {"180"}
    assert "kube_pod_owner" not in query.query  # not a Spark driver: no executors looked for
    (pod,) = [p for p in [*cluster.deleted, *cluster.pods.values()] if p.resource["metadata"]["name"] == name]
    assert query.time == pod.started_at.timestamp() + 120


def test_a_spark_driver_and_its_deleted_executor_pods(k8s_run, cluster, prometheus, events):
    (app,) = cluster.deleted_spark_apps  # the operator deleted its SparkApplication at the end
    name = app["metadata"]["name"]
    app_id = app["status"]["sparkApplicationId"]
    lines, unpriced = k8s_facet(events, "spark_etl")
    assert unpriced == []
    driver = f"etl/{name}-driver/spark-kubernetes-driver"
    executor = f"etl/{name}-9f8e7d6c5b4a3f2e-exec-{{}}/spark-kubernetes-executor"
    m5 = "[instance_type=m5.xlarge]"
    # the driver: 1 core and 2g + 384m requested over 300 s, its use below both
    assert_line(
        lines[(driver, "cpu_time")],
        Decimal(300),
        "vCPU-second",
        M5_CPU_HOUR,
        f"{BOOK}:kubernetes/cpu_time{m5}",
    )
    assert_line(
        lines[(driver, "memory_time")],
        Decimal("712.5"),
        "GiB-second",
        M5_GIB_HOUR,
        f"{BOOK}:kubernetes/memory_time{m5}",
    )
    # the executors, 290 s each on node-m5: the first used 3 cores (870 s) above its 2, the second
    # 5 GiB above its 4.5 GiB
    expected = {
        (1, "cpu_time"): Decimal(870),
        (1, "memory_time"): Decimal(1305),
        (2, "cpu_time"): Decimal(580),
        (2, "memory_time"): Decimal(1450),
    }
    for (number, metric), quantity in expected.items():
        rate, unit = (M5_CPU_HOUR, "vCPU-second") if metric == "cpu_time" else (M5_GIB_HOUR, "GiB-second")
        assert_line(
            lines[(executor.format(number), metric)], quantity, unit, rate, f"{BOOK}:kubernetes/{metric}{m5}"
        )
    # nothing of the other applications' executors
    assert len(lines) == 6 and not any(
        "other-app" in resource or "spark-s-" in resource for resource, _ in lines
    )
    rows = usage_rows(k8s_run, "spark_etl")
    first = rows[(executor.format(1), "cpu_time")]
    assert first["spark_role"] == "executor" and first["driver_pod"] == f"{name}-driver"
    assert first["spark_app_id"] == app_id and first["usage_source"] == "prometheus"
    assert first["spark_pods_allocator"] == "direct"
    assert first["basis"] == "usage" and first["cpu_usage_seconds"] == "870"
    assert rows[(driver, "cpu_time")]["spark_role"] == "driver"
    # one query found the driver's and its executors' metrics
    (query,) = [q for q in prometheus.queries if f"{name}-driver" in q.query]
    assert f'owner_kind="Pod",owner_name=~"{name}-driver"' in query.query
    # and through the sets the other pods allocators name from the application id
    assert f'owner_kind="StatefulSet",owner_name=~"spark-s-({app_id})-[0-9]+"' in query.query
    assert f'owner_kind="Deployment",owner_name=~"spark-d-({app_id})-[0-9]+"' in query.query


def test_a_deferrable_pod_is_costed_after_resuming_from_its_opencost_allocation(k8s_run, cluster, events):
    name = pod_named(cluster, "deferred-step")["metadata"]["name"]
    lines, unpriced = k8s_facet(events, "deferred_step")
    assert unpriced == []
    assert set(lines) == {(f"etl/{name}", "cpu_time"), (f"etl/{name}", "memory_time")}
    cpu, memory = lines[(f"etl/{name}", "cpu_time")], lines[(f"etl/{name}", "memory_time")]
    # OpenCost's cost with its adjustment: 0.0052 - 0.0002 and 0.0014 + 0.0001, method allocated
    assert Decimal(str(cpu["amount"])) == Decimal("0.005") and cpu["method"] == "allocated"
    assert Decimal(str(memory["amount"])) == Decimal("0.0015") and memory["method"] == "allocated"
    assert cpu["priceRef"] == "opencost:kubernetes/cpu_time"
    # its quantities are OpenCost's: 2 cores x 300 s = 1/6 vCPU-hour, 4 GiB x 300 s = 1/3 GiB-hour
    assert Decimal(str(cpu["quantity"])) == Decimal("0.166666667") and cpu["unit"] == "vCPU-hour"
    assert Decimal(str(memory["quantity"])) == Decimal("0.333333333") and memory["unit"] == "GiB-hour"
    # one call for the task's pod, over its window, aggregated by pod
    (call,) = [r for r in cluster.requests if r.path == "/allocation" and name in r.query["filter"][0]]
    assert call.query["aggregate"] == ["namespace,pod"] and call.query["accumulate"] == ["true"]
    assert call.query["filter"] == [f'pod:"{name}"']
    start, end = call.query["window"][0].split(",")
    pod = cluster.allocation({"filter": [f'pod:"{name}"'], "window": [call.query["window"][0]]})["data"][0]
    allocation = pod[f"etl/{name}"]
    assert start <= allocation["start"] and allocation["end"] <= end


def usage_rows(run, task_id: str) -> dict[tuple[str, str], dict]:
    rows = ledger_rows(
        run.ledger_url,
        "select u.resource, u.metric, u.attributes from cost_usage u join cost_task_runs r on r.id = u.task_run_id "
        f"where u.source = 'kubernetes' and r.task_id = '{task_id}'",
    )
    return {
        (r["resource"], r["metric"]): json.loads(r["attributes"])
        if isinstance(r["attributes"], str)
        else r["attributes"]
        for r in rows
    }


def test_pods_opencost_does_not_know_or_has_no_time_for_keep_the_estimate(k8s_run, cluster, prometheus):
    asked = [r.query["filter"][0].split('"')[1] for r in cluster.requests if r.path == "/allocation"]
    # one per task whose pods' status was read (collected_early's pod never was), within the budget:
    # gpu_scoring's slow node used it all, so neither OpenCost nor Prometheus was asked for its pod
    assert sorted(next(p for p in PLANS if n.startswith(p)) for n in asked) == [
        "deferred-step",
        "etl-step",
        "spark-etl",
    ]
    assert not any("gpu-scoring" in q.query for q in prometheus.queries)
    assert len(prometheus.queries) == 3
    rows = ledger_rows(
        k8s_run.ledger_url,
        "select r.task_id, u.attributes from cost_usage u join cost_task_runs r on r.id = u.task_run_id "
        "where u.source = 'kubernetes' and r.task_id = 'gpu_scoring'",
    )
    notes = {
        (json.loads(a) if isinstance(a, str) else a)["opencost"] for a in (r["attributes"] for r in rows)
    }
    assert notes == {
        "OpenCost /allocation failed (TimeoutError: no time left within the finalize budget): "
        "requests x running time kept"
    }
    notes = {
        (json.loads(a) if isinstance(a, str) else a)["prometheus"] for a in (r["attributes"] for r in rows)
    }
    assert notes == {
        "Prometheus /api/v1/query failed (TimeoutError: no time left within the finalize budget): "
        "requests x running time kept"
    }


def test_a_gpu_pod_with_a_node_too_slow_to_answer(k8s_run, cluster, events):
    name = pod_named(cluster, "gpu-scoring")["metadata"]["name"]
    lines, unpriced = k8s_facet(events, "gpu_scoring")
    assert unpriced == []
    resource = f"ml/{name}/base"
    assert_line(
        lines[(resource, "gpu_time")], Decimal(60), "GPU-second", GPU_HOUR, f"{BOOK}:kubernetes/gpu_time"
    )
    assert Decimal(str(lines[(resource, "gpu_time")]["amount"])) == Decimal("0.015833333")
    assert_line(
        lines[(resource, "cpu_time")], Decimal(60), "vCPU-second", CPU_HOUR, f"{BOOK}:kubernetes/cpu_time"
    )
    assert_line(
        lines[(resource, "memory_time")],
        Decimal(120),
        "GiB-second",
        GIB_HOUR,
        f"{BOOK}:kubernetes/memory_time",
    )
    # the node was asked once, and its labels are missing (the default rate applies) with the reason
    assert [r.path for r in cluster.requests].count("/api/v1/nodes/node-gpu") == 1
    assert events["gpu_scoring"]["eventType"] == "COMPLETE"


def test_a_pod_deleted_before_the_resumed_task_read_it_is_kept_unpriced(k8s_run, cluster, events):
    lines, unpriced = k8s_facet(events, "collected_early")
    assert lines == {}
    (item,) = unpriced
    assert item["metric"] == "pod_time"
    assert item["resource"].startswith("etl/collected-early-")
    assert "already deleted" in item["reason"]
    assert events["collected_early"]["eventType"] == "COMPLETE"


def test_ledger_holds_what_the_facet_shows(k8s_run, events):
    rows = ledger_rows(
        k8s_run.ledger_url,
        "select r.task_id, u.metric, u.resource, u.quantity, u.unit, u.attributes, l.amount_nanos, l.method, "
        "l.status, l.price_ref, l.unpriced_reason from cost_lines l join cost_usage u on u.id = l.usage_id "
        "join cost_task_runs r on r.id = l.task_run_id where l.source = 'kubernetes'",
    )
    by_key = {(r["task_id"], r["resource"], r["metric"]): r for r in rows}
    for task_id in ("etl_step", "deferred_step", "gpu_scoring", "collected_early", "spark_etl"):
        lines, unpriced = k8s_facet(events, task_id)
        for (resource, metric), line in lines.items():
            row = by_key[(task_id, resource, metric)]
            assert Decimal(row["amount_nanos"]).scaleb(-9) == Decimal(str(line["amount"]))
            assert row["price_ref"] == line["priceRef"] and row["method"] == line["method"]
            assert Decimal(row["quantity"]) == Decimal(str(line["quantity"]))
        for item in unpriced:
            row = by_key[(task_id, item["resource"], item["metric"])]
            assert row["amount_nanos"] is None and row["status"] == "unpriced"
            assert "already deleted" in row["unpriced_reason"]
    gpu_cpu = next(r for r in rows if r["task_id"] == "gpu_scoring" and r["metric"] == "cpu_time")
    attributes = gpu_cpu["attributes"]
    attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
    assert "node-gpu" in attributes["node_labels_error"]
    assert attributes["cpu_request"] == "1" and "cpu_limit" not in attributes
    gpu_memory = next(r for r in rows if r["task_id"] == "gpu_scoring" and r["metric"] == "memory_time")
    attributes = gpu_memory["attributes"]
    attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
    assert attributes["memory_request"] == "2Gi" and attributes["memory_limit"] == "2Gi"
    etl_cpu = next(r for r in rows if r["task_id"] == "etl_step" and r["metric"] == "cpu_time")
    attributes = etl_cpu["attributes"]
    attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
    assert attributes["opencost"] == "OpenCost has no allocation for the pod in the task's window (yet)"
    # the pod's command and image are never kept
    dumped = json.dumps(rows, default=str)
    assert "busybox" not in dumped and "echo hi" not in dumped
    assert len(rows) == 2 + 2 + 3 + 1 + 6
