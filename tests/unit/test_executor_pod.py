"""Under the KubernetesExecutor a task try is priced as its own pod (requests x running time at the
node's rate) instead of its process's CPU and memory; when the pod cannot be read, the process
measurement stays beside an unpriced line with the reason."""

from __future__ import annotations

import datetime as dt
import os
import time
from decimal import Decimal

import pytest

from airflow_cost_provider import conf
from airflow_cost_provider.capture import executor_pod
from tests.support.airflow_env import ledger_rows
from tests.support.fake_kubernetes import PodPlan, fake_kubernetes
from tests.support.fake_prometheus import ContainerUse, container_series, fake_prometheus
from tests.support.fake_ti import FakeTaskInstance
from tests.support.http_recorder import closed_port

POD = "exampledagtask-7f3k2q9z"
GIB = 2**30
M5_CPU, M5_MEMORY = Decimal("0.031247"), Decimal("0.004188")  # the shipped m5.xlarge rates


def executor_env(monkeypatch, tmp_path, kubeconfig) -> None:
    monkeypatch.setenv(executor_pod.MARKER, "True")
    monkeypatch.setenv("HOSTNAME", POD)
    monkeypatch.setenv("AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER", "False")
    monkeypatch.setenv("AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE", str(kubeconfig))
    monkeypatch.setenv("AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE", "airflow")
    monkeypatch.setattr(executor_pod, "NAMESPACE_FILE", tmp_path / "no-service-account")
    conf.clear_cache()


def the_executors_pod(fake) -> None:
    """The pod the executor created for the try: 2 vCPU and 4 GiB requested, running for 2 minutes."""
    fake.create(
        "airflow",
        {
            "metadata": {"name": POD, "labels": {"dag_id": "example_dag", "task_id": "task"}},
            "spec": {
                "containers": [
                    {
                        "name": "base",
                        "resources": {
                            "requests": {"cpu": "2", "memory": "4Gi"},
                            "limits": {"cpu": "4", "memory": "4Gi"},
                        },
                    }
                ]
            },
        },
    )
    # its container started two minutes ago, whatever the machine's speed
    fake.pods[("airflow", POD)].started_at -= dt.timedelta(seconds=120)


def finished_try_lines() -> list[dict]:
    from tests.unit.test_tracker import run_task

    run_task(FakeTaskInstance())
    return ledger_rows(
        os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"],
        "SELECT l.source, l.metric, l.amount_nanos, l.unpriced_reason, u.quantity, u.unit, u.resource "
        "FROM cost_lines l JOIN cost_usage u ON l.usage_id = u.id ORDER BY l.source, l.metric",
    )


def test_the_try_is_priced_as_its_pod_instead_of_its_process(monkeypatch, tmp_path):
    plans = {POD: PodPlan(pending_seconds=0, running_seconds=3600, node="node-m5")}
    nodes = {"node-m5": {"node.kubernetes.io/instance-type": "m5.xlarge"}}
    with fake_kubernetes(plans=plans, nodes=nodes) as fake:
        executor_env(monkeypatch, tmp_path, fake.kubeconfig(tmp_path / "kubeconfig"))
        the_executors_pod(fake)
        rows = finished_try_lines()
        reads = [r.path for r in fake.requests if r.method == "GET"]
    assert reads == [f"/api/v1/namespaces/airflow/pods/{POD}", "/api/v1/nodes/node-m5"]
    assert {r["source"] for r in rows} == {"kubernetes"}  # no airflow_worker lines
    by_metric = {r["metric"]: r for r in rows}
    assert set(by_metric) == {"cpu_time", "memory_time"}
    cpu, memory = by_metric["cpu_time"], by_metric["memory_time"]
    assert cpu["resource"] == memory["resource"] == f"airflow/{POD}/base"
    # requests x running time (start to the moment it was read), at the node's m5.xlarge rates
    cpu_seconds, gib_seconds = Decimal(cpu["quantity"]), Decimal(memory["quantity"])
    assert 2 * 119 < cpu_seconds < 2 * 300  # 2 vCPU for the two minutes and the test's own time
    assert cpu["unit"] == "vCPU-second" and memory["unit"] == "GiB-second"
    assert gib_seconds == 2 * cpu_seconds  # 4 GiB and 2 vCPU held for the same time
    assert cpu["amount_nanos"] == int((cpu_seconds / 3600 * M5_CPU).quantize(Decimal("1e-9")) * 10**9)
    assert memory["amount_nanos"] == int((gib_seconds / 3600 * M5_MEMORY).quantize(Decimal("1e-9")) * 10**9)


def test_with_prometheus_the_pods_measured_usage_joins_its_requests(monkeypatch, tmp_path):
    plans = {POD: PodPlan(pending_seconds=0, running_seconds=3600, node="node-m5")}
    with fake_kubernetes(plans=plans) as fake, fake_prometheus() as prometheus:
        executor_env(monkeypatch, tmp_path, fake.kubeconfig(tmp_path / "kubeconfig"))
        monkeypatch.setenv("AIRFLOW__COST_PROVIDER__PROMETHEUS_URL", prometheus.url)
        conf.clear_cache()
        the_executors_pod(fake)
        start = fake.pods[("airflow", POD)].started_at.timestamp()
        # 3 cores busy, above the 2 requested, and 1 GiB of the 4 requested, up to the last scrape
        use = ContainerUse(3.0 * (time.time() - start), (GIB,) * 4)
        prometheus.series = container_series("airflow", POD, "base", start, time.time(), use)
        rows = finished_try_lines()
    by_metric = {r["metric"]: r for r in rows}
    assert set(by_metric) == {"cpu_time", "memory_time"}
    (query,) = prometheus.queries
    assert f'pod=~"{POD}"' in query.query
    # the CPU it used (not 2 x its running time, which is longer than what the last scrape saw), and
    # its 4 GiB requested for that running time
    cpu_seconds, gib_seconds = (
        Decimal(by_metric["cpu_time"]["quantity"]),
        Decimal(by_metric["memory_time"]["quantity"]),
    )
    assert cpu_seconds == Decimal(repr(use.cpu_seconds)).quantize(Decimal("1e-9"))
    assert 4 * 119 < gib_seconds < 4 * 300 and cpu_seconds > gib_seconds / 2


def test_an_unreadable_pod_keeps_the_process_measurement_and_says_why(monkeypatch, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    with fake_kubernetes() as fake:
        fake.kubeconfig(kubeconfig)
    text = kubeconfig.read_text().replace(f":{fake.port}", f":{closed_port()}")
    kubeconfig.write_text(text)
    executor_env(monkeypatch, tmp_path, kubeconfig)
    rows = finished_try_lines()
    sources = {r["source"] for r in rows}
    assert sources == {"airflow_worker", "kubernetes"}
    (unread,) = [r for r in rows if r["source"] == "kubernetes"]
    assert unread["metric"] == "pod_time" and unread["amount_nanos"] is None
    assert "the task's own pod could not be read: NewConnectionError" in unread["unpriced_reason"]


@pytest.mark.parametrize("marker", [None, "False"])
def test_outside_an_executor_pod_nothing_is_asked(monkeypatch, tmp_path, marker):
    if marker is None:
        monkeypatch.delenv(executor_pod.MARKER, raising=False)
    else:
        monkeypatch.setenv(executor_pod.MARKER, marker)
    rows = finished_try_lines()
    assert {r["source"] for r in rows} == {"airflow_worker"}
