"""Azure Data Factory pipeline runs started through `AzureDataFactoryHook.run_pipeline`.

`AzureDataFactoryRunPipelineOperator` (normal and deferrable) and user code calling the hook start their
runs there. A pipeline run takes no tags, and its parameters are the pipeline's own (a parameter the
pipeline does not declare would change what the user runs), so nothing is added to the run: its run id is
the join key, kept on every line.

Measured when the task ends, from the run's activity runs (one queryActivityruns call per run; the
pipeline run itself is read only when the task did not already see it finish): the number of activity
runs (orchestration, per 1,000 runs) and what each activity's `output.billingReference` says it billed —
DIU-hours of data movement, hours of pipeline and external activities, per integration runtime meter.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
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

SOURCE = "azure_data_factory"
HOOK_MODULE = "airflow.providers.microsoft.azure.hooks.data_factory"
REQUEST_TIMEOUT = 10.0
# The share of the finalize budget look-ups may use: pricing and the ledger write need the rest.
LOOKUP_SHARE = 0.7
MAX_REMEMBERED = 256
TERMINAL_STATUSES = ("Succeeded", "Failed", "Cancelled")
# Activity runs are looked up from a little before the run started to now.
QUERY_MARGIN = dt.timedelta(hours=1)

# billingReference: (activityType, meterType) -> metric; a unit of the billableDuration -> our unit
METRICS = {
    ("datamovement", "azureir"): "diu_time",
    ("pipelineactivity", "azureir"): "pipeline_activity_time",
    ("externalactivity", "azureir"): "external_activity_time",
}
UNITS = {"diuhours": "DIU-hour", "hours": "hour", "vcorehours": "vCore-hour", "corehours": "vCore-hour"}


# ------------------------------------------------------------------------------------- measuring


def _get(mapping: Any, *names: str) -> Any:
    """A field of a REST dict (camelCase) or SDK model (snake_case), whichever it is."""
    for name in names:
        if isinstance(mapping, Mapping):
            if name in mapping:
                return mapping[name]
        elif hasattr(mapping, name):
            return getattr(mapping, name)
    return None


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    text = str(value).replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:  # the service sends up to 7 fraction digits; Python parses 6
        digits = re.match(r"\d*", tail).group(0)
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits) :]}"
    return dt.datetime.fromisoformat(text)


def _metric_name(activity_type: str, meter: str) -> str:
    known = METRICS.get((activity_type.lower(), meter.lower()))
    if known:
        return known
    kind = "".join(ch if ch.isalnum() else "_" for ch in f"{activity_type}_{meter}".lower())
    return f"{kind}_time"


def activity_usage(
    source: str,
    run_id: str,
    runs: Iterable[Any],
    resource: str | None,
    run_start: dt.datetime | None,
    run_end: dt.datetime | None,
    base_attributes: Mapping[str, Any],
) -> list[Usage]:
    """The orchestration (activity run count) and each billed meter's duration of one pipeline run."""
    runs = list(runs)
    types = Counter(str(_get(r, "activityType", "activity_type") or "unknown") for r in runs)
    attributes: dict[str, Any] = {
        **base_attributes,
        "activity_types": ",".join(f"{name}:{count}" for name, count in sorted(types.items())),
        METHOD_ATTRIBUTE: "list_price",
    }
    usages = [
        Usage(
            source,
            "activity_runs",
            Decimal(len(runs)),
            "activity_run",
            resource,
            run_id,
            run_start,
            run_end,
            attributes,
        )
    ]
    billed: dict[tuple[str, str, str], Decimal] = {}
    unread: list[str] = []
    for activity in runs:
        reference = _get(_get(activity, "output") or {}, "billingReference") or {}
        activity_type = str(_get(reference, "activityType") or "")
        for entry in _get(reference, "billableDuration") or []:
            unit = UNITS.get(str(_get(entry, "unit") or "").lower())
            duration = _get(entry, "duration")
            if unit is None or duration is None:
                unread.append(f"{activity_type}:{_get(entry, 'unit')}")
                continue
            key = (
                _metric_name(activity_type, str(_get(entry, "meterType") or "")),
                unit,
                str(_get(entry, "meterType") or ""),
            )
            billed[key] = billed.get(key, Decimal(0)) + Decimal(str(duration))
    for (metric, unit, meter), quantity in sorted(billed.items()):
        line_attributes = {**attributes, "meter_type": meter}
        if metric not in METRICS.values():
            line_attributes[UNPRICED_HINT_ATTRIBUTE] = (
                f"no list price for meter {meter} of this activity type"
            )
        elif metric == "external_activity_time":
            line_attributes[UNPRICED_HINT_ATTRIBUTE] = "add the external activity hourly price"
        usages.append(
            Usage(source, metric, quantity, unit, resource, run_id, run_start, run_end, line_attributes)
        )
    if unread:
        usages[0] = dataclasses.replace(
            usages[0], attributes={**attributes, "unread_billing": ",".join(unread)}
        )
    return usages


# ------------------------------------------------------------------------------------ look-ups


class Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)

    def call_options(self) -> dict[str, Any]:
        """azure-core per-call options: one try, bounded by the budget."""
        timeout = self.timeout()
        return {"retry_total": 0, "connection_timeout": timeout, "read_timeout": timeout}


def failure(error: BaseException) -> str:
    """The error in one line, with the HTTP status the service answered when there was one."""
    text = str(error).splitlines()[0] if str(error) else ""
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}: {f'HTTP {status}: ' if status else ''}{text}"


def is_terminal(run: Any) -> bool:
    return str(_get(run, "status") or "") in TERMINAL_STATUSES


def as_plain(model: Any) -> dict[str, Any]:
    """An SDK model as its REST JSON (camelCase), plain values only."""
    if isinstance(model, Mapping):
        return dict(model)
    data = model.serialize(keep_readonly=True) if hasattr(model, "serialize") else dict(vars(model))
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in data.items()}


@dataclasses.dataclass
class FactoryRun:
    """A pipeline run read when the task ends; plain values only, so it survives a deferral."""

    run_id: str
    conn_id: str
    resource_group: str
    factory: str
    pipeline: str
    final_run: dict[str, Any] | None = None
    source: str = SOURCE
    subscription_id: str | None = None  # the factory's subscription: its console page's address

    @property
    def resource(self) -> str:
        return f"{self.resource_group}/{self.factory}"

    @property
    def link_attributes(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_id} if self.subscription_id else {}

    def unresolved(self, reason: str) -> Usage:
        usage = unresolved_usage(SOURCE, self.run_id, reason, pipeline=self.pipeline)
        return dataclasses.replace(usage, resource=self.resource)


# conn id -> a hook of the task's (its client holds a token already)
_hooks: OrderedDict[str, Any] = OrderedDict()
_remembered: OrderedDict[str, FactoryRun] = OrderedDict()
_lock = threading.Lock()


def remember(table: OrderedDict, key: Any, value: Any) -> None:
    with _lock:
        table[key] = value
        while len(table) > MAX_REMEMBERED:
            table.popitem(last=False)


def _client(conn_id: str) -> Any:
    with _lock:
        hook = _hooks.get(conn_id)
    if hook is None:
        from airflow.providers.microsoft.azure.hooks.data_factory import AzureDataFactoryHook

        hook = AzureDataFactoryHook(azure_data_factory_conn_id=conn_id)
    return hook.get_conn()


def query_window(run: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    start = _when(_get(run, "runStart", "run_start")) or dt.datetime.now(dt.timezone.utc)
    return start - QUERY_MARGIN, dt.datetime.now(dt.timezone.utc) + QUERY_MARGIN


def run_attributes(run: Mapping[str, Any], pipeline: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"pipeline": pipeline, "run_status": str(_get(run, "status") or "")}
    duration = _get(run, "durationInMs", "duration_in_ms")
    if duration is not None:
        attributes["duration_ms"] = str(duration)
    return attributes


def resolve_pipeline_runs(
    items: list[Any],
    timeout_seconds: float,
    read_run: Callable[[Any, Budget], dict[str, Any]],
    read_activities: Callable[[Any, Mapping[str, Any], Budget], list[Any]],
) -> list[Usage]:
    """The shared shape of ADF and Synapse pipelines: the run (unless the task saw it finish), then
    its activity runs, then their usage; any failure keeps the run unpriced with the reason."""
    budget = Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.resource, i.run_id): i for i in items}.values():
        try:
            run = item.final_run or read_run(item, budget)
        except Exception as error:
            usages.append(item.unresolved(f"pipeline run look-up failed: {failure(error)}"))
            continue
        if not is_terminal(run):
            usages.append(
                item.unresolved(
                    f"the pipeline run was still {_get(run, 'status') or 'unknown'} when the task ended"
                )
            )
            continue
        try:
            activities = read_activities(item, run, budget)
        except Exception as error:
            usages.append(item.unresolved(f"queryActivityruns failed: {failure(error)}"))
            continue
        try:
            usages += activity_usage(
                item.source,
                item.run_id,
                activities,
                item.resource,
                _when(_get(run, "runStart", "run_start")),
                _when(_get(run, "runEnd", "run_end")),
                {**run_attributes(run, item.pipeline), **getattr(item, "link_attributes", {})},
            )
        except Exception as error:  # a shape we cannot read: keep the run, unpriced
            usages.append(item.unresolved(f"cannot read its activity runs: {failure(error)}"))
    return usages


def _read_run(item: FactoryRun, budget: Budget) -> dict[str, Any]:
    run = _client(item.conn_id).pipeline_runs.get(
        item.resource_group, item.factory, item.run_id, **budget.call_options()
    )
    return as_plain(run)


def paged_activity_runs(query: Callable[[Any], Any], filter_class: type, run: Mapping[str, Any]) -> list[Any]:
    """Every activity run of a pipeline run, following the continuation token; `query(filter)` is
    the service client's queryActivityruns call (Data Factory and Synapse take the same filter)."""
    after, before = query_window(run)
    activities: list[Any] = []
    token = None
    while True:
        page = query(
            filter_class(last_updated_after=after, last_updated_before=before, continuation_token=token)
        )
        activities += [as_plain(a) for a in page.value or []]
        token = page.continuation_token
        if not token:
            return activities


def _read_activities(item: FactoryRun, run: Mapping[str, Any], budget: Budget) -> list[Any]:
    from azure.mgmt.datafactory.models import RunFilterParameters

    client = _client(item.conn_id)
    return paged_activity_runs(
        lambda run_filter: client.activity_runs.query_by_pipeline_run(
            item.resource_group, item.factory, item.run_id, run_filter, **budget.call_options()
        ),
        RunFilterParameters,
        run,
    )


def resolve_factory_runs(items: list[FactoryRun], timeout_seconds: float) -> list[Usage]:
    return resolve_pipeline_runs(items, timeout_seconds, _read_run, _read_activities)


# -------------------------------------------------------------------------------------- wrapping


def _targeted_factory(hook: Any, bound: Mapping[str, Any]) -> tuple[str, str]:
    """The resource group and factory, defaulted from the connection as the hook's decorator does."""
    values = []
    for name in ("resource_group_name", "factory_name"):
        value = bound.get(name)
        if not value:
            extras = hook.get_connection(hook.conn_id).extra_dejson
            value = extras.get(name) or extras.get(f"extra__azure_data_factory__{name}")
        values.append(str(value))
    return values[0], values[1]


def _subscription(hook: Any) -> str | None:
    """The connection's subscription id (not a secret: part of the factory's resource id), if set."""
    try:
        extras = hook.get_connection(hook.conn_id).extra_dejson
    except Exception:
        return None
    value = extras.get("subscriptionId") or extras.get("extra__azure_data_factory__subscriptionId")
    return str(value) if value else None


def _capture(
    session: CaptureSession, hook: Any, wrapped: Any, args: tuple, kwargs: dict, response: Any
) -> None:
    bound = inspect.signature(wrapped).bind_partial(*args, **kwargs).arguments
    resource_group, factory = _targeted_factory(hook, bound)
    item = FactoryRun(
        run_id=str(response.run_id),
        conn_id=hook.conn_id,
        resource_group=resource_group,
        factory=factory,
        pipeline=str(bound.get("pipeline_name")),
        subscription_id=_subscription(hook),
    )
    remember(_hooks, hook.conn_id, hook)
    remember(_remembered, item.run_id, item)
    session.defer(resolve_factory_runs, item)


def _run_pipeline_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    response = wrapped(*args, **kwargs)
    guarded_step(
        "capturing a Data Factory pipeline run", _capture, session, instance, wrapped, args, kwargs, response
    )
    return response


def keep_final_run(remembered: Mapping[str, Any], run_id: Any, run: Any) -> None:
    with _lock:
        item = remembered.get(str(run_id))
    if item is not None and item.final_run is None and is_terminal(run):
        item.final_run = as_plain(run)


def _get_pipeline_run_wrapper(wrapped, instance, args, kwargs):
    run = wrapped(*args, **kwargs)
    if task_session() is not None:
        run_id = kwargs.get("run_id", args[0] if args else None)
        guarded_step("capturing a Data Factory pipeline run", keep_final_run, _remembered, run_id, run)
    return run


class DataFactoryPipelines(Instrumentation):
    name = "azure_data_factory"
    sources = (SOURCE,)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.AzureDataFactoryHook, "run_pipeline", _run_pipeline_wrapper)
        self.wrap(module.AzureDataFactoryHook, "get_pipeline_run", _get_pipeline_run_wrapper)
