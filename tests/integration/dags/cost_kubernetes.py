"""Test DAG: the cncf-kubernetes provider's own KubernetesPodOperator (normal and deferrable),
@task.kubernetes and SparkKubernetesOperator, unchanged, against the fake Kubernetes API server the
tests start (the kubernetes_default connection comes from the environment). Each pod's name tells the
fake its plan."""

from __future__ import annotations

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
from airflow.sdk import dag, task
from kubernetes.client import models as k8s

LONG_LABEL = "a-cost-label-value-much-longer-than-the-sixty-three-characters-kubernetes-allows"
SMALL = k8s.V1ResourceRequirements(
    requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}
)
LARGE = k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "4Gi"})
GPU = k8s.V1ResourceRequirements(
    requests={"cpu": "1", "memory": "2Gi"}, limits={"nvidia.com/gpu": "1", "memory": "2Gi"}
)
SPARK_APP = {
    "apiVersion": "sparkoperator.k8s.io/v1beta2",
    "kind": "SparkApplication",
    "metadata": {"name": "spark-etl", "namespace": "etl"},
    "spec": {
        "type": "Python",
        "mode": "cluster",
        "image": "spark:3.5.3",
        "mainApplicationFile": "local:///opt/spark/jobs/etl.py",
        "sparkVersion": "3.5.3",
        "driver": {"cores": 1, "memory": "2g", "serviceAccount": "spark"},
        "executor": {"cores": 2, "instances": 2, "memory": "4g", "memoryOverhead": "512m"},
    },
}
COMMON = {"namespace": "etl", "image": "busybox:1.36", "cmds": ["sh", "-c"], "arguments": ["echo hi"]}


@dag(
    dag_id="cost_kubernetes",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["team:data-platform"],
)
def cost_kubernetes():
    KubernetesPodOperator(
        task_id="etl_step",
        name="etl-step",
        container_resources=SMALL,
        params={"cost_labels": {"project": LONG_LABEL}},
        **COMMON,
    )
    KubernetesPodOperator(
        task_id="deferred_step",
        name="deferred-step",
        container_resources=LARGE,
        deferrable=True,
        poll_interval=1,
        **COMMON,
    )
    KubernetesPodOperator(
        task_id="collected_early",
        name="collected-early",
        container_resources=SMALL,
        deferrable=True,
        poll_interval=1,
        **COMMON,
    )

    @task.kubernetes(
        task_id="gpu_scoring",
        name="gpu-scoring",
        namespace="ml",
        image="python:3.12-slim",
        container_resources=GPU,
        do_xcom_push=False,
    )
    def gpu_scoring():
        print("scoring")

    gpu_scoring()

    SparkKubernetesOperator(
        task_id="spark_etl", name="spark-etl", namespace="etl", template_spec={"spark": SPARK_APP}
    )


cost_kubernetes()
