"""The identity as Kubernetes pod labels, sanitised as Airflow sanitises its own.

`KubernetesPodOperator` already labels its pods with `dag_id`, `task_id`, `run_id`, `try_number` and
`map_index` (values through `pod_generator.make_safe_label_value`). What it lacks is added: the
OpenLineage run id, the team and the cost labels, so OpenCost, Kubecost, GKE cost allocation and AWS
split cost allocation can group the pods' cost by them. A label the pod already has is never changed.

https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

MAX_LABEL_LEN = 63
# The tags Airflow's own labels already carry (tag -> Airflow's label).
AIRFLOW_LABELS = {
    "airflow_dag_id": "dag_id",
    "airflow_task_id": "task_id",
    "airflow_run_id": "run_id",
    "airflow_try_number": "try_number",
    "airflow_map_index": "map_index",
}
_VALUE_STRIP = re.compile(r"^[^a-z0-9A-Z]*|[^a-zA-Z0-9_\-\.]|[^a-z0-9A-Z]*$")
_KEY_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


def safe_label_value(value: str) -> str:
    """Airflow's `make_safe_label_value`: invalid characters dropped, and a value that was changed or is
    longer than 63 characters cut to 53 plus `-` and 9 characters of its MD5, so it stays unique."""
    safe = _VALUE_STRIP.sub("", value)
    if len(safe) > MAX_LABEL_LEN or value != safe:
        digest = hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()[:9]
        safe = safe[: MAX_LABEL_LEN - len(digest) - 1] + "-" + digest
    return safe


def safe_label_key(key: str) -> str | None:
    """A label name (no prefix): at most 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric."""
    name = _KEY_INVALID.sub("_", key)[:MAX_LABEL_LEN].strip("_.-")
    return name or None


def pod_labels(tags: Mapping[str, str], existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels to add to a pod: each tag Airflow's labels do not carry yet, never one the pod has."""
    present = dict(existing or {})
    added: dict[str, str] = {}
    for tag, value in tags.items():
        if AIRFLOW_LABELS.get(tag) in present:
            continue
        key = safe_label_key(tag)
        if key is None or key in present or key in added:
            continue
        added[key] = safe_label_value(str(value))
    return added
