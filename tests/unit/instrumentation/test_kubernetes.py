"""Kubernetes pods: the labels (sanitised as Airflow sanitises its own), the wrappers around the real
`KubernetesPodOperator`, and the look-ups at finalize, against an API server that is not there."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from airflow.providers.cncf.kubernetes import pod_generator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import kubernetes
from airflow_cost_provider.instrumentation.kubernetes import KubernetesPod, KubernetesPods, resolve_pods
from airflow_cost_provider.tagging.kubernetes import pod_labels, safe_label_key, safe_label_value

OL_RUN_ID = "0192f0c1-0000-7000-8000-000000000001"
LONG = "x" * 70


@pytest.mark.parametrize(
    "value",
    ["simple", "manual__2026-01-02T00:00:00+00:00", LONG, "-leading.and.trailing-", "ünïcode", "a b", ""],
)
def test_label_values_are_cut_exactly_as_airflow_cuts_its_own(value):
    assert safe_label_value(value) == pod_generator.make_safe_label_value(value)
    assert len(safe_label_value(value)) <= 63


def test_only_what_airflow_lacks_is_added_and_nothing_is_replaced():
    tags = {
        "airflow_dag_id": "dag",
        "airflow_task_id": "task",
        "airflow_try_number": "1",
        "openlineage_run_id": OL_RUN_ID,
        "airflow_team": "data platform",
        "cost_label_project": LONG,
        "cost_label_bad key!": "v",
    }
    added = pod_labels(tags, {"dag_id": "dag", "task_id": "task", "try_number": "1", "airflow_team": "mine"})
    assert added == {
        "openlineage_run_id": OL_RUN_ID,
        "cost_label_project": safe_label_value(LONG),
        "cost_label_bad_key": "v",
    }
    assert safe_label_key("_" * 70) is None and len(safe_label_key("k" * 70)) == 63


# ------------------------------------------------------------------------------------ wrappers


@pytest.fixture
def unreachable(monkeypatch, tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(config), "in_cluster": False}}
        ),
    )


@pytest.fixture
def instrumented(unreachable):
    instrumentation = KubernetesPods()
    instrumentation.instrument()
    yield
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(
        TaskTry(
            "dag",
            "task",
            "run",
            1,
            -1,
            ol_run_id=OL_RUN_ID,
            team="growth",
            labels=(("project", LONG),),
        ),
        worker.sample(),
    )


def operator(**kwargs) -> KubernetesPodOperator:
    return KubernetesPodOperator(
        task_id="pod",
        namespace="etl",
        name="etl-step",
        image="busybox",
        env_vars={"TOKEN": "s3cr3t"},
        **kwargs,
    )


def remote_pod(name="etl-step-abc") -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace="etl", uid="uid-1", labels={"dag_id": "dag"}),
        spec=k8s.V1PodSpec(
            node_name="node-1",
            containers=[
                k8s.V1Container(
                    name="base",
                    image="busybox",
                    env=[k8s.V1EnvVar(name="TOKEN", value="s3cr3t")],
                    resources=k8s.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"}),
                )
            ],
        ),
        status=k8s.V1PodStatus(
            phase="Succeeded",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base",
                    image="busybox",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(
                            exit_code=0,
                            started_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
                            finished_at=dt.datetime(2026, 12, 1, 0, 2, tzinfo=dt.timezone.utc),
                            message="secret message",
                        )
                    ),
                )
            ],
        ),
    )


def test_the_pod_the_operator_builds_carries_the_task_identity(instrumented, session):
    pod = operator(labels={"airflow_team": "theirs"}).build_pod_request_obj()
    labels = pod.metadata.labels
    assert labels["openlineage_run_id"] == OL_RUN_ID
    assert labels["airflow_team"] == "theirs"  # the user's own label wins
    assert labels["cost_label_project"] == pod_generator.make_safe_label_value(LONG)


def test_cleanup_keeps_the_pod_without_its_environment_and_leaves_it_for_the_end(instrumented, session):
    op = operator()
    calls = []
    kubernetes._cleanup_wrapper(lambda *a, **k: calls.append(a) or "cleaned", op, (None, remote_pod()), {})
    kubernetes._reentry_wrapper(
        lambda *a, **k: None, op, ({}, {"name": "etl-step-abc", "namespace": "etl"}), {}
    )
    assert len(calls) == 1
    ((resolve, (item,)),) = session.pending.items()  # the same pod named twice is one item
    assert (
        resolve is resolve_pods
        and item.key == ("etl", "etl-step-abc")
        and item.conn_id == "kubernetes_default"
    )
    text = json.dumps(item.pod)
    assert "s3cr3t" not in text and "busybox" not in text and "secret message" not in text
    # plain values: it survives a deferral
    document = deferral.snapshot([], session.pending)
    _, ((restored_resolve, restored),) = deferral.restore(json.loads(json.dumps(document)))
    assert restored_resolve is resolve_pods and restored == item
    # priced without any call: node labels are read at the end, and a node that cannot be read leaves
    # the default rate with the reason
    kubernetes.clear_caches()
    usages = resolve_pods([restored], 2.0)  # kubernetes_default names a server that is not there
    assert {u.metric for u in usages} == {"cpu_time", "memory_time"}
    cpu = next(u for u in usages if u.metric == "cpu_time")
    assert cpu.quantity == 60 and cpu.resource == "etl/etl-step-abc/base"
    assert "node node-1 not" in cpu.attributes["node_labels_error"]


def test_a_failing_capture_never_reaches_the_task(instrumented, session, monkeypatch, caplog):
    monkeypatch.setattr(kubernetes, "slim_pod", lambda pod: 1 / 0)
    monkeypatch.setattr(kubernetes, "pod_labels", lambda *a: 1 / 0)
    calls = []
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        for _ in range(2):
            result = kubernetes._cleanup_wrapper(
                lambda *a, **k: calls.append(a) or "cleaned", operator(), (None, remote_pod()), {}
            )
            assert result == "cleaned"
        assert operator().build_pod_request_obj().metadata.name.startswith("etl-step")
    assert len(calls) == 2
    assert len([r for r in caplog.records if "capturing a Kubernetes pod" in r.getMessage()]) == 1


def test_suppressed_and_sessionless_calls_are_untouched(instrumented, session):
    with suppress():
        assert "openlineage_run_id" not in (operator().build_pod_request_obj().metadata.labels or {})
    clear_sessions()
    kubernetes._cleanup_wrapper(lambda *a, **k: None, operator(), (None, remote_pod()), {})
    assert session.pending == {}


def test_a_pod_never_read_and_an_api_server_down_leave_the_pod_unpriced_with_the_reason(unreachable):
    item = KubernetesPod("etl", "etl-step-xyz", conn_id="kubernetes_default")
    (usage,) = resolve_pods([item], 2.0)
    assert usage.metric == "pod_time" and usage.resource == "etl/etl-step-xyz"
    # one attempt (no urllib3 retries): the connection refused is the reason
    reason = usage.attributes["why_unpriced"]
    assert reason.startswith("reading the pod failed: NewConnectionError") and "Connection refused" in reason


def test_a_pod_already_deleted_is_named_as_such(monkeypatch):
    class Client:
        def read_namespaced_pod(self, name, namespace, _request_timeout):
            assert _request_timeout <= kubernetes.REQUEST_TIMEOUT
            raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(kubernetes, "_client", lambda item: Client())
    (usage,) = resolve_pods([KubernetesPod("etl", "gone")], 5.0)
    assert usage.attributes["why_unpriced"] == "the pod was already deleted before its status could be read"


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    original = KubernetesPodOperator.__dict__["cleanup"]
    instrumentation = KubernetesPods()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = KubernetesPodOperator.__dict__["cleanup"]
    assert wrapped is not original and wrapped.__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert KubernetesPodOperator.__dict__["cleanup"] is original


def test_opencost_unreachable_keeps_the_estimate_with_the_reason(monkeypatch):
    from airflow_cost_provider import conf

    monkeypatch.setattr(conf, "opencost_url", lambda: "http://127.0.0.1:1")
    item = KubernetesPod("etl", "etl-step-abc", pod=kubernetes.slim_pod(kubernetes._to_json(remote_pod())))
    item.observed_at = "2026-12-01T00:03:00+00:00"
    item.node_labels = {}
    usages = resolve_pods([item], 5.0)
    assert {u.metric for u in usages} == {"cpu_time", "memory_time"}
    note = usages[0].attributes["opencost"]
    assert note.startswith("OpenCost /allocation failed (ConnectionError") and note.endswith("kept")


def test_a_spark_kubernetes_driver_pod_is_captured_through_the_inherited_cleanup(instrumented, session):
    from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

    spark = SparkKubernetesOperator(task_id="spark", namespace="etl", template_spec={"spark": {"spec": {}}})
    called = []
    # the class's own cleanup is KubernetesPodOperator's, wrapped: the driver pod is kept like any pod
    assert "cleanup" not in SparkKubernetesOperator.__dict__
    KubernetesPodOperator.cleanup.__wrapped__  # noqa: B018 - it is the wrapper
    kubernetes._cleanup_wrapper(
        lambda *a, **k: called.append(1), spark, (None, remote_pod("etl-app-driver")), {}
    )
    ((item,),) = session.pending.values()
    assert item.key == ("etl", "etl-app-driver") and item.operator == "SparkKubernetesOperator"
    assert called == [1]
