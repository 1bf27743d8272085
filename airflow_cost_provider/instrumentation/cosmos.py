"""dbt run by Astronomer Cosmos (`DbtDag`, `DbtTaskGroup`, its `Dbt*LocalOperator`s): one usage per node.

Cosmos's local operators (ExecutionMode LOCAL, VIRTUALENV and WATCHER's producer) copy the dbt
project to a temporary directory, run dbt there through `run_subprocess` (dbt's own executable,
`dbt_executable_path`) or `run_dbt_runner` (dbt imported in the worker), and delete the directory
before the operator returns. Both methods are wrapped: a dbt command that runs nodes (`build`, `run`,
`seed`, `snapshot`, `test`, `retry`; not `deps`, `ls`, `source freshness`, ...) gets its
`run_results.json` and `manifest.json` read as soon as dbt exits, while they still exist, by the same
reader as a `dbt build` in a bash task (capture/dbt.py): the same lines, one per node, with its unique
id, relation, materialization and status. The usage lands in the try of the task that ran dbt:

- LOCAL: each task's try gets the nodes its own dbt command ran (a model and, with
  `TestBehavior.BUILD`, its tests);
- WATCHER: the producer task runs one `dbt build` for every node and gets every line; the consumer
  sensors run no dbt and get none, unless one falls back to running its node itself (a retry after the
  producer ended), which is then a dbt run of its own, with its own lines.

Tagging: dbt's statements carry the task try through the project's query comment
(tagging/dbt_query_comment.sql), which reads the `AIRFLOW_CTX_*` variables Cosmos gives dbt. The wrapper
adds what Cosmos does not give: `AIRFLOW_CTX_MAP_INDEX` and the OpenLineage run id
(`OPENLINEAGE_RUN_ID`), unless the task's `env` already names them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture import dbt
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import Instrumentation, guarded_step, task_session

LOCAL_MODULE = "cosmos.operators.local"
# what dbt's query comment reads beyond the AIRFLOW_CTX_* variables Cosmos sets itself
MAP_INDEX_VARIABLE = "AIRFLOW_CTX_MAP_INDEX"
RUN_ID_VARIABLE = "OPENLINEAGE_RUN_ID"
PARENT_ID_VARIABLE = "OPENLINEAGE_PARENT_ID"


def identity_env(env: Mapping[str, Any], session: CaptureSession) -> dict[str, Any]:
    """dbt's environment with the task try's map index and OpenLineage run id added where the task
    has not set them; a new dict, the caller's left as it is."""
    task_try = session.task_try
    tagged = dict(env)
    tagged.setdefault(MAP_INDEX_VARIABLE, str(task_try.map_index))
    if task_try.ol_run_id and not (tagged.get(RUN_ID_VARIABLE) or tagged.get(PARENT_ID_VARIABLE)):
        tagged[RUN_ID_VARIABLE] = task_try.ol_run_id
    return tagged


def _split(command: Any, env: Any, cwd: Any, *rest: Any, **options: Any):
    return command, env, cwd, rest, options


def _invocation_wrapper(wrapped, instance, args, kwargs):
    session = task_session()
    if session is None or not conf.source_enabled(dbt.SOURCE):
        return wrapped(*args, **kwargs)
    try:
        command, env, cwd, rest, options = _split(*args, **kwargs)
    except TypeError:  # a signature this version does not know: run it as it is
        return wrapped(*args, **kwargs)
    known_env = env if isinstance(env, Mapping) else {}
    invocation = guarded_step("reading a Cosmos dbt command", dbt.command_invocation, command, known_env, cwd)
    if invocation is None:
        return wrapped(*args, **kwargs)
    call_env = env
    if isinstance(env, Mapping) and conf.tagging_on(dbt.SOURCE):
        call_env = guarded_step("tagging a Cosmos dbt run", identity_env, env, session, default=env)
    started = dt.datetime.now(dt.timezone.utc)
    try:
        return wrapped(command, call_env, cwd, *rest, **options)
    finally:
        # before Cosmos removes the temporary project, even when dbt failed
        project_dir = getattr(instance, "project_dir", None)
        guarded_step("reading dbt's artifacts", _record_run, session, invocation, started, project_dir)


def _record_run(
    session: CaptureSession, invocation: tuple[Path, Path], started: dt.datetime, project_dir: Any
) -> None:
    project, target = invocation
    deadline = time.monotonic() + conf.finalize_timeout()
    label = str(project_dir) if project_dir else None
    for usage in dbt.usages_of_run(project, target, started, deadline, project_label=label):
        session.record(usage)


class CosmosDbtRuns(Instrumentation):
    name = "cosmos"
    sources = (dbt.SOURCE,)
    modules = (LOCAL_MODULE,)

    def patch(self, module: Any) -> None:
        base = module.AbstractDbtLocalBase
        self.wrap(base, "run_subprocess", _invocation_wrapper)
        self.wrap(base, "run_dbt_runner", _invocation_wrapper)
