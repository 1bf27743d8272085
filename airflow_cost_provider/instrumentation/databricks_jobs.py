"""Databricks job runs started through `DatabricksHook.submit_run` and `DatabricksHook.run_now`.

`DatabricksSubmitRunOperator` and `DatabricksRunNowOperator` (normal and deferrable) and user code
calling the hook all start their runs there. A one-time run (runs/submit) carries the task's identity
as `custom_tags` on every new cluster it defines (Databricks copies them to the cloud VMs and to
`system.billing.usage.custom_tags`) and gets a `run_name` when it has none. run-now takes no tags: the
job's own settings define its clusters, and the run id is the join key.

Measured when the task ends, from the run as `jobs/runs/get` describes it (the terminal run the
operator already read while waiting is reused, so a waited-for run costs no extra call): each cluster
the run used (a task's new cluster, a shared job cluster, an all-purpose cluster) x how long it ran.
A classic cluster's DBUs per hour come from the price book's `databricks_dbu_per_hour` factors by node
type (driver + workers; an autoscaled cluster counts the middle of its bounds), priced at the
`databricks/dbu` list price of its compute type, plus the cloud VMs as `instance_time` by node type.
All estimates: Databricks bills exact DBUs in `system.billing.usage`, hours after the run.

A pipeline task (`pipeline_task`: an update of a Lakeflow Declarative Pipeline, formerly Delta Live
Tables) runs on the pipeline's own compute: `GET /api/2.0/pipelines/{id}` gives its update cluster,
edition and serverless flag and the update the task started. Classic compute is priced as above at the
edition's DBU price (`dlt_core`, `dlt_pro`, `dlt_advanced`); a serverless pipeline is kept unpriced with
the pipeline and update ids that find its DBUs in `system.billing.usage`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    LookupBudget,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.pricing.money import EXACT
from airflow_cost_provider.tagging import statement_name

SOURCE = "databricks"
HOOK_MODULE = "airflow.providers.databricks.hooks.databricks"
DBU_FACTOR_TABLE = "databricks_dbu_per_hour"
# Seconds one REST call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
# The share of the finalize budget look-ups may use: pricing and the ledger write need the rest.
LOOKUP_SHARE = 0.7
# Runs remembered per process so the terminal run the task reads can be kept on its pending item.
MAX_REMEMBERED_RUNS = 256
DBU_QUANTUM = Decimal("1e-12")
MS_PER_HOUR = Decimal(3_600_000)
TERMINAL_STATES = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")

# Cluster custom tags: at most 45 per cluster; on AWS keys hold 127 characters and values 255, of
# letters, digits, spaces and `+ - = . _ : / @` (Azure and GCP accept a subset of what AWS does).
# https://docs.databricks.com/en/admin/account-settings/usage-detail-tags.html
MAX_CUSTOM_TAGS = 45
TAG_KEY_MAX = 127
TAG_VALUE_MAX = 255
_TAG_INVALID = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")
TAG_PRIORITY = (
    "openlineage_run_id",
    "airflow_dag_id",
    "airflow_task_id",
    "airflow_run_id",
    "airflow_try_number",
    "airflow_map_index",
)

# (workspace URL, cluster id) -> the all-purpose cluster as clusters/get returned it
_clusters: dict[tuple[str, str], dict[str, Any]] = {}
_clusters_lock = threading.Lock()


# ---------------------------------------------------------------------------------------- tagging


def _tag_text(text: str, limit: int) -> str:
    return _TAG_INVALID.sub("_", text)[:limit]


def merged_custom_tags(user_tags: Mapping[str, Any] | None, task_tags: Mapping[str, str]) -> dict[str, Any]:
    """The user's cluster tags, plus the task's where they do not clash and while the limit allows."""
    merged = dict(user_tags or {})
    ranked = sorted(
        task_tags, key=lambda k: TAG_PRIORITY.index(k) if k in TAG_PRIORITY else len(TAG_PRIORITY)
    )
    for key in ranked:
        if len(merged) >= MAX_CUSTOM_TAGS:
            break
        merged.setdefault(_tag_text(key, TAG_KEY_MAX), _tag_text(str(task_tags[key]), TAG_VALUE_MAX))
    return merged


def _tagged_cluster(spec: Any, tags: Mapping[str, str]) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    user_tags = spec.get("custom_tags")
    if user_tags is not None and not isinstance(user_tags, Mapping):
        return spec
    return {**spec, "custom_tags": merged_custom_tags(user_tags, tags)}


def tagged_submit_json(body: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a runs/submit body whose new clusters carry the identity; the caller's dict is kept."""
    tagged = dict(body)
    if "new_cluster" in tagged:
        tagged["new_cluster"] = _tagged_cluster(tagged["new_cluster"], tags)
    if isinstance(tagged.get("tasks"), list):
        tagged["tasks"] = [
            {**task, "new_cluster": _tagged_cluster(task["new_cluster"], tags)}
            if isinstance(task, Mapping) and "new_cluster" in task
            else task
            for task in tagged["tasks"]
        ]
    if isinstance(tagged.get("job_clusters"), list):
        tagged["job_clusters"] = [
            {**cluster, "new_cluster": _tagged_cluster(cluster["new_cluster"], tags)}
            if isinstance(cluster, Mapping) and "new_cluster" in cluster
            else cluster
            for cluster in tagged["job_clusters"]
        ]
    if not tagged.get("run_name"):
        tagged["run_name"] = statement_name(tags, limit=4096)
    return tagged


# ------------------------------------------------------------------------------------- measuring


def _epoch_ms(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _when(ms: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc) if ms else None


def _duration_ms(entry: Mapping[str, Any]) -> int | None:
    """How long a run or task held its compute: end - start, else the sum of its phases."""
    start, end = _epoch_ms(entry.get("start_time")), _epoch_ms(entry.get("end_time"))
    if start and end and end >= start:
        return end - start
    phases = [entry.get(k) for k in ("setup_duration", "execution_duration", "cleanup_duration")]
    if any(isinstance(p, int) for p in phases):
        return sum(p for p in phases if isinstance(p, int))
    if isinstance(entry.get("run_duration"), int):
        return entry["run_duration"]
    return None


def dbus(dbu_per_hour: Decimal, duration_ms: Decimal) -> Decimal:
    return EXACT.divide(EXACT.multiply(dbu_per_hour, duration_ms), MS_PER_HOUR).quantize(
        DBU_QUANTUM, context=EXACT
    )


def worker_count(spec: Mapping[str, Any]) -> tuple[Decimal, dict[str, Any]]:
    """Workers of a cluster spec, and how the number was found. An autoscaled cluster's size over
    time is not in the run: the middle of its bounds is the estimate."""
    autoscale = spec.get("autoscale")
    if isinstance(autoscale, Mapping):
        low, high = int(autoscale.get("min_workers") or 0), int(autoscale.get("max_workers") or 0)
        return Decimal(low + high) / 2, {
            "min_workers": low,
            "max_workers": high,
            "workers_estimate": "autoscale_midpoint",
        }
    return Decimal(int(spec.get("num_workers") or 0)), {"num_workers": int(spec.get("num_workers") or 0)}


def _factor(node_type: str) -> Decimal | None:
    from airflow_cost_provider import tracker

    return tracker.price_book().factor(DBU_FACTOR_TABLE, node_type)


@dataclasses.dataclass
class ComputeWindow:
    """One cluster (or serverless environment) a run used, and the time it was held."""

    key: str
    kind: str  # new_cluster | job_cluster | existing_cluster | serverless | sql_warehouse
    spec: dict[str, Any]
    start_ms: int | None
    end_ms: int | None
    duration_ms: int
    task_keys: list[str]
    cluster_id: str | None = None


def compute_windows(run: Mapping[str, Any]) -> list[ComputeWindow]:
    """The compute a run used: each task's new cluster, each shared job cluster from the first of its
    tasks to start to the last to end, each all-purpose cluster per task, and serverless tasks."""
    job_clusters = {
        c.get("job_cluster_key"): dict(c.get("new_cluster") or {})
        for c in run.get("job_clusters") or []
        if isinstance(c, Mapping)
    }
    tasks = [t for t in run.get("tasks") or [] if isinstance(t, Mapping)]
    if not tasks:
        tasks = [run]  # a single-task run described at the top level (older API shapes)
    windows: list[ComputeWindow] = []
    shared: dict[str, ComputeWindow] = {}
    for task in tasks:
        duration = _duration_ms(task)
        if duration is None:
            continue
        start, end = _epoch_ms(task.get("start_time")), _epoch_ms(task.get("end_time"))
        task_key = str(task.get("task_key") or run.get("run_name") or run.get("run_id"))
        cluster_id = (task.get("cluster_instance") or {}).get("cluster_id")
        if isinstance(task.get("new_cluster"), Mapping):
            windows.append(
                ComputeWindow(
                    f"task:{task_key}",
                    "new_cluster",
                    dict(task["new_cluster"]),
                    start,
                    end,
                    duration,
                    [task_key],
                    cluster_id,
                )
            )
        elif task.get("job_cluster_key") in job_clusters:
            key = str(task["job_cluster_key"])
            window = shared.get(key)
            if window is None:
                window = shared[key] = ComputeWindow(
                    f"job_cluster:{key}",
                    "job_cluster",
                    job_clusters[key],
                    start,
                    end,
                    duration,
                    [],
                    cluster_id,
                )
                windows.append(window)
            else:
                window.start_ms = min(filter(None, (window.start_ms, start)), default=None)
                window.end_ms = max(filter(None, (window.end_ms, end)), default=None)
                if window.start_ms and window.end_ms:
                    window.duration_ms = window.end_ms - window.start_ms
                else:
                    window.duration_ms += duration
            window.task_keys.append(task_key)
        elif task.get("existing_cluster_id"):
            cluster = str(task["existing_cluster_id"])
            windows.append(
                ComputeWindow(
                    f"existing_cluster:{cluster}",
                    "existing_cluster",
                    {},
                    start,
                    end,
                    duration,
                    [task_key],
                    cluster,
                )
            )
        elif (task.get("sql_task") or {}).get("warehouse_id") or (task.get("dbt_task") or {}).get(
            "warehouse_id"
        ):
            warehouse = (task.get("sql_task") or {}).get("warehouse_id") or task["dbt_task"]["warehouse_id"]
            windows.append(
                ComputeWindow(
                    f"sql_warehouse:{warehouse}",
                    "sql_warehouse",
                    {"warehouse_id": warehouse},
                    start,
                    end,
                    duration,
                    [task_key],
                )
            )
        elif isinstance(task.get("pipeline_task"), Mapping) and task["pipeline_task"].get("pipeline_id"):
            pipeline = str(task["pipeline_task"]["pipeline_id"])
            windows.append(
                ComputeWindow(
                    f"pipeline:{pipeline}",
                    "pipeline",
                    {
                        "pipeline_id": pipeline,
                        "full_refresh": bool(task["pipeline_task"].get("full_refresh")),
                    },
                    start,
                    end,
                    duration,
                    [task_key],
                )
            )
        else:
            windows.append(
                ComputeWindow(f"serverless:{task_key}", "serverless", {}, start, end, duration, [task_key])
            )
    return windows


def _common_attributes(run: Mapping[str, Any], window: ComputeWindow, conn_id: str | None) -> dict[str, Any]:
    state = run.get("state") or {}
    attributes: dict[str, Any] = {
        "conn_id": conn_id,
        "compute": window.kind,
        "cluster_key": window.key,
        "task_keys": ",".join(window.task_keys),
        "duration_ms": str(window.duration_ms),
        "run_state": str(state.get("result_state") or state.get("life_cycle_state") or ""),
    }
    if run.get("job_id"):
        attributes["job_id"] = str(run["job_id"])
    if window.cluster_id:
        attributes["cluster_id"] = str(window.cluster_id)
    return attributes


def window_usage(
    run: Mapping[str, Any],
    window: ComputeWindow,
    conn_id: str | None,
    cluster: Mapping[str, Any] | None = None,
    compute_type: str = "jobs_compute",
) -> list[Usage]:
    """DBUs and cloud VM time of one compute window (unpriced, with the reason, where not derivable)."""
    run_id = str(run.get("run_id"))
    attributes = _common_attributes(run, window, conn_id)
    start, end = _when(window.start_ms), _when(window.end_ms)
    resource = window.cluster_id or window.key
    if window.kind in ("serverless", "sql_warehouse"):
        if window.kind == "serverless":
            attributes["compute_type"] = "jobs_serverless"
            reason = (
                "serverless job compute reports its DBUs only in system.billing.usage "
                f"(usage_metadata.job_run_id = {run_id}), hours after the run"
            )
        else:
            attributes["warehouse_id"] = str(window.spec["warehouse_id"])
            reason = "the task ran on a SQL warehouse, which bills its own uptime; see the warehouse's cost"
        attributes[UNPRICED_HINT_ATTRIBUTE] = reason
        return [
            Usage(
                SOURCE,
                "run_time",
                Decimal(window.duration_ms),
                "ms",
                resource,
                run_id,
                start,
                end,
                attributes,
            )
        ]
    spec = dict(cluster or window.spec)
    if window.kind == "existing_cluster":
        attributes.update(compute_type="all_purpose", allocation_share="1", allocation_basis="task_duration")
        attributes[METHOD_ATTRIBUTE] = "allocated"
    else:
        attributes["compute_type"] = compute_type
        attributes[METHOD_ATTRIBUTE] = "list_price"
    node_type = spec.get("node_type_id")
    driver_type = spec.get("driver_node_type_id") or node_type
    workers, worker_attributes = worker_count(spec)
    attributes.update(worker_attributes)
    if str(spec.get("runtime_engine") or "").upper() == "PHOTON":
        attributes["photon"] = True
    if not node_type:
        attributes[UNPRICED_HINT_ATTRIBUTE] = (
            "the cluster names no node_type_id (an instance pool's node type is not looked up)"
        )
        return [
            Usage(
                SOURCE,
                "cluster_time",
                Decimal(window.duration_ms),
                "ms",
                resource,
                run_id,
                start,
                end,
                attributes,
            )
        ]
    attributes.update(node_type=str(node_type), driver_node_type=str(driver_type))
    duration = Decimal(window.duration_ms)
    usages: list[Usage] = []
    driver_rate, worker_rate = _factor(str(driver_type)), _factor(str(node_type))
    if driver_rate is None or worker_rate is None:
        missing = node_type if worker_rate is None else driver_type
        dbu_usage = Usage(
            SOURCE,
            "cluster_time",
            duration,
            "ms",
            resource,
            run_id,
            start,
            end,
            {
                **attributes,
                UNPRICED_HINT_ATTRIBUTE: f"no DBU rate for node type {missing!r} in the price book's "
                f"factors.{DBU_FACTOR_TABLE}",
            },
        )
    else:
        rate = driver_rate + workers * worker_rate
        dbu_usage = Usage(
            SOURCE,
            "dbu",
            dbus(rate, duration),
            "DBU",
            resource,
            run_id,
            start,
            end,
            {
                **attributes,
                "dbu_per_hour": str(rate),
                UNPRICED_HINT_ATTRIBUTE: f"add a databricks/dbu price for compute_type {attributes['compute_type']}",
            },
        )
    usages.append(dbu_usage)
    # the cloud provider bills the VMs of classic compute on top of the DBUs
    nodes = {str(driver_type): Decimal(1)}
    nodes[str(node_type)] = nodes.get(str(node_type), Decimal(0)) + workers
    for vm_type, count in nodes.items():
        if count == 0:
            continue
        usages.append(
            Usage(
                SOURCE,
                "instance_time",
                EXACT.divide(EXACT.multiply(count, duration), Decimal(1000)),
                "instance-second",
                resource,
                run_id,
                start,
                end,
                {
                    **attributes,
                    "node_type": vm_type,
                    "instances": str(count),
                    "component": "cloud_vm",
                    UNPRICED_HINT_ATTRIBUTE: f"add a databricks/instance_time price for node_type {vm_type}",
                },
            )
        )
    return usages


# ------------------------------------------------------------------------------------- pipelines


def _iso_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def pipeline_update(pipeline: Mapping[str, Any], window: ComputeWindow) -> dict[str, Any] | None:
    """The update the pipeline task started: of the pipeline's `latest_updates`, the first created
    within the task's time (a minute of clock skew allowed)."""
    if window.start_ms is None:
        return None
    end = window.end_ms or window.start_ms + window.duration_ms
    candidates = []
    for update in pipeline.get("latest_updates") or []:
        if not isinstance(update, Mapping) or not update.get("update_id"):
            continue
        created = _iso_ms(update.get("creation_time"))
        if created is not None and window.start_ms - 60_000 <= created <= end:
            candidates.append((created, dict(update)))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def pipeline_usage(
    run: Mapping[str, Any], window: ComputeWindow, conn_id: str | None, pipeline: Mapping[str, Any]
) -> list[Usage]:
    """A pipeline task's update (Lakeflow Declarative Pipelines, formerly Delta Live Tables). On classic
    compute: the update cluster's DBUs for the task's time, priced at the pipeline edition's DBU price
    (`dlt_core`, `dlt_pro`, `dlt_advanced`), and its VMs. Serverless: kept, unpriced, with the ids that
    find its DBUs in system.billing.usage."""
    spec = pipeline.get("spec") or {}
    pipeline_id = str(window.spec["pipeline_id"])
    edition = str(spec.get("edition") or "ADVANCED").lower()  # the API's default edition
    update = pipeline_update(pipeline, window)
    extra: dict[str, Any] = {"pipeline_id": pipeline_id, "edition": edition}
    if spec.get("name") or pipeline.get("name"):
        extra["pipeline_name"] = str(spec.get("name") or pipeline.get("name"))
    if window.spec.get("full_refresh"):
        extra["full_refresh"] = True
    if update is not None:
        extra["update_id"] = str(update["update_id"])
        if update.get("state"):
            extra["update_state"] = str(update["state"])
    if spec.get("photon"):
        extra["photon"] = True
    where = f"usage_metadata.dlt_pipeline_id = {pipeline_id}"
    if update is not None:
        where += f" AND usage_metadata.dlt_update_id = {update['update_id']}"
    if spec.get("serverless"):
        attributes = {
            **_common_attributes(run, window, conn_id),
            **extra,
            "compute_type": "dlt_serverless",
            UNPRICED_HINT_ATTRIBUTE: "a serverless pipeline reports its DBUs only in system.billing.usage "
            f"({where}), hours after the update",
        }
        return [
            Usage(
                SOURCE,
                "run_time",
                Decimal(window.duration_ms),
                "ms",
                pipeline_id,
                str(run.get("run_id")),
                _when(window.start_ms),
                _when(window.end_ms),
                attributes,
            )
        ]
    clusters = [c for c in spec.get("clusters") or [] if isinstance(c, Mapping)]
    cluster = next((c for c in clusters if c.get("label") in (None, "default")), None) or {}
    usages = window_usage(
        run, dataclasses.replace(window, spec=dict(cluster)), conn_id, compute_type=f"dlt_{edition}"
    )
    return [
        dataclasses.replace(
            u,
            resource=pipeline_id,
            attributes={**u.attributes, **extra, "billing_lookup": where},
        )
        for u in usages
    ]


def _pipeline(conn_id: str, pipeline_id: str, budget: _Budget) -> dict[str, Any]:
    """GET /api/2.0/pipelines/{id}: the pipeline's spec (clusters, edition, serverless) and its latest updates."""
    from urllib.parse import quote

    return _hook(conn_id, budget.timeout())._do_api_call(
        ("GET", f"2.0/pipelines/{quote(pipeline_id, safe='')}"), {}
    )


@dataclasses.dataclass
class DatabricksRun:
    """A job run whose compute is read when the task ends; plain values only, so it survives a
    deferral. `final_run` is the terminal run as the task itself last read it, when it did."""

    run_id: int
    conn_id: str
    api_base: str
    started_by: str  # submit_run | run_now
    final_run: dict[str, Any] | None = None
    source: str = SOURCE

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(
            SOURCE, str(self.run_id), reason, conn_id=self.conn_id, started_by=self.started_by
        )


def is_terminal(run: Mapping[str, Any]) -> bool:
    return str((run.get("state") or {}).get("life_cycle_state") or "") in TERMINAL_STATES


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def _hook(conn_id: str, timeout: float) -> Any:
    """A hook of the task's connection that tries once: the finalize budget is short."""
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    hook = DatabricksHook(conn_id, retry_limit=1, caller="airflow-cost-provider")
    hook.timeout_seconds = timeout
    return hook


def _cluster(conn_id: str, api_base: str, cluster_id: str, budget: _Budget) -> dict[str, Any]:
    """An all-purpose cluster's spec, read once per process (its size rarely changes)."""
    from airflow.providers.databricks.hooks.databricks import GET_CLUSTER_ENDPOINT

    key = (api_base, cluster_id)
    with _clusters_lock:
        cached = _clusters.get(key)
    if cached is None:
        cached = _hook(conn_id, budget.timeout())._do_api_call(
            GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id}
        )
        with _clusters_lock:
            _clusters[key] = cached
    return cached


def clear_cluster_cache() -> None:
    with _clusters_lock:
        _clusters.clear()


def resolve_runs(items: list[DatabricksRun], timeout_seconds: float) -> list[Usage]:
    """runs/get for each run the task did not see finish (the Jobs API has no batch get), then each
    compute window's usage; a run not readable in time is kept unpriced with the reason."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.api_base, i.run_id): i for i in items}.values():
        run = item.final_run
        if run is None:
            try:
                run = _hook(item.conn_id, budget.timeout()).get_run(item.run_id)
            except Exception as error:
                usages.append(item.unresolved(f"runs/get failed: {type(error).__name__}: {error}"))
                continue
        usages += run_usage(item, run, budget)
    return usages


def run_usage(item: DatabricksRun, run: Mapping[str, Any], budget: _Budget) -> list[Usage]:
    if not is_terminal(run):
        state = (run.get("state") or {}).get("life_cycle_state") or "unknown"
        return [
            item.unresolved(
                f"the run was still {state} when the task ended: look it up by run id in system.billing.usage "
                "(usage_metadata.job_run_id)"
            )
        ]
    usages: list[Usage] = []
    windows = compute_windows(run)
    if not windows:
        return [item.unresolved("the run reports no task that held compute")]
    for window in windows:
        cluster = None
        if window.kind == "pipeline":
            pipeline_id = str(window.spec["pipeline_id"])
            try:
                pipeline = _pipeline(item.conn_id, pipeline_id, budget)
                found = pipeline_usage(run, window, item.conn_id, pipeline)
            except Exception as error:
                found = [
                    dataclasses.replace(
                        item.unresolved(
                            f"pipelines/get {pipeline_id} failed: {type(error).__name__}: {error}"
                        ),
                        resource=pipeline_id,
                    )
                ]
            usages += [
                dataclasses.replace(u, attributes={**u.attributes, "started_by": item.started_by})
                for u in found
            ]
            continue
        if window.kind == "existing_cluster":
            try:
                cluster = _cluster(item.conn_id, item.api_base, str(window.cluster_id), budget)
            except Exception as error:
                usages.append(
                    dataclasses.replace(
                        item.unresolved(
                            f"clusters/get {window.cluster_id} failed: {type(error).__name__}: {error}"
                        ),
                        resource=window.cluster_id,
                    )
                )
                continue
        try:
            found = window_usage(run, window, item.conn_id, cluster)
        except Exception as error:  # a run shape or price book we cannot read: keep the run, unpriced
            found = [item.unresolved(f"cannot compute its DBUs: {type(error).__name__}: {error}")]
        workspace = _workspace_host(item.api_base)
        usages += [
            dataclasses.replace(u, attributes={**u.attributes, "started_by": item.started_by, **workspace})
            for u in found
        ]
    return usages


def _workspace_host(api_base: str) -> dict[str, str]:
    """{"host": the workspace's host name} (where its console is) when it is served on https's own
    port, else nothing."""
    from urllib.parse import urlsplit

    parts = urlsplit(api_base)
    if parts.scheme != "https" or parts.port is not None or not parts.hostname:
        return {}
    return {"host": parts.hostname}


# -------------------------------------------------------------------------------------- wrapping


def api_base_of(hook: Any) -> str:
    """The workspace's REST base URL, built as the provider builds it (connection schema, host, port)."""
    connection = hook.databricks_conn
    port = f":{connection.port}" if connection.port else ""
    return f"{connection.schema or 'https'}://{hook.host}{port}"


# (workspace URL, run id) -> the pending item, so the terminal run the task reads later is kept on it
_items_by_run: OrderedDict[tuple[str, int], DatabricksRun] = OrderedDict()
_items_lock = threading.Lock()


def _capture(session: CaptureSession, hook: Any, run_id: Any, started_by: str) -> None:
    item = DatabricksRun(
        run_id=int(run_id), conn_id=hook.databricks_conn_id, api_base=api_base_of(hook), started_by=started_by
    )
    with _items_lock:
        _items_by_run[(item.api_base, item.run_id)] = item
        while len(_items_by_run) > MAX_REMEMBERED_RUNS:
            _items_by_run.popitem(last=False)
    session.defer(resolve_runs, item)


def _keep_final_run(hook: Any, run_id: Any, run: Any) -> None:
    if not isinstance(run, Mapping) or not is_terminal(run):
        return
    with _items_lock:
        item = _items_by_run.get((api_base_of(hook), int(run_id)))
    if item is not None and item.final_run is None:
        item.final_run = dict(run)


def _run_wrapper(started_by: str):
    def wrapper(wrapped, instance, args, kwargs):
        session = task_session()
        if session is None or not conf.source_enabled(SOURCE):
            return wrapped(*args, **kwargs)
        call_args, call_kwargs = args, kwargs
        if started_by == "submit_run" and conf.tagging_on(SOURCE):
            body = kwargs.get("json", args[0] if args else None)
            if isinstance(body, Mapping):
                tagged = guarded_step("tagging a Databricks run", tagged_submit_json, body, session.tags)
                if tagged is not None:
                    call_args, call_kwargs = (), {**kwargs, "json": tagged}
        run_id = wrapped(*call_args, **call_kwargs)
        guarded_step("capturing a Databricks run", _capture, session, instance, run_id, started_by)
        return run_id

    return wrapper


def _get_run_wrapper(wrapped, instance, args, kwargs):
    run = wrapped(*args, **kwargs)
    if task_session() is not None:
        run_id = kwargs.get("run_id", args[0] if args else None)
        guarded_step("capturing a Databricks run", _keep_final_run, instance, run_id, run)
    return run


class DatabricksJobs(Instrumentation):
    name = "databricks_jobs"
    sources = (SOURCE,)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.DatabricksHook, "submit_run", _run_wrapper("submit_run"))
        self.wrap(module.DatabricksHook, "run_now", _run_wrapper("run_now"))
        self.wrap(module.DatabricksHook, "get_run", _get_run_wrapper)
