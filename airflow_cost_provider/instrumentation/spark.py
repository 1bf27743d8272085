"""Spark applications started through `SparkSubmitHook.submit` (SparkSubmitOperator on YARN, standalone
and Kubernetes masters) and Apache Livy batches (`LivyHook.post_batch`, LivyOperator).

Tagged at the source, without changing what the job does: the Spark conf gets the task's identity as
inert `spark.airflow.*` properties (shown in the Spark UI's Environment tab and the history server), as
YARN application tags (`spark.yarn.tags`, merged with the user's) and, on Kubernetes, as driver and
executor pod labels (`spark.kubernetes.{driver,executor}.label.*`, sanitised as Airflow sanitises its
own pod labels). A Livy batch carries the same conf, and the task's name when it has none. Whatever
the user set already is kept.

Measured when the task ends, from the application id: the one the hook parsed from spark-submit's
output (YARN, Kubernetes) or that this module read there (standalone's "app ID app-...", client-mode
driver logs), the Livy batch's `appId`, or, failing those, the history server's application that
carries the task's `spark.airflow.openlineage_run_id` (standalone cluster mode reports only a driver
id). Usage, in the cluster's own units:

- YARN ResourceManager (`/ws/v1/cluster/apps/{id}`): `vcoreSeconds` and `memorySeconds` (MiB-seconds),
  every container of the application including its ApplicationMaster (the driver in cluster mode);
- Spark history server (`/api/v1/applications/{id}`, `/allexecutors`, `/environment`): each executor's
  `totalCores` and container memory (spark.executor.memory plus its overhead) from its addTime to its
  removeTime (or the application's end), plus the driver's cores and memory for the application's
  duration when it ran in the cluster (in client mode it is the Airflow worker's process, already
  measured as the worker's compute).

Priced per vCPU-hour and GiB-hour (`spark/core_time`, `spark/memory_time`, list_price), or, when the
connection's [cost_provider] connection_pricing gives the cluster's capacity (`cluster_vcores`, and
`cluster_memory_gib`), as an `allocated` share of the cluster's cost per hour (`spark/cluster_time`):
the application's dominant share of the cluster (its vCPU-seconds over the cluster's vCPUs, or its
GiB-seconds over the cluster's memory, whichever is larger), in seconds of the whole cluster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import inspect
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

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

SOURCE = "spark"
SUBMIT_MODULE = "airflow.providers.apache.spark.hooks.spark_submit"
LIVY_MODULE = "airflow.providers.apache.livy.hooks.livy"
# Seconds one REST call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
# The share of the finalize budget look-ups may use: pricing and the ledger write need the rest.
LOOKUP_SHARE = 0.7
# History server applications looked at when the application id is not known.
MAX_CANDIDATES = 5
SECONDS_QUANTUM = Decimal("1e-9")
RM_EXTRA = "yarn_resourcemanager_webapp_address"
IDENTITY_PREFIX = "spark.airflow."
YARN_TERMINAL = ("FINISHED", "FAILED", "KILLED")

# YARN application tags: ASCII, no commas, at most 100 characters each; YARN lowercases them.
YARN_TAG_MAX = 100
# Kubernetes label values: at most 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric.
K8S_LABEL_MAX = 63
_KEY_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
_K8S_LABEL_INVALID = re.compile(r"^[^a-z0-9A-Z]*|[^a-zA-Z0-9_\-\.]|[^a-z0-9A-Z]*$")

_YARN_APP = re.compile(r"\bapplication_\d+_\d+\b")
_STANDALONE_APP = re.compile(r"\bapp-\d{14}-\d{4,}\b")
_K8S_APP = re.compile(r"spark-app-selector -> (spark-[a-z0-9]+)")
_LOCAL_APP = re.compile(r"\blocal-\d{13}\b")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)b?\s*$", re.IGNORECASE)
_SIZE_MIB = {
    "k": Decimal(1) / 1024,
    "m": Decimal(1),
    "": Decimal(1),
    "g": Decimal(1024),
    "t": Decimal(1024**2),
}
_SIZE_MIB["p"] = Decimal(1024**3)


# ---------------------------------------------------------------------------------------- tagging


def _key_text(key: str) -> str:
    """A tag key as a Spark property or Kubernetes label name: letters, digits, `_ - .` (a cost label's
    key is free text; `=` or a space would break spark-submit's --conf)."""
    return _KEY_INVALID.sub("_", key)


def identity_conf(tags: Mapping[str, str]) -> dict[str, str]:
    """The identity as inert Spark properties: spark.airflow.dag_id, ...openlineage_run_id."""
    return {
        IDENTITY_PREFIX + _key_text(key.removeprefix("airflow_")): str(value)
        for key, value in sorted(tags.items())
    }


def k8s_label_key(key: str) -> str | None:
    """A label name (63 characters, alphanumeric at both ends), or None when nothing of it is left."""
    name = _key_text(key)[:K8S_LABEL_MAX].strip("_.-")
    return name or None


def yarn_tags(tags: Mapping[str, str], existing: str | None = None) -> str:
    """`spark.yarn.tags`: the user's tags, then `key:value` of the identity (YARN keeps them lowercase)."""
    merged = [t.strip() for t in (existing or "").split(",") if t.strip()]
    for key, value in tags.items():
        tag = re.sub(r"[^\x20-\x7e]|,", "_", f"{key}:{value}")[:YARN_TAG_MAX]
        if tag not in merged:
            merged.append(tag)
    return ",".join(merged)


def k8s_label_value(value: str) -> str:
    """Airflow's own `make_safe_label_value`: cut to 63 characters with a hash when changed or long."""
    safe = _K8S_LABEL_INVALID.sub("", value)
    if len(safe) > K8S_LABEL_MAX or safe != value:
        digest = hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()[:9]
        safe = safe[: K8S_LABEL_MAX - len(digest) - 1] + "-" + digest
    return safe


def tagged_spark_conf(
    user_conf: Mapping[str, Any] | None, tags: Mapping[str, str], kubernetes: bool = False
) -> dict[str, Any]:
    """A copy of the job's Spark conf with the identity added where the user set nothing."""
    tagged = dict(user_conf or {})
    for key, value in identity_conf(tags).items():
        tagged.setdefault(key, value)
    tagged["spark.yarn.tags"] = yarn_tags(tags, tagged.get("spark.yarn.tags"))
    if kubernetes:
        for key, value in tags.items():
            name = k8s_label_key(key)
            for role in ("driver", "executor") if name else ():
                tagged.setdefault(f"spark.kubernetes.{role}.label.{name}", k8s_label_value(str(value)))
    return tagged


def application_ids(line: str) -> dict[str, str]:
    """The ids a line of spark-submit's output names (the application's, by the master that made it)."""
    found = {}
    for kind, pattern in (("yarn", _YARN_APP), ("standalone", _STANDALONE_APP), ("local", _LOCAL_APP)):
        if match := pattern.search(line):
            found[kind] = match.group(0)
    if match := _K8S_APP.search(line):
        found["kubernetes"] = match.group(1)
    return found


# ------------------------------------------------------------------------------------- measuring


def memory_mib(value: Any, default_mib: Decimal) -> Decimal:
    """A Spark memory setting (4g, 512m, 2048: MiB when it has no suffix) in MiB."""
    if value is None or str(value).strip() == "":
        return default_mib
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"cannot read the memory size {value!r}")
    return Decimal(match.group(1)) * _SIZE_MIB[match.group(2).lower()]


def container_mib(properties: Mapping[str, str], role: str) -> Decimal:
    """What one executor (or the driver) container holds: its memory plus its overhead, the overhead
    being spark.{role}.memoryOverhead or max(384 MiB, memoryOverheadFactor (0.10) x memory)."""
    memory = memory_mib(properties.get(f"spark.{role}.memory"), Decimal(1024))
    overhead = properties.get(f"spark.{role}.memoryOverhead")
    if overhead is not None:
        return memory + memory_mib(overhead, Decimal(0))
    factor = Decimal(str(properties.get(f"spark.{role}.memoryOverheadFactor", "0.10")))
    return memory + max(Decimal(384), (factor * memory).to_integral_value(rounding="ROUND_FLOOR"))


def spark_time_ms(value: Any) -> int | None:
    """The history server's dates ("2026-01-02T00:00:05.123GMT") or epoch milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value) if value > 0 else None
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("GMT", "+00:00").replace("Z", "+00:00")
    try:
        return int(dt.datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


def _when(ms: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc) if ms else None


@dataclasses.dataclass(frozen=True)
class Measured:
    """An application's held resources, in the units its source reports."""

    core_seconds: Decimal  # vCPU-seconds
    memory_mib_seconds: Decimal  # MiB-seconds
    start_ms: int | None
    end_ms: int | None
    measured_by: str  # yarn_resource_manager | spark_history_server
    attributes: dict[str, Any]


def yarn_measured(app: Mapping[str, Any]) -> Measured:
    """`/ws/v1/cluster/apps/{id}`'s app: vcoreSeconds, memorySeconds (MiB-seconds), elapsedTime."""
    start, end = app.get("startedTime"), app.get("finishedTime")
    attributes = {
        "yarn_state": str(app.get("state") or ""),
        "final_status": str(app.get("finalStatus") or ""),
        "queue": str(app.get("queue") or ""),
        "duration_ms": str(app.get("elapsedTime") or ""),
    }
    return Measured(
        Decimal(int(app["vcoreSeconds"])),
        Decimal(int(app["memorySeconds"])),
        int(start) if start else None,
        int(end) if end else None,
        "yarn_resource_manager",
        attributes,
    )


def history_measured(
    app: Mapping[str, Any],
    executors: Iterable[Mapping[str, Any]],
    properties: Mapping[str, str],
    driver_in_cluster: bool,
) -> Measured:
    """Executors' totalCores and container memory from addTime to removeTime (or the application's end),
    and the driver's for the application's duration when it ran in the cluster."""
    attempt = (app.get("attempts") or [{}])[-1]
    start = spark_time_ms(attempt.get("startTimeEpoch")) or spark_time_ms(attempt.get("startTime"))
    end = spark_time_ms(attempt.get("endTimeEpoch")) or spark_time_ms(attempt.get("endTime"))
    if not attempt.get("completed", True) or not start or not end:
        raise ValueError("the application has not completed in the history server")
    executor_mib = container_mib(properties, "executor")
    core_ms, memory_ms, count = Decimal(0), Decimal(0), 0
    for executor in executors:
        if str(executor.get("id")) == "driver":
            continue
        added = spark_time_ms(executor.get("addTime")) or start
        removed = spark_time_ms(executor.get("removeTime")) or end
        held = Decimal(max(0, min(removed, end) - max(added, start)))
        core_ms += Decimal(int(executor.get("totalCores") or 0)) * held
        memory_ms += executor_mib * held
        count += 1
    attributes: dict[str, Any] = {
        "executors": count,
        "executor_memory_mib": str(executor_mib),
        "duration_ms": str(end - start),
        "driver_counted": driver_in_cluster,
    }
    if driver_in_cluster:
        driver_cores = Decimal(str(properties.get("spark.driver.cores") or 1))
        driver_mib = container_mib(properties, "driver")
        core_ms += driver_cores * (end - start)
        memory_ms += driver_mib * (end - start)
        attributes.update(driver_cores=str(driver_cores), driver_memory_mib=str(driver_mib))
    return Measured(core_ms / 1000, memory_ms / 1000, start, end, "spark_history_server", attributes)


def _capacity(pricing: Mapping[str, str], key: str) -> Decimal:
    try:
        value = Decimal(str(pricing[key]))
    except ArithmeticError:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise ValueError(
            f"[cost_provider] connection_pricing {key} = {pricing[key]!r} is not a number above 0"
        )
    return value


def application_usage(
    measured: Measured,
    app_id: str,
    resource: str,
    context: Mapping[str, Any],
    pricing: Mapping[str, str],
) -> list[Usage]:
    """vCPU-seconds and MiB-seconds at list price, or the cluster's share as allocated cluster time."""
    start, end = _when(measured.start_ms), _when(measured.end_ms)
    attributes = {**context, **pricing, **measured.attributes, "measured_by": measured.measured_by}
    cluster = pricing.get("cluster")
    if pricing.get("cluster_vcores"):
        shares = {"vcores": EXACT.divide(measured.core_seconds, _capacity(pricing, "cluster_vcores"))}
        if pricing.get("cluster_memory_gib"):
            gib_seconds = EXACT.divide(measured.memory_mib_seconds, Decimal(1024))
            shares["memory"] = EXACT.divide(gib_seconds, _capacity(pricing, "cluster_memory_gib"))
        basis = max(shares, key=lambda k: shares[k])
        return [
            Usage(
                SOURCE,
                "cluster_time",
                shares[basis].quantize(SECONDS_QUANTUM),
                "second",
                resource,
                app_id,
                start,
                end,
                {
                    **attributes,
                    "core_seconds": str(measured.core_seconds),
                    "memory_mib_seconds": str(measured.memory_mib_seconds),
                    "allocation_basis": f"dominant share of the cluster's {basis}",
                    METHOD_ATTRIBUTE: "allocated",
                    UNPRICED_HINT_ATTRIBUTE: "add the cluster's cost per hour as a spark/cluster_time price "
                    f"with match {{cluster: {cluster}}} to your price book",
                },
            )
        ]
    hint = "add a price for your cluster to your price book ([cost_provider] price_book_path)"
    return [
        Usage(
            SOURCE,
            "core_time",
            measured.core_seconds,
            "vCPU-second",
            resource,
            app_id,
            start,
            end,
            {**attributes, METHOD_ATTRIBUTE: "list_price", UNPRICED_HINT_ATTRIBUTE: hint},
        ),
        Usage(
            SOURCE,
            "memory_time",
            measured.memory_mib_seconds,
            "MiB-second",
            resource,
            app_id,
            start,
            end,
            {**attributes, METHOD_ATTRIBUTE: "list_price", UNPRICED_HINT_ATTRIBUTE: hint},
        ),
    ]


# ---------------------------------------------------------------------------------- look-ups


@dataclasses.dataclass
class SparkApplication:
    """An application whose usage is read when the task ends; plain values only (survives a deferral)."""

    conn_id: str
    started_by: str  # spark_submit | livy
    app_id: str | None = None
    master: str | None = None
    deploy_mode: str | None = None
    app_name: str | None = None
    submitted_ms: int | None = None
    driver_in_cluster: bool = True
    identity: dict[str, str] = dataclasses.field(default_factory=dict)
    driver_id: str | None = None
    livy_batch_id: int | None = None
    livy_endpoint_prefix: str | None = None
    history_server: str | None = None
    resource_manager: str | None = None
    source: str = SOURCE

    def context(self) -> dict[str, Any]:
        context: dict[str, Any] = {"conn_id": self.conn_id, "started_by": self.started_by}
        for key in ("master", "deploy_mode", "driver_id", "livy_batch_id"):
            if getattr(self, key) is not None:
                context[key] = str(getattr(self, key))
        return context

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.app_id or self.driver_id, reason, **self.context())


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def _get_json(url: str, budget: _Budget, params: Mapping[str, Any] | None = None) -> Any:
    import requests

    response = requests.get(
        url, params=params, timeout=budget.timeout(), headers={"Accept": "application/json"}
    )
    if response.status_code != 200:
        raise LookupError(f"GET {response.request.path_url} answered HTTP {response.status_code}")
    return response.json()


def _yarn_app(item: SparkApplication, app_id: str, budget: _Budget) -> Measured:
    app = _get_json(f"{item.resource_manager}/ws/v1/cluster/apps/{quote(app_id)}", budget)["app"]
    state = str(app.get("state") or "")
    if state not in YARN_TERMINAL:
        raise ValueError(f"the application was still {state or 'unknown'} in YARN when the task ended")
    return yarn_measured(app)


def _history_app(item: SparkApplication, app_id: str, budget: _Budget) -> Measured:
    base = f"{item.history_server}/api/v1/applications/{quote(app_id)}"
    app = _get_json(base, budget)
    attempt = (app.get("attempts") or [{}])[-1]
    if attempt.get("attemptId"):
        base = f"{base}/{quote(str(attempt['attemptId']))}"
    executors = _get_json(f"{base}/allexecutors", budget)
    environment = _get_json(f"{base}/environment", budget)
    properties = _properties(environment)
    return history_measured(app, executors, properties, item.driver_in_cluster)


def _properties(environment: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(pair[0]): str(pair[1])
        for pair in environment.get("sparkProperties") or []
        if isinstance(pair, (list, tuple)) and len(pair) == 2
    }


def _find_in_history(item: SparkApplication, budget: _Budget) -> str | None:
    """The application that carries the task's identity, among those started since the submission."""
    key, value = IDENTITY_PREFIX + "openlineage_run_id", item.identity.get("openlineage_run_id")
    if not value:
        key, value = IDENTITY_PREFIX + "run_id", item.identity.get("run_id")
    if not value:
        return None
    params: dict[str, Any] = {"limit": 50}
    if item.submitted_ms:
        since = dt.datetime.fromtimestamp(item.submitted_ms / 1000 - 60, tz=dt.timezone.utc)
        params["minDate"] = since.strftime("%Y-%m-%dT%H:%M:%S.000GMT")
    apps = _get_json(f"{item.history_server}/api/v1/applications", budget, params)
    candidates = [a for a in apps if not item.app_name or a.get("name") == item.app_name][:MAX_CANDIDATES]
    for app in candidates:
        environment = _get_json(
            f"{item.history_server}/api/v1/applications/{quote(str(app['id']))}/environment", budget
        )
        properties = _properties(environment)
        if properties.get(key) == value:
            return str(app["id"])
    return None


def _livy_app_id(item: SparkApplication, budget: _Budget) -> str | None:
    from airflow.providers.apache.livy.hooks.livy import LivyHook

    hook = LivyHook(
        livy_conn_id=item.conn_id,
        extra_options={"timeout": budget.timeout()},
        endpoint_prefix=item.livy_endpoint_prefix,
    )
    batch = hook.get_batch(item.livy_batch_id)
    return batch.get("appId") or None


def resolve_applications(items: list[SparkApplication], timeout_seconds: float) -> list[Usage]:
    """Each application's usage from YARN or the history server; kept unpriced, with the reason, when
    its id or its usage cannot be read in time."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    unique = {(i.conn_id, i.app_id, i.driver_id, i.livy_batch_id, i.submitted_ms): i for i in items}
    for item in unique.values():
        try:
            usages += _application(item, budget)
        except Exception as error:
            usages.append(item.unresolved(f"cannot read the application: {type(error).__name__}: {error}"))
    return usages


def _application(item: SparkApplication, budget: _Budget) -> list[Usage]:
    if not item.app_id and item.livy_batch_id is not None:
        try:
            item.app_id = _livy_app_id(item, budget)
        except Exception as error:
            return [
                item.unresolved(
                    f"Livy GET /batches/{item.livy_batch_id} failed: {type(error).__name__}: {error}"
                )
            ]
    if not item.app_id and item.history_server:
        item.app_id = _find_in_history(item, budget)
    if not item.app_id:
        where = (
            "no history server is configured to look it up ([cost_provider] spark_endpoints)"
            if not item.history_server
            else "the history server has no application carrying the task's spark.airflow.* identity"
        )
        return [item.unresolved(f"the application id is not known: {where}")]
    if not item.resource_manager and not item.history_server:
        return [
            item.unresolved(
                f"no endpoint to read application {item.app_id} from: set a history_server or "
                f"resource_manager for connection {item.conn_id!r} in [cost_provider] spark_endpoints"
            )
        ]
    failures: list[str] = []
    measured = None
    sources = []
    if item.resource_manager and item.app_id.startswith("application_"):
        sources.append(("YARN ResourceManager", _yarn_app))
    if item.history_server:
        sources.append(("Spark history server", _history_app))
    if not sources:
        return [
            item.unresolved(
                f"{item.app_id} is not a YARN application and no history server is configured for "
                f"connection {item.conn_id!r} in [cost_provider] spark_endpoints"
            )
        ]
    for name, read in sources:
        try:
            measured = read(item, item.app_id, budget)
            break
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
    if measured is None:
        return [item.unresolved("; ".join(failures))]
    resource = item.resource_manager or item.history_server or item.conn_id
    pricing = conf.pricing_for_connection(item.conn_id)
    return application_usage(measured, item.app_id, _host(resource), item.context(), pricing)


def _host(url: str) -> str:
    return re.sub(r"^https?://", "", url)


# -------------------------------------------------------------------------------------- wrapping


def _endpoints(conn_id: str, rm_from_connection: Any = None) -> tuple[str | None, str | None]:
    endpoints = conf.spark_endpoints_for(conn_id)
    rm = endpoints.get("resource_manager")
    if rm is None and rm_from_connection is not None:
        rm = guarded_step("reading the Spark connection", rm_from_connection)
    return endpoints.get("history_server"), rm


def _rm_of(hook: Any) -> Any:
    def read() -> str | None:
        connection = hook.get_connection(hook._conn_id)
        raw = str((connection.extra_dejson or {}).get(RM_EXTRA) or "").strip()
        if not raw:
            return None
        url = raw if "://" in raw else f"http://{raw}"
        return url.rstrip("/")

    return read


def _master(hook: Any) -> str:
    master = str(hook._connection.get("master") or "")
    return re.sub(r"//[^/@]*@", "//", master)  # never a user or password in a master URL


def _scan(lines: Iterator[Any], found: dict[str, str]) -> Iterator[Any]:
    for line in lines:
        try:
            for kind, app_id in application_ids(str(line)).items():
                found.setdefault(kind, app_id)
        except Exception:  # noqa: S110 - reading the output must never disturb the hook
            pass
        yield line


def _process_log_wrapper(wrapped, instance, args, kwargs):
    found = getattr(instance, "_cost_provider_ids", None)
    if found is None or not args:
        return wrapped(*args, **kwargs)
    return wrapped(_scan(iter(args[0]), found), *args[1:], **kwargs)


def _submit_item(hook: Any, session: CaptureSession, submitted_ms: int, found: Mapping[str, str]) -> None:
    master = _master(hook)
    if master.startswith("local"):
        return  # the whole application ran in the task's process: the worker's compute measures it
    kubernetes, yarn = bool(hook._is_kubernetes), bool(hook._is_yarn)
    app_id = (getattr(hook, "_yarn_application_id", None) if yarn else None) or None
    if kubernetes:
        app_id = getattr(hook, "_kubernetes_application_id", None) or found.get("kubernetes")
    elif yarn:
        app_id = app_id or found.get("yarn")
    else:
        app_id = found.get("standalone") or found.get("local")
    deploy_mode = hook._connection.get("deploy_mode") or "client"
    history, rm = _endpoints(hook._conn_id, _rm_of(hook) if yarn else None)
    item = SparkApplication(
        conn_id=hook._conn_id,
        started_by="spark_submit",
        app_id=app_id,
        master=master,
        deploy_mode=deploy_mode,
        app_name=getattr(hook, "_name", None),
        submitted_ms=submitted_ms,
        driver_in_cluster=deploy_mode == "cluster",
        identity={k.removeprefix(IDENTITY_PREFIX): v for k, v in identity_conf(session.tags).items()},
        driver_id=getattr(hook, "_driver_id", None) or getattr(hook, "_kubernetes_driver_pod", None),
        history_server=history,
        resource_manager=rm,
    )
    session.defer(resolve_applications, item)


def _submit_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE) or hasattr(instance, "_cost_provider_ids"):
        return wrapped(*args, **kwargs)
    original_conf = getattr(instance, "_conf", None)
    if conf.tagging_on(SOURCE) and isinstance(original_conf, Mapping):
        tagged = guarded_step(
            "tagging a Spark application",
            tagged_spark_conf,
            original_conf,
            session.tags,
            bool(getattr(instance, "_is_kubernetes", False)),
        )
        if tagged is not None:
            instance._conf = tagged
    instance._cost_provider_ids = found = {}
    submitted_ms = int(time.time() * 1000)
    try:
        return wrapped(*args, **kwargs)
    finally:
        if original_conf is not None:
            instance._conf = original_conf
        del instance._cost_provider_ids
        guarded_step("capturing a Spark application", _submit_item, instance, session, submitted_ms, found)


@functools.cache
def _batch_parameters(hook_class: type) -> tuple[str, ...]:
    """build_post_batch_body's parameters in order: name and conf are tagged only when not given
    positionally."""
    return tuple(inspect.signature(hook_class.build_post_batch_body).parameters)


def _post_batch_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    call_kwargs = kwargs
    parameters = guarded_step("reading LivyHook", _batch_parameters, type(instance), default=())
    if conf.tagging_on(SOURCE) and "conf" in parameters and len(args) <= parameters.index("conf"):
        user_conf = kwargs.get("conf")
        if user_conf is None or isinstance(user_conf, Mapping):
            tagged = guarded_step("tagging a Livy batch", tagged_spark_conf, user_conf, session.tags)
            if tagged is not None:
                call_kwargs = {**kwargs, "conf": tagged}
                if not kwargs.get("name") and "name" in parameters and len(args) <= parameters.index("name"):
                    call_kwargs["name"] = statement_name(session.tags, limit=256)
    submitted_ms = int(time.time() * 1000)
    batch_id = wrapped(*args, **call_kwargs)
    guarded_step("capturing a Livy batch", _livy_item, instance, session, batch_id, submitted_ms, call_kwargs)
    return batch_id


def _livy_item(hook: Any, session: CaptureSession, batch_id: Any, submitted_ms: int, kwargs: Mapping) -> None:
    history, rm = _endpoints(hook.http_conn_id)
    item = SparkApplication(
        conn_id=hook.http_conn_id,
        started_by="livy",
        app_name=kwargs.get("name"),
        submitted_ms=submitted_ms,
        identity={k.removeprefix(IDENTITY_PREFIX): v for k, v in identity_conf(session.tags).items()},
        livy_batch_id=int(batch_id),
        livy_endpoint_prefix=getattr(hook, "endpoint_prefix", None) or None,
        history_server=history,
        resource_manager=rm,
    )
    session.defer(resolve_applications, item)


def _get_batch_wrapper(wrapped, instance, args, kwargs):
    batch = wrapped(*args, **kwargs)
    if task_session() is not None:
        guarded_step(
            "reading a Livy batch",
            _keep_app_id,
            instance,
            kwargs.get("session_id", args[0] if args else None),
            batch,
        )
    return batch


def _keep_app_id(hook: Any, batch_id: Any, batch: Any) -> None:
    """The appId of a batch the task read, kept on its pending item (restored ones after a deferral
    too), so the task's end needs no call to Livy for it."""
    session = task_session()
    if session is None or not isinstance(batch, Mapping) or not batch.get("appId"):
        return
    with session.lock:
        items = list(session.pending.get(resolve_applications, []))
    for item in items:
        if (
            item.started_by == "livy"
            and item.conn_id == hook.http_conn_id
            and str(item.livy_batch_id) == str(batch_id)
            and item.app_id is None
        ):
            item.app_id = str(batch["appId"])


class SparkSubmitApplications(Instrumentation):
    name = "spark_submit"
    sources = (SOURCE,)
    modules = (SUBMIT_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.SparkSubmitHook, "submit", _submit_wrapper)
        self.wrap(module.SparkSubmitHook, "_process_spark_submit_log", _process_log_wrapper)


class LivyBatches(Instrumentation):
    name = "livy"
    sources = (SOURCE,)
    modules = (LIVY_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.LivyHook, "post_batch", _post_batch_wrapper)
        self.wrap(module.LivyHook, "get_batch", _get_batch_wrapper)
