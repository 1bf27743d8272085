"""AWS Glue job runs started through the Amazon provider's `GlueJobHook.initialize_job`.

`GlueJobOperator` (normal and deferrable) and `GlueJobHook(...).initialize_job(...)` in user code start
their runs there. Glue job runs take no tags (StartJobRun has no Tags parameter, and TagResource tags
jobs, not runs), so the task's identity goes into the run's own arguments as `--airflow_dag_id`,
`--openlineage_run_id`, ...: they show in GetJobRun / GetJobRuns and the console's run details. The
job's tags are the user's and are left alone.

At the task's end each run is read once with GetJobRun (Glue has no batch read of runs), and priced
per DPU-hour: `DPUSeconds` when Glue reports it (Auto Scaling and Flex runs), else `ExecutionTime` x the
run's capacity (NumberOfWorkers x the worker type's DPUs from the price book's `glue_dpu_per_worker`,
else MaxCapacity). Glue bills per second with a 1-minute minimum per run (Glue 2.0 and later; Glue
0.9/1.0 billed a 10-minute minimum, and reached end of life on 2026-04-01: no run can start on them
any more). https://aws.amazon.com/glue/pricing/
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.aws import AwsCalls, describe_error, with_region
from airflow_cost_provider.instrumentation.base import (
    Instrumentation,
    guarded_step,
    task_session,
    unresolved_usage,
)
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging.aws import glue_run_arguments
from airflow_cost_provider.version import __version__

SOURCE = "glue"
HOOK_MODULE = "airflow.providers.amazon.aws.hooks.glue"
DPU_FACTOR_TABLE = "glue_dpu_per_worker"
MINIMUM_BILLED_SECONDS = 60
UNFINISHED_STATES = frozenset({"STARTING", "RUNNING", "STOPPING", "WAITING"})
# The legacy worker of Glue 0.9/1.0, sized by MaxCapacity rather than by a count of workers.
STANDARD_WORKER = "Standard"
BATCH_GET_JOBS_SIZE = 100
# Look-ups the provider makes say so in their user agent (visible in CloudTrail's userAgent).
USER_AGENT = f"airflow-cost-provider/{__version__}"
# A run that has not finished when the task ends is read again once, after at most this long.
LONGEST_PAUSE_SECONDS = 2.0


# ------------------------------------------------------------------------------- AWS look-ups


def aws_client(client_type: str, aws_conn_id: str | None, region_name: str | None) -> Callable[[Any], Any]:
    """A client factory for `AwsCalls`: the connection's credentials, region and endpoint, the
    caller's timeouts, and the provider's user agent."""
    hooks: list[Any] = []

    def create(config: Any) -> Any:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from botocore.config import Config

        if not hooks:
            hooks.append(
                AwsBaseHook(aws_conn_id=aws_conn_id, region_name=region_name, client_type=client_type)
            )
        hook = hooks[0]
        return hook.get_client_type(
            region_name=hook.region_name,
            config=hook.config.merge(config).merge(Config(user_agent_extra=USER_AGENT)),
        )

    return create


def pause_before_rereading(deadline: float) -> bool:
    """Wait once for runs that were still going, while the time budget allows; False if it does not."""
    pause = min(LONGEST_PAUSE_SECONDS, (deadline - time.monotonic()) / 3)
    if pause < 0.1:
        return False
    time.sleep(pause)
    return True


def utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# ---------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class GlueRun:
    """What GetJobRun reports about one job run."""

    run_id: str
    job_name: str | None = None
    state: str | None = None
    execution_time: int | None = None  # seconds the run consumed resources
    dpu_seconds: Decimal | None = None
    worker_type: str | None = None
    number_of_workers: int | None = None
    max_capacity: Decimal | None = None
    allocated_capacity: Decimal | None = None
    execution_class: str | None = None
    glue_version: str | None = None
    started: dt.datetime | None = None
    completed: dt.datetime | None = None

    @classmethod
    def from_api(cls, job_run: dict[str, Any]) -> GlueRun:
        return cls(
            run_id=job_run["Id"],
            job_name=job_run.get("JobName"),
            state=job_run.get("JobRunState"),
            execution_time=job_run.get("ExecutionTime"),
            dpu_seconds=decimal(job_run.get("DPUSeconds")),
            worker_type=job_run.get("WorkerType"),
            number_of_workers=job_run.get("NumberOfWorkers"),
            max_capacity=decimal(job_run.get("MaxCapacity")),
            allocated_capacity=decimal(job_run.get("AllocatedCapacity")),
            execution_class=job_run.get("ExecutionClass"),
            glue_version=job_run.get("GlueVersion"),
            started=utc(job_run.get("StartedOn")),
            completed=utc(job_run.get("CompletedOn")),
        )


def run_capacity(run: GlueRun, dpu_per_worker: Decimal | None) -> tuple[Decimal, str] | None:
    """The run's DPUs and where the number came from, or None when Glue reported none."""
    if run.worker_type and run.worker_type != STANDARD_WORKER and run.number_of_workers:
        if dpu_per_worker is not None:
            return Decimal(run.number_of_workers) * dpu_per_worker, "NumberOfWorkers x DPU per worker"
    if run.max_capacity:
        return run.max_capacity, "MaxCapacity"
    if run.allocated_capacity:
        return run.allocated_capacity, "AllocatedCapacity"
    if run.worker_type == STANDARD_WORKER and run.number_of_workers and dpu_per_worker is not None:
        return Decimal(run.number_of_workers) * dpu_per_worker, "NumberOfWorkers x DPU per worker"
    return None


def run_usage(
    run: GlueRun,
    dpu_per_worker: Callable[[str], Decimal | None],
    execution_class: str | None = None,
    **attributes: Any,
) -> Usage:
    """`dpu_time` in DPU-seconds as Glue bills the run: per second, at least a minute."""
    if run.state in UNFINISHED_STATES:
        return unresolved_usage(
            SOURCE,
            run.run_id,
            f"the run was still {run.state} when the task ended, so its DPU time was not known yet",
            job_name=run.job_name,
            state=run.state,
            **attributes,
        )
    worker_factor = dpu_per_worker(run.worker_type) if run.worker_type else None
    details: dict[str, Any] = {
        "job_name": run.job_name,
        "state": run.state,
        "execution_class": (run.execution_class or execution_class or "STANDARD").lower(),
        "worker_type": run.worker_type,
        "number_of_workers": run.number_of_workers,
        "max_capacity": str(run.max_capacity) if run.max_capacity is not None else None,
        "glue_version": run.glue_version,
        "execution_time_s": run.execution_time,
        "dpu_seconds_reported": str(run.dpu_seconds) if run.dpu_seconds is not None else None,
        **attributes,
    }
    seconds = Decimal(max(run.execution_time or 0, 0))
    billed_seconds = max(seconds, Decimal(MINIMUM_BILLED_SECONDS))
    if run.worker_type and run.worker_type != STANDARD_WORKER and worker_factor is None:
        # Memory-optimized (R.*) and Ray (Z.*) workers bill M-DPUs at other rates
        return _usage(
            run,
            "execution_time",
            billed_seconds if seconds else Decimal(0),
            "second",
            {
                **details,
                UNPRICED_HINT_ATTRIBUTE: (
                    f"no DPUs per worker for worker type {run.worker_type!r} in the price book's "
                    f"factors.{DPU_FACTOR_TABLE}"
                ),
            },
        )
    if seconds == 0 and not run.dpu_seconds:
        return _usage(
            run, "dpu_time", Decimal(0), "DPU-second", {**details, "not_billed": "no execution time"}
        )
    if run.dpu_seconds:
        quantity = run.dpu_seconds
        if 0 < seconds < billed_seconds:
            quantity = (quantity * billed_seconds / seconds).quantize(Decimal("0.000001"))
        basis = "DPUSeconds"
    else:
        capacity = run_capacity(run, worker_factor)
        if capacity is None:
            return unresolved_usage(
                SOURCE,
                run.run_id,
                "Glue reported neither DPUSeconds nor the run's capacity",
                **{k: v for k, v in details.items() if v is not None},
            )
        dpus, basis = capacity
        quantity = dpus * billed_seconds
        details["dpus"] = str(dpus)
    details.update(basis=basis, billed_seconds=int(billed_seconds), minimum_applied=seconds < billed_seconds)
    return _usage(run, "dpu_time", quantity, "DPU-second", details)


def _usage(run: GlueRun, metric: str, quantity: Decimal, unit: str, attributes: dict[str, Any]) -> Usage:
    return Usage(
        source=SOURCE,
        metric=metric,
        quantity=quantity,
        unit=unit,
        resource=run.job_name,
        external_id=run.run_id,
        start_time=run.started,
        end_time=run.completed,
        attributes={key: value for key, value in attributes.items() if value is not None},
    )


# -------------------------------------------------------------------------------- pending runs


@dataclass(frozen=True)
class PendingGlueRun:
    """A job run whose statistics are read when the task ends. Plain values only, so it can be kept
    across a deferral; the client is built again from the connection."""

    job_name: str
    run_id: str
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    # StartJobRun's ExecutionClass, when the caller set one for this run
    execution_class: str | None = None

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(SOURCE, self.run_id, reason, job_name=self.job_name)


def resolve_glue_runs(items: list[PendingGlueRun], timeout_seconds: float) -> list[Usage]:
    """One GetJobRun per run, per connection and region, within the time budget; a run still going is
    read once more after a short wait. BatchGetJobs only for runs that do not report their
    execution class."""
    deadline = time.monotonic() + timeout_seconds
    groups: dict[tuple[Any, ...], dict[tuple[str, str], PendingGlueRun]] = {}
    for item in items:
        group = groups.setdefault((item.aws_conn_id, item.region_name), {})
        group.setdefault((item.job_name, item.run_id), item)
    factors = _dpu_factors()
    usages: list[Usage] = []
    for (aws_conn_id, region_name), pending in groups.items():
        calls = AwsCalls(aws_client("glue", aws_conn_id, region_name), deadline)
        usages += with_region(_resolve_group(calls, list(pending.values()), factors, deadline), calls)
    return usages


def _resolve_group(
    calls: AwsCalls, items: list[PendingGlueRun], factors: Callable[[str], Decimal | None], deadline: float
) -> list[Usage]:
    runs: dict[str, GlueRun] = {}
    problems: dict[str, str] = {}
    _read_runs(calls, items, runs, problems)
    unfinished = [i for i in items if i.run_id in runs and runs[i.run_id].state in UNFINISHED_STATES]
    if unfinished and pause_before_rereading(deadline):
        _read_runs(calls, unfinished, runs, problems)
    classes = _job_execution_classes(
        calls,
        {
            i.job_name
            for i in items
            if i.run_id in runs and not runs[i.run_id].execution_class and not i.execution_class
        },
    )
    usages = []
    for item in items:
        run = runs.get(item.run_id)
        if run is None:
            usages.append(item.unresolved(problems.get(item.run_id, "Glue did not return the run")))
            continue
        execution_class = item.execution_class or classes.get(item.job_name)
        usages.append(run_usage(run, factors, execution_class))
    return usages


def _read_runs(
    calls: AwsCalls, items: Iterable[PendingGlueRun], runs: dict[str, GlueRun], problems: dict[str, str]
) -> None:
    for item in items:
        try:
            job_run = calls("get_job_run", JobName=item.job_name, RunId=item.run_id)["JobRun"]
        except Exception as error:
            problems[item.run_id] = f"GetJobRun failed: {describe_error(error)}"
            continue
        runs[item.run_id] = GlueRun.from_api(job_run)


def _job_execution_classes(calls: AwsCalls, job_names: set[str]) -> dict[str, str]:
    """The execution class of each job definition, for runs that do not report theirs."""
    classes: dict[str, str] = {}
    for chunk in chunks(sorted(job_names), BATCH_GET_JOBS_SIZE):
        try:
            response = calls("batch_get_jobs", JobNames=chunk)
        except Exception:
            continue  # the runs are then priced as standard, which is Glue's default
        for job in response.get("Jobs", []):
            if job.get("ExecutionClass"):
                classes[job["Name"]] = job["ExecutionClass"]
    return classes


def _dpu_factors() -> Callable[[str], Decimal | None]:
    from airflow_cost_provider.tracker import price_book

    try:
        book = price_book()
    except Exception:
        return lambda worker_type: None  # pricing reports the broken book itself
    return lambda worker_type: book.factor(DPU_FACTOR_TABLE, worker_type)


# ------------------------------------------------------------------ GlueJobHook.initialize_job


def _initialize_job_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(SOURCE):
        return wrapped(*args, **kwargs)
    call_args, call_kwargs, run_kwargs = guarded_step(
        "tagging a Glue job run", _tagged_call, wrapped, session, args, kwargs, default=(args, kwargs, {})
    )
    response = wrapped(*call_args, **call_kwargs)
    guarded_step("capturing a Glue job run", _keep_run, session, instance, response, run_kwargs)
    return response


def _tagged_call(wrapped: Any, session: CaptureSession, args: tuple, kwargs: dict):
    bound = inspect.signature(wrapped).bind(*args, **kwargs)
    run_kwargs = bound.arguments.get("run_kwargs") or {}
    if conf.tagging_on(SOURCE):
        bound.arguments["script_arguments"] = glue_run_arguments(
            session.tags, bound.arguments.get("script_arguments")
        )
    return bound.args, bound.kwargs, run_kwargs


def _keep_run(session: CaptureSession, hook: Any, response: Any, run_kwargs: dict) -> None:
    run_id = response.get("JobRunId") if isinstance(response, dict) else None
    if not isinstance(run_id, str) or not isinstance(hook.job_name, str):
        return
    execution_class = run_kwargs.get("ExecutionClass")
    session.defer(
        resolve_glue_runs,
        PendingGlueRun(
            job_name=hook.job_name,
            run_id=run_id,
            aws_conn_id=hook.aws_conn_id,
            region_name=hook.region_name,
            execution_class=execution_class if isinstance(execution_class, str) else None,
        ),
    )


class GlueJobs(Instrumentation):
    name = "glue"
    sources = (SOURCE,)
    modules = (HOOK_MODULE,)

    def patch(self, module: Any) -> None:
        self.wrap(module.GlueJobHook, "initialize_job", _initialize_job_wrapper)
