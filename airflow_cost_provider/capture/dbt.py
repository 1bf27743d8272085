"""dbt runs a task made: one usage per node (model, seed, snapshot, test) from dbt's own artifacts.

dbt's statements go through its adapter, not through an Airflow hook, so they are read at the task's
end from the files dbt writes: `run_results.json` (status, execution time, the adapter's response:
BigQuery bytes billed and slot-ms with the job id, Snowflake/Databricks/Redshift query ids) and
`manifest.json` (materialization, relation, adapter type). dbt itself is never imported.

Which dbt run: a task whose `bash_command` runs `dbt build|run|seed|snapshot|test|retry` (BashOperator,
`@task.bash`), with its project found from `--project-dir` in the command, else `DBT_PROJECT_DIR`
in the task's `env` or the worker's environment, else the task's `cwd`; its artifacts from
`--target-path`, else `DBT_TARGET_PATH`, else the project's `target-path` (default `target`). Only
artifacts written during the task try count. Astronomer Cosmos runs dbt in a temporary copy of the
project that is gone when its operator returns: instrumentation/cosmos.py reads each of its dbt
commands (`command_invocation`) as soon as dbt exits. Anything unreadable (missing or truncated file, an
artifact schema version this module does not know) is one unpriced usage naming the problem.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

SOURCE = "dbt"  # the source of a run whose artifacts could not be read
# dbt's commands that run nodes and write run_results.json, and those that do not
RUN_COMMANDS = {"build", "run", "seed", "snapshot", "test", "retry"}
OTHER_COMMANDS = {
    "clean", "clone", "compile", "debug", "deps", "docs", "init", "list", "ls", "parse",
    "run-operation", "show", "source",
}  # fmt: skip
# the artifact schemas this module reads (dbt 1.5 to 1.11 write run-results v4 to v6, manifest v9 to v12)
RUN_RESULTS_SCHEMAS = {"v4", "v5", "v6"}
MANIFEST_SCHEMAS = {"v9", "v10", "v11", "v12"}
NODE_TYPES = ("model", "seed", "snapshot", "test")
# adapters whose response names the query in the warehouse's own history
QUERY_ID_ADAPTERS = {"snowflake", "databricks", "redshift"}
# adapters whose execution time the price book prices by instance type, as the SQL sources do
INSTANCE_PRICED_ADAPTERS = {"postgres", "mysql"}
# how dbt's statuses count: what ran, what failed, what was not built
STATUS = {
    "success": "success",
    "pass": "success",
    "warn": "success",
    "error": "error",
    "fail": "error",
    "runtime error": "error",
    "skipped": "skipped",
    "reused": "reused",
    "no op": "skipped",
}
# slack for file systems that keep modification times to the second
MTIME_SLACK_SECONDS = 2.0


class ArtifactError(ValueError):
    """A dbt artifact this module cannot read; the message names the file and what is wrong."""


def dbt_invocation(task: Any) -> tuple[Path, Path] | None:
    """(project dir, target dir) of the dbt run the task's command makes; None when it runs none."""
    command = getattr(task, "bash_command", None)
    if not isinstance(command, str) or "dbt" not in command:
        return None
    words = _words(command)
    if not _runs_nodes(words):
        return None
    task_env = getattr(task, "env", None)
    task_env = task_env if isinstance(task_env, Mapping) else {}
    cwd = Path(getattr(task, "cwd", None) or os.getcwd())
    return _artifacts_location(words, (task_env, os.environ), cwd)


def command_invocation(
    command: Sequence[Any], env: Mapping[str, Any], cwd: str | os.PathLike | None
) -> tuple[Path, Path] | None:
    """(project dir, target dir) of a dbt command given as its argument list, whatever the
    executable's name (`command[0]`), run with exactly `env` in `cwd`; None when it runs no nodes."""
    if not command:
        return None
    words = ["dbt", *(str(word) for word in command[1:])]
    if not _runs_nodes(words):
        return None
    return _artifacts_location(words, (env,), cwd=Path(cwd or os.getcwd()))


def _artifacts_location(words: list[str], envs: Sequence[Mapping[str, Any]], cwd: Path) -> tuple[Path, Path]:
    """Where the command's project and artifacts are: its options, else the first environment that
    sets the variable, else dbt's defaults."""
    arguments = _arguments(words)

    def setting(option: str, variable: str) -> str | None:
        value = arguments.get(option) or next((e[variable] for e in envs if e.get(variable)), None)
        return str(value) if value else None

    project = Path(os.path.expandvars(setting("--project-dir", "DBT_PROJECT_DIR") or str(cwd)))
    project = project if project.is_absolute() else cwd / project
    target = setting("--target-path", "DBT_TARGET_PATH")
    if target is None:
        target = _project_setting(project, "target-path") or "target"
    target_path = Path(os.path.expandvars(target))
    return project, target_path if target_path.is_absolute() else project / target_path


def runs_nodes(command: str) -> bool:
    """Whether a command line runs dbt nodes (`dbt build`, `dbt run --select x`, ...)."""
    return _runs_nodes(_words(command))


def _words(command: str) -> list[str]:
    """The command's words, with `;`, `&&`, `|`, ... as words of their own."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # an unbalanced quote: read what splits on spaces
        return command.split()


def _runs_nodes(words: list[str]) -> bool:
    """Whether some `dbt ...` in the command is one that builds or tests nodes: the first word after
    `dbt` that names one of dbt's commands tells (options and their values come before it)."""
    for index, word in enumerate(words):
        if os.path.basename(word) != "dbt":
            continue
        previous = word
        for following in words[index + 1 :]:
            if following in RUN_COMMANDS:
                return True
            # a command's name right after an option may be that option's value (--log-level debug)
            other = following in OTHER_COMMANDS and not previous.startswith("-")
            if other or not following or following[0] in ";&|()":
                break
            previous = following
    return False


def _arguments(words: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for index, word in enumerate(words):
        for option in ("--project-dir", "--target-path"):
            if word == option and index + 1 < len(words):
                found.setdefault(option, words[index + 1])
            elif word.startswith(option + "="):
                found.setdefault(option, word[len(option) + 1 :])
    return found


def _project_setting(project: Path, key: str) -> str | None:
    try:
        import yaml

        settings = yaml.safe_load((project / "dbt_project.yml").read_text())
    except Exception:
        return None
    value = settings.get(key) if isinstance(settings, dict) else None
    return str(value) if value else None


def usages_of_run(
    project: Path,
    target: Path,
    started: dt.datetime,
    deadline: float | None = None,
    project_label: str | None = None,
) -> list[Usage]:
    """The usages of the run whose artifacts are in `target`, written since `started`; a run that
    cannot be read is one unpriced usage saying why, its resource `project_label` (else the project
    dir: a runner that copies the project elsewhere names the original)."""
    results_file = target / "run_results.json"
    try:
        results = _read_run_results(results_file, started)
        manifest = _read_manifest(target / "manifest.json", results, deadline)
        return list(
            _node_usages(lambda: _project_setting(project, "name") or project.name, results, manifest)
        )
    except ArtifactError as error:
        return [unreadable_usage(str(error), project_label or str(project))]


def usages_of_artifacts(
    results: Any,
    manifest: Any,
    results_name: str,
    manifest_name: str,
    project_name: str,
    source: str = SOURCE,
) -> list[Usage]:
    """The usages of a run whose artifacts were read elsewhere (dbt Cloud's API), as parsed JSON;
    `manifest` is None when not read. The names say where each came from in an unreadable usage's
    reason. Read and priced as a local run's files are."""
    try:
        _check_run_results(results, results_name)
        manifest = _matching_manifest(manifest, manifest_name, results) if manifest is not None else {}
        return list(_node_usages(lambda: project_name, results, manifest))
    except ArtifactError as error:
        return [unreadable_usage(str(error), project_name, source)]


def parse_artifact(content: bytes, name: str) -> Any:
    """An artifact's JSON read from elsewhere than a file (dbt Cloud's API); ArtifactError names it."""
    try:
        return json.loads(content)
    except ValueError as error:
        raise ArtifactError(f"{name} is not readable JSON (truncated?): {error}") from None


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as file:
            return json.load(file)
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path} is not readable JSON (truncated?): {error}") from None


def _schema_version(document: Any, path: Path | str, kind: str, known: set[str]) -> str:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    url = str((metadata or {}).get("dbt_schema_version", ""))
    version = url.rsplit("/", 1)[-1].removesuffix(".json")
    if f"/{kind}/" not in url or version not in known:
        raise ArtifactError(
            f"{path} has schema {url or 'none'!r}; this version reads dbt {kind} schemas "
            f"{', '.join(sorted(known))}"
        )
    return version


def _read_run_results(path: Path, started: dt.datetime) -> dict:
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist: dbt wrote no results (did it start?)") from None
    earlier = f"{path} is from an earlier run: dbt wrote no results during this task"
    if modified < started.timestamp() - MTIME_SLACK_SECONDS:
        raise ArtifactError(earlier)
    results = _load(path)
    _check_run_results(results, path)
    # dbt's own start time, to the microsecond: a run that ended just before the task is not its own
    metadata = results.get("metadata") or {}
    invoked = parse_timestamp(metadata.get("invocation_started_at") or metadata.get("generated_at"))
    if invoked is not None and invoked < started:
        raise ArtifactError(earlier)
    return results


def _check_run_results(results: Any, path: Path | str) -> None:
    _schema_version(results, path, "run-results", RUN_RESULTS_SCHEMAS)
    if not isinstance(results.get("results"), list):
        raise ArtifactError(f"{path} has no list of results")


def _read_manifest(path: Path, results: dict, deadline: float | None) -> dict:
    """The manifest of the same invocation, or {} (the usages then lack materialization and
    relation): missing, another invocation's, unreadable, or no time left to read it."""
    if deadline is not None and time.monotonic() >= deadline:
        return {}
    try:
        manifest = _load(path)
    except ArtifactError:
        return {}
    return _matching_manifest(manifest, path, results)


def _matching_manifest(manifest: Any, path: Path | str, results: dict) -> dict:
    try:
        _schema_version(manifest, path, "manifest", MANIFEST_SCHEMAS)
    except ArtifactError:
        return {}
    invocation = (results.get("metadata") or {}).get("invocation_id")
    if (manifest.get("metadata") or {}).get("invocation_id") != invocation:
        return {}
    return manifest


def _node_usages(default_project_name: Callable[[], str], results: dict, manifest: dict) -> Iterator[Usage]:
    metadata = manifest.get("metadata") or {}
    adapter = str(metadata.get("adapter_type") or "") or None
    nodes = manifest.get("nodes") or {}
    run_metadata = results.get("metadata") or {}
    invocation_id = run_metadata.get("invocation_id")
    project_name = metadata.get("project_name") or default_project_name()
    seen = set()
    for result in results["results"]:
        if not isinstance(result, dict) or not result.get("unique_id"):
            continue
        unique_id = str(result["unique_id"])
        if unique_id.split(".", 1)[0] not in NODE_TYPES:
            continue  # operations (hooks), sources' freshness: not a node's build
        seen.add(unique_id)
        yield _result_usage(result, nodes.get(unique_id) or {}, adapter, project_name, invocation_id)
    if _state_selected(results.get("args") or {}):
        # a run selecting on state (state:modified, ...) leaves unchanged nodes out: they were reused
        end = parse_timestamp(run_metadata.get("generated_at"))
        for unique_id, node in nodes.items():
            if unique_id not in seen and node.get("resource_type") in ("model", "seed", "snapshot"):
                if (node.get("config") or {}).get("materialized") == "ephemeral":
                    continue
                yield _reused_usage(unique_id, node, adapter, project_name, invocation_id, end)


def _state_selected(args: Mapping[str, Any]) -> bool:
    selection = [*(args.get("select") or ()), str(args.get("selector") or "")]
    return any("state:" in str(item) for item in selection)


def _result_usage(
    result: dict, node: dict, adapter: str | None, project_name: str, invocation_id: Any
) -> Usage:
    unique_id = str(result["unique_id"])
    response = result.get("adapter_response") or {}
    response = response if isinstance(response, dict) else {}
    dbt_status = str(result.get("status") or "").lower()
    status = STATUS.get(dbt_status, dbt_status or "unknown")
    attributes = _node_attributes(unique_id, node, result, invocation_id)
    attributes.update(dbt_status=dbt_status, status=status)
    if response.get("rows_affected") is not None:
        attributes["rows_affected"] = response["rows_affected"]
    execution_time = _decimal(result.get("execution_time")) or Decimal(0)
    attributes["execution_time"] = str(execution_time)
    start, end = _execute_timing(result)
    ran = status not in ("skipped", "reused")
    source = adapter or _adapter_from_response(response)
    if source is None:
        return _usage(
            SOURCE, "queries", Decimal(1) if ran else Decimal(0), "query", unique_id, None, start, end,
            {**attributes, UNPRICED_HINT_ATTRIBUTE: "no manifest.json of this invocation names dbt's adapter"},
        )  # fmt: skip
    if source == "bigquery" and ran:
        usage = _bigquery_usage(response, unique_id, start, end, attributes)
        if usage is not None:
            return usage
    if source in QUERY_ID_ADAPTERS:
        query_id = response.get("query_id")
        return _usage(
            source, "queries", Decimal(1) if ran else Decimal(0), "query", unique_id,
            str(query_id) if query_id else None, start, end,
            {**attributes, UNPRICED_HINT_ATTRIBUTE: f"dbt reported the {source} query id, not its usage: "
             "look it up in the warehouse's query history, where the query comment names the task try"},
        )  # fmt: skip
    return _runtime_usage(
        source, execution_time if ran else Decimal(0), unique_id, project_name, start, end, attributes
    )


def _node_attributes(unique_id: str, node: dict, result: dict, invocation_id: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"dbt_unique_id": unique_id, "dbt_resource_type": unique_id.split(".", 1)[0]}
    relation = node.get("relation_name") or result.get("relation_name")
    if relation:
        attributes["dbt_relation"] = str(relation)
    materialized = (node.get("config") or {}).get("materialized")
    if materialized:
        attributes["dbt_materialization"] = str(materialized)
    if invocation_id:
        attributes["dbt_invocation_id"] = str(invocation_id)
    return attributes


def _runtime_usage(
    source: str,
    seconds: Decimal,
    unique_id: str,
    project_name: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    attributes: dict[str, Any],
) -> Usage:
    """Execution time at the instance rate `connection_pricing` gives the project (`dbt:<name>`),
    as the SQL sources price a connection's statements."""
    pricing_key = f"dbt:{project_name}"
    if source == "duckdb":
        hint = "DuckDB runs inside the dbt process on the worker: its cost is the worker's compute"
    elif source not in INSTANCE_PRICED_ADAPTERS:
        hint = f"the dbt adapter {source!r} is not one this provider prices: its execution time is kept"
    else:
        hint = (
            f"the dbt project has no instance in [cost_provider] connection_pricing; set e.g. "
            f'{{"{pricing_key}": {{"instance_type": "db.r6g.large"}}}}'
        )
    return _usage(
        source,
        "instance_time",
        seconds,
        "instance-second",
        unique_id,
        None,
        start,
        end,
        {
            **attributes,
            "conn_id": pricing_key,
            METHOD_ATTRIBUTE: "runtime_rate",
            UNPRICED_HINT_ATTRIBUTE: hint,
            **conf.pricing_for_connection(pricing_key),
        },
    )


def _bigquery_usage(
    response: dict, unique_id: str, start: Any, end: Any, attributes: dict[str, Any]
) -> Usage | None:
    from airflow_cost_provider.instrumentation.bigquery import job_usage

    project = response.get("project_id")
    job = {
        "status": {"state": "DONE"},
        "jobReference": {
            "projectId": project,
            "location": response.get("location"),
            "jobId": response.get("job_id"),
        },
        "configuration": {"query": {}},
        "statistics": {
            "totalSlotMs": response.get("slot_ms"),
            "query": {
                "totalBytesBilled": response.get("bytes_billed"),
                "totalBytesProcessed": response.get("bytes_processed"),
            },
        },
    }
    pricing = conf.bigquery_pricing()
    usage = job_usage(job, pricing.get(str(project), pricing.get("*", "on_demand")))
    if usage is None:
        return None
    return Usage(
        source=usage.source,
        metric=usage.metric,
        quantity=usage.quantity,
        unit=usage.unit,
        resource=unique_id,
        external_id=usage.external_id,
        start_time=start,
        end_time=end,
        attributes={**usage.attributes, **attributes, "bigquery_resource": usage.resource},
    )


def _reused_usage(
    unique_id: str, node: dict, adapter: str | None, project_name: str, invocation_id: Any, end: Any
) -> Usage:
    attributes = _node_attributes(unique_id, node, {}, invocation_id)
    attributes.update(dbt_status="not selected", status="reused", execution_time="0")
    if adapter in QUERY_ID_ADAPTERS or adapter == "bigquery" or adapter is None:
        return _usage(
            adapter or SOURCE, "queries", Decimal(0), "query", unique_id, None, None, end,
            {**attributes, UNPRICED_HINT_ATTRIBUTE: "reused: dbt ran no query for it"},
        )  # fmt: skip
    return _runtime_usage(adapter, Decimal(0), unique_id, project_name, None, end, attributes)


def _usage(
    source: str,
    metric: str,
    quantity: Decimal,
    unit: str,
    resource: str,
    external_id: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    attributes: dict[str, Any],
) -> Usage:
    return Usage(source, metric, quantity, unit, resource, external_id, start, end, attributes)


def unreadable_usage(reason: str, project: str, source: str = SOURCE) -> Usage:
    """A run whose artifacts could not be read: one unpriced usage naming the file and the problem."""
    return Usage(
        source=source,
        metric="queries",
        quantity=Decimal(1),
        unit="query",
        resource=project,
        end_time=dt.datetime.now(dt.timezone.utc),
        attributes={UNPRICED_HINT_ATTRIBUTE: f"dbt's artifacts unreadable: {reason}"},
    )


def _adapter_from_response(response: dict) -> str | None:
    if "bytes_billed" in response or "slot_ms" in response:
        return "bigquery"
    return None


def _execute_timing(result: dict) -> tuple[dt.datetime | None, dt.datetime | None]:
    for step in result.get("timing") or ():
        if isinstance(step, dict) and step.get("name") == "execute":
            return parse_timestamp(step.get("started_at")), parse_timestamp(step.get("completed_at"))
    return None, None


def parse_timestamp(value: Any) -> dt.datetime | None:
    """An ISO 8601 time as dbt and dbt Cloud write it (`Z` or an offset; UTC when none), else None."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None
