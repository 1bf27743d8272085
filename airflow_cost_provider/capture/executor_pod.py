"""The task's own pod under the KubernetesExecutor.

There each task try runs in a pod of its own, whose CPU and memory requests are reserved on a node
from the container's start whether the task uses them or not. So the try is priced as that pod,
the way a `KubernetesPodOperator` pod is (per container, max(request, usage) x running time at the
node's rate; requests only, as no metrics source is read), instead of the worker process's CPU time
and memory: the process runs inside those requests, and counting both would count it twice. When
the pod cannot be read, the worker measurement stays, beside an unpriced line saying why.

The pod is read through the client the executor itself uses (`[kubernetes_executor]` in_cluster,
config_file, cluster_context); its name is the pod's hostname and its namespace the service
account's (else `[kubernetes_executor] namespace`). Airflow marks its executor pods with the
environment variable AIRFLOW_IS_K8S_EXECUTOR_POD.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

from airflow_cost_provider.pricing.model import Usage

MARKER = "AIRFLOW_IS_K8S_EXECUTOR_POD"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = 5.0


def in_executor_pod() -> bool:
    return os.environ.get(MARKER, "").lower() == "true"


def pod_name() -> str:
    # Kubernetes sets HOSTNAME to the pod's name
    return os.environ.get("HOSTNAME") or socket.gethostname()


def namespace() -> str:
    try:
        return NAMESPACE_FILE.read_text().strip() or _configured_namespace()
    except OSError:
        return _configured_namespace()


def _configured_namespace() -> str:
    from airflow.configuration import conf

    return conf.get("kubernetes_executor", "namespace", fallback="default") or "default"


def _client() -> Any:
    from airflow.configuration import conf
    from airflow.providers.cncf.kubernetes.kube_client import get_kube_client

    client = get_kube_client(
        in_cluster=conf.getboolean("kubernetes_executor", "in_cluster", fallback=True),
        cluster_context=conf.get("kubernetes_executor", "cluster_context", fallback=None) or None,
        config_file=conf.get("kubernetes_executor", "config_file", fallback=None) or None,
    )
    # one attempt per call: urllib3 would retry a timed-out read, past the finalize budget
    pool_manager = getattr(getattr(client.api_client, "rest_client", None), "pool_manager", None)
    if pool_manager is not None:
        pool_manager.connection_pool_kw["retries"] = False
    return client


def own_pod_usages(timeout: float) -> tuple[list[Usage], bool]:
    """(usages, read): the pod's lines, read True; or one unpriced line with the reason, read False."""
    from airflow_cost_provider.capture.safety import suppress
    from airflow_cost_provider.instrumentation.kubernetes import KubernetesPod, _api_error, _to_json

    # here, not at the top: every task end imports this module to ask in_executor_pod()
    from airflow_cost_provider.pricing.kubernetes import pod_usages, slim_pod

    name, space = pod_name(), namespace()
    timeout = min(timeout, REQUEST_TIMEOUT)
    try:
        with suppress():
            client = _client()
            pod = slim_pod(_to_json(client.read_namespaced_pod(name, space, _request_timeout=timeout)))
    except Exception as error:
        pod_ref = KubernetesPod(space, name, operator="KubernetesExecutor")
        return [pod_ref.unresolved(f"the task's own pod could not be read: {_api_error(error)}")], False
    observed = dt.datetime.now(dt.timezone.utc)
    node = (pod.get("spec") or {}).get("nodeName")
    labels, node_error = None, None
    if node:
        try:
            with suppress():
                labels = dict(client.read_node(node, _request_timeout=timeout).metadata.labels or {})
        except Exception as error:  # no `get nodes` for the service account: the default rate applies
            node_error = f"node {node} not readable: {_api_error(error)}"
    extra: dict[str, Any] = {"operator": "KubernetesExecutor", "usage_source": "none (requests only)"}
    if node_error:
        extra["node_labels_error"] = node_error
    return pod_usages(pod, observed, node_labels=labels, extra_attributes=extra), True
