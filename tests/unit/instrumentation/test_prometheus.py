"""Pods' measured usage from Prometheus: the PromQL the provider sends, evaluated by the fake Prometheus
over scrapes shaped as the kubelet's cAdvisor and kube-state-metrics expose them, and what the look-up at
a task's end makes of the answer (and of a server that fails)."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from kubernetes.client.exceptions import ApiException

from airflow_cost_provider import conf
from airflow_cost_provider.instrumentation import kubernetes, prometheus
from airflow_cost_provider.instrumentation.kubernetes import KubernetesPod, resolve_pods
from tests.support.fake_prometheus import (
    ContainerUse,
    Series,
    container_series,
    executor_series,
    fake_prometheus,
    replicaset_series,
)

GIB = 2**30
START = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
T0 = START.timestamp()


def pod_json(name: str, seconds: int = 120, labels: dict | None = None, containers=("base",)) -> dict:
    """A finished pod as the API returns it: each container requesting 500m and 1Gi, run `seconds`."""
    end = START + dt.timedelta(seconds=seconds)
    return {
        "metadata": {"name": name, "namespace": "etl", "uid": f"uid-{name}", "labels": labels or {}},
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {"name": c, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}} for c in containers
            ],
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": c,
                    "restartCount": 0,
                    "state": {"terminated": {"startedAt": START.isoformat(), "finishedAt": end.isoformat()}},
                }
                for c in containers
            ],
        },
    }


def item(name: str, **kwargs) -> KubernetesPod:
    pod = KubernetesPod("etl", name)
    pod.keep(pod_json(name, **kwargs))
    pod.node_labels = {}  # no node look-up: the default rate
    return pod


@pytest.fixture
def configured(monkeypatch):
    def configure(url: str | None, selector: str = "") -> None:
        monkeypatch.setattr(conf, "prometheus_url", lambda: url)
        monkeypatch.setattr(conf, "prometheus_selector", lambda: selector)
        monkeypatch.setattr(conf, "opencost_url", lambda: None)

    class Client:  # a service account without `get nodes`, as is common
        def read_node(self, name, _request_timeout):
            raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(kubernetes, "_client", lambda item: Client())
    kubernetes.clear_caches()
    return configure


def by_key(usages) -> dict:
    return {(u.resource, u.metric): u for u in usages}


def test_the_query_reads_each_container_once_whatever_scrapes_it():
    use = ContainerUse(30.0, (GIB, 3 * GIB, 2 * GIB))
    series = container_series("etl", "etl-step.a", "base", T0, T0 + 120, use, uid="a")
    # the same container scraped by a second job (same cgroup), and restarted once (a second cgroup)
    twice = [Series({**s.labels, "job": "cadvisor-extra"}, s.samples) for s in series[:2]]
    restarted = container_series(
        "etl", "etl-step.a", "base", T0 + 60, T0 + 120, ContainerUse(6.0, (GIB,)), uid="b"
    )
    # a pod of the same namespace whose name the regex must not reach ("etl-stepXa" if "." were a wildcard)
    other = container_series("etl", "etl-stepXa", "base", T0, T0 + 120, ContainerUse(999.0, (9 * GIB,)))
    expression = prometheus.build_query({"etl": ["etl-step.a"]}, {}, 180)
    with fake_prometheus(series + twice + restarted[:1] + other) as server:
        found = prometheus.query(server.url, expression, T0 + 120, 5.0)
    (metrics,) = found.values()
    container = metrics.containers["base"]
    assert set(metrics.containers) == {"base"}  # not the pod's own cgroup, not the sandbox
    assert container.cpu_seconds == Decimal(36)  # 30 + the restart's 6, the duplicate scrape once
    assert container.memory_avg_bytes == 2 * GIB and container.memory_peak_bytes == 3 * GIB


def test_samples_outside_the_window_are_not_read():
    # the counter of a container that ran before the window: the range must not reach it
    early = container_series("etl", "etl-step", "base", T0 - 900, T0 - 600, ContainerUse(500.0, (GIB,)))
    current = container_series("etl", "etl-step", "base", T0, T0 + 120, ContainerUse(12.0, (GIB,)), uid="2")
    at, seconds = prometheus.window(START, START + dt.timedelta(seconds=120), START)
    assert (at, seconds) == (T0 + 120, 180)
    with fake_prometheus(early + current) as server:
        found = prometheus.query(
            server.url, prometheus.build_query({"etl": ["etl-step"]}, {}, seconds), at, 5.0
        )
    assert found[("etl", "etl-step")].containers["base"].cpu_seconds == 12


def test_usage_above_and_below_the_requests(configured):
    # base used 0.75 cores (above its 0.5) and 0.5 GiB (below its 1 GiB); the sidecar was not scraped
    series = container_series("etl", "job-a", "base", T0, T0 + 120, ContainerUse(90.0, (0.5 * GIB,) * 3))
    with fake_prometheus(series) as server:
        configured(server.url)
        usages = by_key(resolve_pods([item("job-a", containers=("base", "sidecar"))], 5.0))
    (query,) = server.queries
    assert T0 + 120 <= query.time <= time.time()  # the task's end, never before the pod's
    cpu, memory = usages[("etl/job-a/base", "cpu_time")], usages[("etl/job-a/base", "memory_time")]
    assert cpu.quantity == Decimal(90) and cpu.attributes["basis"] == "usage"
    assert (
        cpu.attributes["cpu_usage_cores"] == "0.750000000" and cpu.attributes["usage_source"] == "prometheus"
    )
    assert memory.quantity == Decimal(120) and memory.attributes["basis"] == "requests_over_usage"
    sidecar = usages[("etl/job-a/sidecar", "cpu_time")]
    assert sidecar.quantity == 60 and sidecar.attributes["usage_source"] == kubernetes.REQUESTS_ONLY
    assert sidecar.attributes["prometheus"] == kubernetes.NO_SAMPLES


def test_a_prometheus_that_fails_or_is_away_keeps_the_requests_with_why(configured):
    with fake_prometheus() as server:
        server.fail_with = 503
        configured(server.url)
        usages = resolve_pods([item("job-b")], 5.0)
    assert {u.quantity for u in usages} == {Decimal(60), Decimal(120)}
    assert {u.attributes["prometheus"] for u in usages} == {
        "Prometheus /api/v1/query failed (LookupError: HTTP 503: the TSDB is not ready): requests x running "
        "time kept"
    }
    configured("http://127.0.0.1:1")
    (note,) = {u.attributes["prometheus"] for u in resolve_pods([item("job-c")], 5.0)}
    assert note.startswith("Prometheus /api/v1/query failed (ConnectionError")


def test_the_configured_selector_reaches_every_series(configured):
    mine = container_series("etl", "job-d", "base", T0, T0 + 120, ContainerUse(90.0, (GIB,)))
    theirs = [Series({**s.labels, "cluster": "other"}, s.samples) for s in mine]
    mine = [Series({**s.labels, "cluster": "prod"}, s.samples) for s in mine]
    with fake_prometheus(theirs + mine) as server:
        configured(server.url, 'cluster="prod"')
        usages = by_key(resolve_pods([item("job-d")], 5.0))
    assert usages[("etl/job-d/base", "cpu_time")].quantity == 90  # not 180: the other cluster's not summed
    assert 'container!="POD",cluster="prod"}' in server.queries[0].query


DRIVER_LABELS = {"spark-role": "driver", "spark-app-selector": "spark-1234"}


def test_a_spark_drivers_executor_pods_are_priced_from_prometheus(configured):
    executor = executor_series(
        "etl",
        "app-5f6e-exec-1",
        "app-driver",
        "node-9",
        {"cpu": 2.0, "memory": 4 * GIB},
        T0 + 20,
        T0 + 120,
        ContainerUse(300.0, (2 * GIB,)),
    )
    decoy = executor_series(
        "etl", "zzz-0-exec-1", "zzz-driver", "node-9", {"cpu": 8.0}, T0, T0 + 120, ContainerUse(1.0, (GIB,))
    )
    with fake_prometheus(executor + decoy) as server:
        configured(server.url)
        usages = by_key(resolve_pods([item("app-driver", labels=DRIVER_LABELS)], 5.0))
    resource = "etl/app-5f6e-exec-1/spark-kubernetes-executor"
    assert set(usages) == {
        ("etl/app-driver/base", "cpu_time"),
        ("etl/app-driver/base", "memory_time"),
        (resource, "cpu_time"),
        (resource, "memory_time"),
    }
    # 100 s, from its start to the driver's end: 3 cores used (above 2 requested), 4 GiB requested
    cpu, memory = usages[(resource, "cpu_time")], usages[(resource, "memory_time")]
    assert cpu.quantity == 300 and cpu.attributes["basis"] == "usage"
    assert memory.quantity == 400 and memory.attributes["basis"] == "requests_over_usage"
    assert cpu.start_time == START + dt.timedelta(seconds=20)
    assert cpu.attributes["spark_app_id"] == "spark-1234" and cpu.attributes["driver_pod"] == "app-driver"
    assert cpu.attributes["node"] == "node-9"
    assert cpu.attributes["node_labels_error"] == "node node-9 not readable: HTTP 403 Forbidden"
    assert usages[("etl/app-driver/base", "cpu_time")].attributes["spark_role"] == "driver"


def allocated(allocator: str, app: str, number: int, use: ContainerUse, start: float) -> tuple[str, list]:
    """An executor pod of the application's first resource profile (id 0) as Spark's `statefulset`
    or `deployment` pods allocator makes it, and its series: the StatefulSet `spark-s-<app>-0` owns
    `spark-s-<app>-0-<ordinal>`; the Deployment `spark-d-<app>-0` owns a ReplicaSet
    `spark-d-<app>-0-<pod template hash>`, which owns `spark-d-<app>-0-<hash>-<suffix>`."""
    requests = {"cpu": 2.0, "memory": 4 * GIB}
    if allocator == "statefulset":
        pod = f"spark-s-{app}-0-{number - 1}"
        return pod, executor_series(
            "etl", pod, f"spark-s-{app}-0", "node-9", requests, start, T0 + 120, use, owner_kind="StatefulSet"
        )
    replicaset = f"spark-d-{app}-0-7c9f8b6d5"
    pod = f"{replicaset}-x2k4{number}"
    found = executor_series(
        "etl", pod, replicaset, "node-9", requests, start, T0 + 120, use, owner_kind="ReplicaSet"
    )
    return pod, [*found, replicaset_series("etl", replicaset, f"spark-d-{app}-0", T0, T0 + 120)]


@pytest.mark.parametrize("allocator", ["statefulset", "deployment"])
def test_executor_pods_of_the_statefulset_and_deployment_allocators_are_priced(configured, allocator):
    first, mine = allocated(allocator, "spark-1234", 1, ContainerUse(300.0, (2 * GIB,)), T0 + 20)
    second, more = allocated(allocator, "spark-1234", 2, ContainerUse(60.0, (5 * GIB,)), T0 + 60)
    # another application whose id starts with this one's, and a ReplicaSet named like this
    # application's that no Deployment of it owns: none of them are this driver's executors
    _, other = allocated(allocator, "spark-12345", 1, ContainerUse(900.0, (GIB,)), T0)
    orphan = executor_series(
        "etl",
        "spark-d-spark-1234-0-5d4c3b2a1-zzzzz",
        "spark-d-spark-1234-0-5d4c3b2a1",
        "node-9",
        {"cpu": 8.0},
        T0,
        T0 + 120,
        ContainerUse(900.0, (GIB,)),
        owner_kind="ReplicaSet",
    )
    with fake_prometheus(mine + more + other + orphan) as server:
        configured(server.url)
        usages = by_key(resolve_pods([item("app-driver", labels=DRIVER_LABELS)], 5.0))
    executors = {(r, m): u for (r, m), u in usages.items() if not r.startswith("etl/app-driver/")}
    first_resource = f"etl/{first}/spark-kubernetes-executor"
    second_resource = f"etl/{second}/spark-kubernetes-executor"
    assert set(executors) == {
        (resource, metric)
        for resource in (first_resource, second_resource)
        for metric in ("cpu_time", "memory_time")
    }
    # the first ran 100 s (to the driver's end), 3 cores used above 2 requested; the second 60 s, 1
    # core used below 2, 5 GiB above 4
    quantities = {key: usage.quantity for key, usage in executors.items()}
    assert quantities == {
        (first_resource, "cpu_time"): 300,
        (first_resource, "memory_time"): 400,
        (second_resource, "cpu_time"): 120,
        (second_resource, "memory_time"): 300,
    }
    cpu = executors[(first_resource, "cpu_time")]
    assert cpu.attributes["basis"] == "usage" and cpu.attributes["usage_source"] == "prometheus"
    assert cpu.attributes["spark_pods_allocator"] == allocator
    assert cpu.attributes["driver_pod"] == "app-driver" and cpu.attributes["spark_app_id"] == "spark-1234"
    assert cpu.start_time == START + dt.timedelta(seconds=20) and cpu.attributes["node"] == "node-9"
    assert not any(u.metric == "executor_pod_time" for u in usages.values())


def test_the_default_allocators_executors_say_so_and_a_driver_without_an_application_id_looks_for_no_sets(
    configured,
):
    executor = executor_series(
        "etl", "app-exec-1", "app-driver", "node-9", {"cpu": 1.0}, T0, T0 + 120, ContainerUse(30.0, (GIB,))
    )
    with fake_prometheus(executor) as server:
        configured(server.url)
        usages = by_key(resolve_pods([item("app-driver", labels=DRIVER_LABELS)], 5.0))
    assert (
        usages[("etl/app-exec-1/spark-kubernetes-executor", "cpu_time")].attributes["spark_pods_allocator"]
        == "direct"
    )
    assert 'owner_name=~"spark-s-(spark-1234)-[0-9]+"' in server.queries[0].query
    # an owner is the driver's only under its name and kind, or named from its application id
    cases = {
        ("Pod", "app-driver"): "direct",
        ("Pod", "spark-s-spark-1234-0"): None,
        ("StatefulSet", "spark-s-spark-1234-1"): "statefulset",
        ("StatefulSet", "spark-s-spark-12345-0"): None,
        ("StatefulSet", "spark-d-spark-1234-0"): None,
        ("Deployment", "spark-d-spark-1234-0"): "deployment",
        ("Deployment", "spark-d-spark-1234-0-7c9f8b6d5"): None,
        ("ReplicaSet", "spark-d-spark-1234-0-7c9f8b6d5"): None,
    }
    found = {
        key: prometheus.executor_allocator(
            prometheus.PodMetrics("etl", "p", owner=key[1], owner_kind=key[0]), "app-driver", "spark-1234"
        )
        for key in cases
    }
    assert found == cases
    metrics = prometheus.PodMetrics("etl", "p", owner="spark-s-spark-1234-0", owner_kind="StatefulSet")
    assert prometheus.executor_allocator(metrics, "app-driver", None) is None
    assert "kube_replicaset_owner" not in prometheus.build_query(
        {"etl": ["app-driver"]}, {"etl": ["app-driver"]}, 60
    )


def test_executor_pods_without_prometheus_or_not_found_are_kept_unpriced(configured):
    configured(None)
    usages = by_key(resolve_pods([item("app-driver", labels=DRIVER_LABELS)], 5.0))
    unpriced = usages[("etl/app-driver/executors", "executor_pod_time")]
    assert (
        unpriced.quantity == 0 and "set [cost_provider] prometheus_url" in unpriced.attributes["why_unpriced"]
    )
    with fake_prometheus() as server:
        configured(server.url)
        usages = by_key(resolve_pods([item("app-driver", labels=DRIVER_LABELS)], 5.0))
    reason = usages[("etl/app-driver/executors", "executor_pod_time")].attributes["why_unpriced"]
    assert reason.startswith("Prometheus has no executor pods owned by app-driver")
    # a pod that is no Spark driver looks for no executors
    assert "kube_pod_owner" not in prometheus.build_query({"etl": ["job"]}, {}, 60)


def test_an_answer_that_is_not_a_vector_or_an_error_is_refused():
    with pytest.raises(ValueError, match="bad_data: parse error"):
        prometheus.read_answer({"status": "error", "errorType": "bad_data", "error": "bad_data: parse error"})
    with pytest.raises(ValueError, match="'matrix', not a vector"):
        prometheus.read_answer({"status": "success", "data": {"resultType": "matrix", "result": []}})
    answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {
                    "metric": {"measure": "cpu_seconds", "namespace": "etl", "pod": "p", "container": "c"},
                    "value": [1, "NaN"],
                },
                {
                    "metric": {
                        "measure": "memory_avg_bytes",
                        "namespace": "etl",
                        "pod": "p",
                        "container": "c",
                    },
                    "value": [1, "5"],
                },
            ],
        },
    }
    container = prometheus.read_answer(answer)[("etl", "p")].containers["c"]
    assert container.cpu_seconds is None and container.memory_avg_bytes == 5


def test_a_query_too_long_for_a_url_is_posted():
    names = [f"etl-step-{number:05d}" for number in range(200)]
    series = container_series("etl", names[-1], "base", T0, T0 + 120, ContainerUse(60.0, (GIB,)))
    with fake_prometheus(series) as server:
        found = prometheus.query(server.url, prometheus.build_query({"etl": names}, {}, 180), T0 + 120, 5.0)
    (query,) = server.queries
    assert query.method == "POST" and names[0] in query.query
    assert found[("etl", names[-1])].containers["base"].cpu_seconds == 60
