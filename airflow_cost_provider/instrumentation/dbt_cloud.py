"""dbt Cloud job runs: started through `DbtCloudHook.trigger_job_run` (or `retry_failed_job_run`), or
waited for by `DbtCloudJobRunSensor`.

`DbtCloudRunJobOperator` (waiting, deferrable, or `wait_for_termination=False`) and user code calling the
hook start their runs there; `reuse_existing_run` picks a run the operator did not start, read too. A
sensor records the run it saw finish (its poke, or its resumption after a deferral), so a run started
without waiting is costed by the task that waited for it.

Measured when the task ends, through the hook on the task's own connection: `runs/{id}/` with its
steps, then for every step that ran dbt nodes (`Invoke dbt with `dbt build``, ...) that step's
`run_results.json` and `manifest.json` (`runs/{id}/artifacts/...?step=N`), read exactly as a local run's
files are (capture/dbt.py): one usage per model, seed, snapshot and test, with the warehouse usage the
adapter reported (BigQuery bytes billed, Snowflake query ids, ...). dbt Cloud bills successful models
built in deployment runs (not tests, seeds, snapshots or ephemeral models): the run gets one
`models_built` line, priced at the price book's `dbt_cloud/models_built`. Every line keeps the run, job,
project, environment and account ids.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture import dbt
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    LookupBudget,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

SOURCE = "dbt_cloud"
HOOK_MODULE = "airflow.providers.dbt.cloud.hooks.dbt"
OPERATOR_MODULE = "airflow.providers.dbt.cloud.operators.dbt"
SENSOR_MODULE = "airflow.providers.dbt.cloud.sensors.dbt"
# Seconds one REST call may take at most, whatever is left of the finalize budget.
REQUEST_TIMEOUT = 10.0
# The share of the finalize budget look-ups may use: pricing and the ledger write need the rest.
LOOKUP_SHARE = 0.7
# dbt Cloud's run statuses (DbtCloudJobRunStatus)
STATUSES = {1: "queued", 2: "starting", 3: "running", 10: "success", 20: "error", 30: "cancelled"}
TERMINAL = {10, 20, 30}
STEP_PREFIX = "Invoke dbt with `"


@dataclasses.dataclass
class DbtCloudRun:
    """A job run read when the task ends; plain values only, so it survives a deferral."""

    run_id: int
    conn_id: str
    account_id: int | None
    started_by: str  # trigger_job_run | retry_failed_job_run | reuse_existing_run | sensor
    job_id: int | None = None
    source: str = SOURCE

    def unresolved(self, reason: str) -> Usage:
        return dataclasses.replace(
            unresolved_usage(SOURCE, str(self.run_id), reason, **self.attributes()),
            resource=self.resource(),
        )

    def attributes(self) -> dict[str, Any]:
        found: dict[str, Any] = {"conn_id": self.conn_id, "started_by": self.started_by}
        found["dbt_cloud_run_id"] = str(self.run_id)
        if self.account_id is not None:
            found["dbt_cloud_account_id"] = str(self.account_id)
        if self.job_id is not None:
            found["dbt_cloud_job_id"] = str(self.job_id)
        return found

    def resource(self, run: Mapping[str, Any] | None = None) -> str:
        """accounts/{id}/projects/{id}/jobs/{id}, as far as known: the path of the job in the API."""
        run = run or {}
        parts = [
            ("accounts", run.get("account_id") or self.account_id),
            ("projects", run.get("project_id")),
            ("jobs", run.get("job_definition_id") or self.job_id),
        ]
        return "/".join(f"{name}/{value}" for name, value in parts if value is not None)


class _Budget(LookupBudget):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds * LOOKUP_SHARE, REQUEST_TIMEOUT)


def _hook(conn_id: str, timeout: float) -> Any:
    """A hook of the task's connection that tries once: the finalize budget is short."""
    from airflow.providers.dbt.cloud.hooks.dbt import DbtCloudHook

    return DbtCloudHook(conn_id, timeout_seconds=timeout, retry_limit=1)


def resolve_runs(items: list[DbtCloudRun], timeout_seconds: float) -> list[Usage]:
    """Each run once (with its steps), then each dbt step's artifacts; what cannot be read in time is
    kept unpriced with the reason."""
    budget = _Budget(timeout_seconds)
    usages: list[Usage] = []
    for item in {(i.conn_id, i.run_id): i for i in items}.values():
        try:
            hook = _hook(item.conn_id, budget.timeout())
            response = hook.get_job_run(
                run_id=item.run_id, account_id=item.account_id, include_related=["run_steps"]
            )
            run = response.json()["data"]
        except Exception as error:
            usages.append(item.unresolved(f"runs/{item.run_id}/ failed: {type(error).__name__}: {error}"))
            continue
        found = run_usages(item, run, functools.partial(_artifact, hook, item, budget=budget))
        tenant = guarded_step("reading the dbt Cloud tenant", _tenant, hook)
        usages += [
            dataclasses.replace(u, attributes={**u.attributes, "host": tenant}) if tenant else u
            for u in found
        ]
    return usages


def _tenant(hook: Any) -> str | None:
    """The account's access URL host (where its console is), without a port."""
    host = hook._get_tenant_domain(hook.connection)
    return host if isinstance(host, str) and ":" not in host else None


def _artifact(hook: Any, item: DbtCloudRun, path: str, step: int | None, *, budget: _Budget) -> bytes:
    hook.timeout_seconds = budget.timeout()
    response = hook.get_job_run_artifact(item.run_id, path=path, account_id=item.account_id, step=step)
    return response.content


def node_steps(run: Mapping[str, Any]) -> list[tuple[int | None, str]]:
    """(index, command) of the run's steps that ran dbt nodes; the last step when the run lists none
    (the API's default for artifacts)."""
    steps = [s for s in run.get("run_steps") or () if isinstance(s, Mapping)]
    if not steps:
        return [(None, "the last step")]
    found = []
    for step in sorted(steps, key=lambda s: int(s.get("index") or 0)):
        name = str(step.get("name") or "")
        if not name.startswith(STEP_PREFIX):
            continue
        command = name[len(STEP_PREFIX) :].split("`", 1)[0]
        # a step that never started wrote nothing
        if step.get("status") in (1, 2) or not dbt.runs_nodes(command):
            continue
        found.append((int(step["index"]), command))
    return found


def run_usages(item: DbtCloudRun, run: Mapping[str, Any], fetch: Any) -> list[Usage]:
    """The usages of a run as `runs/{id}/` describes it; `fetch(path, step) -> bytes` reads an artifact."""
    status = run.get("status")
    item = dataclasses.replace(
        item,
        account_id=_int(run.get("account_id")) or item.account_id,
        job_id=_int(run.get("job_definition_id")) or item.job_id,
    )
    ids = _run_attributes(item, run)
    if status not in TERMINAL:
        state = run.get("status_humanized") or STATUSES.get(status, str(status))
        still = item.unresolved(
            f"the run was still {str(state).lower()} when the task ended: the task that waits for it "
            "(DbtCloudJobRunSensor) records its models"
        )
        return [
            dataclasses.replace(still, attributes={**still.attributes, **ids}, resource=item.resource(run))
        ]
    usages: list[Usage] = []
    built, complete = 0, True
    project_name = f"dbt_cloud_project_{run.get('project_id')}"
    for index, command in node_steps(run):
        where = (
            f"dbt Cloud run {item.run_id} step {index}"
            if index is not None
            else f"dbt Cloud run {item.run_id}"
        )
        step_ids = {**ids, "dbt_cloud_step": index, "dbt_cloud_command": command}
        try:
            results = dbt.parse_artifact(fetch("run_results.json", index), f"{where} run_results.json")
        except Exception as error:
            complete = False
            reason = error if isinstance(error, dbt.ArtifactError) else f"{type(error).__name__}: {error}"
            usages.append(
                _with(
                    dbt.unreadable_usage(f"{where} run_results.json: {reason}", item.resource(run), SOURCE),
                    step_ids,
                    str(item.run_id),
                )
            )
            continue
        try:
            manifest = dbt.parse_artifact(fetch("manifest.json", index), f"{where} manifest.json")
        except Exception:
            manifest = None  # the lines then lack relation and materialization, as for a local run
        found = dbt.usages_of_artifacts(
            results,
            manifest,
            f"{where} run_results.json",
            f"{where} manifest.json",
            project_name,
            SOURCE,
        )
        for usage in found:
            if usage.source == SOURCE:  # the step's results were unreadable
                complete = False
                usages.append(_with(usage, step_ids, str(item.run_id)))
                continue
            attributes = usage.attributes
            if attributes.get("dbt_resource_type") == "model" and attributes.get("dbt_status") == "success":
                built += 1
            usages.append(_with(usage, step_ids, usage.external_id))
    usages.append(_models_built(item, run, ids, built, complete))
    return usages


def _with(usage: Usage, attributes: dict[str, Any], external_id: str | None) -> Usage:
    return dataclasses.replace(
        usage,
        external_id=external_id,
        attributes={**usage.attributes, **{k: v for k, v in attributes.items() if v is not None}},
    )


def _models_built(
    item: DbtCloudRun, run: Mapping[str, Any], ids: dict[str, Any], built: int, complete: bool
) -> Usage:
    attributes = {
        **ids,
        "models_built_complete": complete,
        UNPRICED_HINT_ATTRIBUTE: "add a dbt_cloud/models_built price (your plan's price per model built)",
    }
    return Usage(
        SOURCE,
        "models_built",
        Decimal(built),
        "model",
        item.resource(run),
        str(item.run_id),
        dbt.parse_timestamp(run.get("started_at")),
        dbt.parse_timestamp(run.get("finished_at")),
        attributes,
    )


def _run_attributes(item: DbtCloudRun, run: Mapping[str, Any]) -> dict[str, Any]:
    attributes = item.attributes()
    for key in ("project_id", "environment_id"):
        if run.get(key) is not None:
            attributes[f"dbt_cloud_{key}"] = str(run[key])
    status = run.get("status")
    attributes["dbt_cloud_run_status"] = STATUSES.get(status, str(status))
    start, end = dbt.parse_timestamp(run.get("started_at")), dbt.parse_timestamp(run.get("finished_at"))
    if start is not None and end is not None and end >= start:
        attributes["dbt_cloud_run_seconds"] = str(Decimal(str((end - start).total_seconds())))
    return attributes


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


# -------------------------------------------------------------------------------------- wrapping


def _capture(session: CaptureSession, item: DbtCloudRun) -> None:
    with session.lock:
        known = session.pending.get(resolve_runs, [])
        if any(i.run_id == item.run_id and i.conn_id == item.conn_id for i in known):
            return
    session.defer(resolve_runs, item)


def _started_run(response: Any) -> dict[str, Any]:
    data = response.json()["data"]
    return data if isinstance(data, Mapping) else {}


def _hook_wrapper(started_by: str):
    def wrapper(wrapped, instance, args, kwargs):
        response = wrapped(*args, **kwargs)
        session = task_session()
        if session is not None and conf.source_enabled(SOURCE):

            def capture() -> None:
                data = _started_run(response)
                _capture(
                    session,
                    DbtCloudRun(
                        run_id=int(data["id"]),
                        conn_id=instance.dbt_cloud_conn_id,
                        account_id=_int(data.get("account_id")) or _int(kwargs.get("account_id")),
                        started_by=started_by,
                        job_id=_int(data.get("job_definition_id")),
                    ),
                )

            guarded_step("capturing a dbt Cloud run", capture)
        return response

    return wrapper


def _operator_run_wrapper(wrapped, instance, args, kwargs):
    """The operator's run, started or (reuse_existing_run) found running."""
    found = wrapped(*args, **kwargs)
    session = task_session()
    if session is not None and conf.source_enabled(SOURCE):
        guarded_step(
            "capturing a dbt Cloud run",
            lambda: _capture(
                session,
                DbtCloudRun(
                    run_id=int(found[0]),
                    conn_id=instance.dbt_cloud_conn_id,
                    account_id=_int(instance.account_id),
                    started_by="reuse_existing_run",
                    job_id=_int(instance.job_id),
                ),
            ),
        )
    return found


def _sensed(instance: Any, run_id: Any) -> None:
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return
    item = DbtCloudRun(
        run_id=int(run_id),
        conn_id=instance.dbt_cloud_conn_id,
        account_id=_int(instance.account_id),
        started_by="sensor",
    )
    _capture(session, item)


def _poke_wrapper(wrapped, instance, args, kwargs):
    """A poke that saw the run finish (True, or the provider's exception for a failed run)."""
    try:
        done = wrapped(*args, **kwargs)
    except Exception as error:
        if type(error).__name__ == "DbtCloudJobRunException":
            guarded_step("capturing a dbt Cloud run", _sensed, instance, instance.run_id)
        raise
    if done:
        guarded_step("capturing a dbt Cloud run", _sensed, instance, instance.run_id)
    return done


def _execute_complete_wrapper(wrapped, instance, args, kwargs):
    """The sensor resumed after its deferral: the trigger's event names the run it saw finish."""
    event = kwargs.get("event", args[1] if len(args) > 1 else None)
    if isinstance(event, Mapping) and event.get("run_id") is not None and event.get("status") != "timeout":
        guarded_step("capturing a dbt Cloud run", _sensed, instance, event["run_id"])
    return wrapped(*args, **kwargs)


class DbtCloudJobs(Instrumentation):
    name = "dbt_cloud"
    sources = (SOURCE,)
    modules = (HOOK_MODULE, OPERATOR_MODULE, SENSOR_MODULE)

    def patch(self, module: Any) -> None:
        if module.__name__ == HOOK_MODULE:
            self.wrap(module.DbtCloudHook, "trigger_job_run", _hook_wrapper("trigger_job_run"))
            self.wrap(module.DbtCloudHook, "retry_failed_job_run", _hook_wrapper("retry_failed_job_run"))
        elif module.__name__ == OPERATOR_MODULE:
            self.wrap(module.DbtCloudRunJobOperator, "_get_or_trigger_run", _operator_run_wrapper)
        elif module.__name__ == SENSOR_MODULE:
            self.wrap(module.DbtCloudJobRunSensor, "poke", _poke_wrapper)
            self.wrap(module.DbtCloudJobRunSensor, "execute_complete", _execute_complete_wrapper)
