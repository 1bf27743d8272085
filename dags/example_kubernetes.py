"""Kubernetes: transform the day's orders in a pod, then score them in a pod with a GPU (deferrable).

Cost: each pod the task runs is priced the way the Kubernetes cost tools price it: per container, the
larger of its CPU and memory requests and its measured usage (requests alone here: no metrics source)
x how long the container ran (`startedAt` to `finishedAt` in the pod's status) x the node's price per
vCPU-hour and GiB-hour, by the node's `node.kubernetes.io/instance-type` or pool label where your price
book has an entry for it, else the shipped default; GPUs (`nvidia.com/gpu`) per GPU-hour. Lines are
`cpu_time`, `memory_time` and `gpu_time` of source `kubernetes`, method `runtime_rate`; limits are kept
on the line, not priced. A pod that never started, or that was deleted before its status could be
read, is kept unpriced with the reason.

Tags: the pods carry Airflow's own labels (dag_id, task_id, run_id, try_number) and the task's
`openlineage_run_id`, `airflow_team` and `cost_label_*` labels (63 characters at most, cut the way
Airflow cuts its own), so OpenCost, Kubecost, GKE cost allocation and AWS split cost allocation can
group the cluster's bill by them.

Connection: `kubernetes_default` (a kubeconfig path, or in-cluster). Set the namespace and images to
yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag
from kubernetes.client import models as k8s


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    params={"cost_team": "analytics", "cost_labels": {"product": "shop"}},
    tags=["cost-provider", "example", "cncf-kubernetes"],
)
def example_kubernetes():
    transform_orders = KubernetesPodOperator(
        task_id="transform_orders",
        kubernetes_conn_id="kubernetes_default",
        namespace="data-pipelines",
        name="transform-orders",
        image="ghcr.io/example/shop-transform:1.4.0",
        arguments=["--date", "{{ ds }}"],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}
        ),
    )

    score_orders = KubernetesPodOperator(
        task_id="score_orders",
        kubernetes_conn_id="kubernetes_default",
        namespace="data-pipelines",
        name="score-orders",
        image="ghcr.io/example/shop-scoring:2.0.1",
        arguments=["--date", "{{ ds }}"],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "2", "memory": "8Gi"}, limits={"nvidia.com/gpu": "1", "memory": "8Gi"}
        ),
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        deferrable=True,
    )

    transform_orders >> score_orders


example_kubernetes()
