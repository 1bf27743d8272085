"""dbt Cloud's Administrative API (v2, and the v3 project read) on 127.0.0.1 over HTTPS, for tests.

`DbtCloudHook` builds every URL as `https://{tenant}/api/v2/accounts/...` with the connection's host as
the tenant, so the fake serves TLS with a certificate for 127.0.0.1 signed by a test CA the clients trust
through `REQUESTS_CA_BUNDLE` (requests) and `SSL_CERT_FILE` (aiohttp, in the triggerer). It answers
POST jobs/{id}/run/ and jobs/{id}/rerun/, GET runs/{id}/ (with `include_related` run_steps and job),
GET runs/{id}/artifacts/{path}?step=N (the file itself, as dbt Cloud serves it) and GET
api/v3/accounts/{id}/projects/{id}/, with the API's own shapes, and records every request.

Each job runs to a planned outcome: how many reads of the run it stays running for, its final status,
and its dbt steps, each with the nodes it built and their adapter responses, and faults for its
artifacts (missing: 404, or truncated).

https://docs.getdbt.com/dbt-cloud/api-v2#/operations/Retrieve%20Run
https://docs.getdbt.com/dbt-cloud/api-v2#/operations/Retrieve%20Run%20Artifact
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fake_azure_data_factory import serving_tls
from tests.support.json_http import JsonHandler, LocalServer, Request

_V2 = re.compile(r"^/api/v2/accounts/(?P<account>\d+)/(?P<rest>.*)$")
_V3_PROJECT = re.compile(r"^/api/v3/accounts/(?P<account>\d+)/projects/(?P<project>\d+)/?$")
_TRIGGER = re.compile(r"^jobs/(?P<job>\d+)/(?P<how>run|rerun)/?$")
_RUN = re.compile(r"^runs/(?P<run>\d+)/?$")
_ARTIFACT = re.compile(r"^runs/(?P<run>\d+)/artifacts/(?P<path>.+)$")
# A fixed clock, so durations (and so costs) do not depend on the machine.
STARTED_AT = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
STATUS_NAMES = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}
RUN_RESULTS_SCHEMA = "https://schemas.getdbt.com/dbt/run-results/v6.json"
MANIFEST_SCHEMA = "https://schemas.getdbt.com/dbt/manifest/v12.json"
# dbt Cloud's own steps before the job's commands
SETUP_STEPS = (
    "Clone git repository",
    "Create profile from connection BigQuery",
    "Invoke dbt with `dbt deps`",
)


@dataclass(frozen=True)
class Node:
    """A node a step ran, with what the adapter reported (dbt-bigquery's adapter_response)."""

    unique_id: str
    status: str = "success"
    seconds: float = 2.0
    bytes_billed: int | None = None
    slot_ms: int | None = None
    materialized: str = "table"


@dataclass(frozen=True)
class Step:
    command: str  # what follows `dbt` in the step's name: "dbt build"
    nodes: tuple[Node, ...]
    status: int = 10
    run_results: str = "ok"  # ok | missing (404) | truncated
    manifest: str = "ok"


@dataclass(frozen=True)
class JobPlan:
    name: str
    steps: tuple[Step, ...]
    running_reads: int = 1  # reads of runs/{id}/ that answer "running" before the final status
    status: int = 10
    project_id: int = 5001
    environment_id: int = 6001
    adapter: str = "bigquery"
    bigquery_project: str = "shop-analytics"


@dataclass
class _Run:
    id: int
    account_id: int
    job_id: int
    plan: JobPlan
    cause: str | None
    created: dt.datetime
    reads: int = 0
    invocations: dict[int, str] = field(default_factory=dict)


class FakeDbtCloud(LocalServer):
    scheme = "https"

    def __init__(self, tls: ssl.SSLContext, token: str, account_id: int, jobs: dict[int, JobPlan]) -> None:
        self.token = token
        self.account_id = account_id
        self.jobs = jobs
        self.requests: list[Request] = []
        self.runs: dict[int, _Run] = {}
        self._run_ids = itertools.count(70_001)
        self._lock = threading.Lock()
        self.tls = tls
        super().__init__(_Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake on the request's own thread: a client that stalls in it holds no other
        request.settimeout(30)
        try:
            tunnel = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tunnel, client_address)

    def connection(self) -> dict[str, Any]:
        """An Airflow connection (JSON form) of type dbt_cloud whose tenant is this server."""
        return {
            "conn_type": "dbt_cloud",
            "host": f"127.0.0.1:{self.port}",
            "login": str(self.account_id),
            "password": self.token,
        }

    # ------------------------------------------------------------------ what the tests read

    def triggered(self, job_id: int) -> list[_Run]:
        return [run for run in self.runs.values() if run.job_id == job_id]

    def artifact_reads(self, run_id: int) -> list[Request]:
        return [r for r in self.requests if f"/runs/{run_id}/artifacts/" in r.path]

    def run_results(self, run_id: int, step_index: int) -> dict[str, Any]:
        """The run_results.json the fake serves for a step (whatever fault it is planned to have)."""
        run = self.runs[run_id]
        return _run_results(run, step_index, run.plan.steps[step_index - len(SETUP_STEPS) - 1])

    # ------------------------------------------------------------------ the API

    def trigger(self, account_id: int, job_id: int, body: Any) -> dict[str, Any] | None:
        plan = self.jobs.get(job_id)
        if plan is None:
            return None
        with self._lock:
            run_id = next(self._run_ids)
            created = STARTED_AT + dt.timedelta(hours=len(self.runs))
            cause = body.get("cause") if isinstance(body, dict) else None
            run = self.runs[run_id] = _Run(run_id, account_id, job_id, plan, cause, created)
        return self.describe(run, set())

    def read(self, run: _Run, related: set[str]) -> dict[str, Any]:
        with self._lock:
            run.reads += 1
        return self.describe(run, related)

    def status_of(self, run: _Run) -> int:
        if run.reads <= run.plan.running_reads:
            return 3 if run.reads else 1
        return run.plan.status

    def describe(self, run: _Run, related: set[str]) -> dict[str, Any]:
        plan = run.plan
        status = self.status_of(run)
        started = run.created + dt.timedelta(seconds=5)
        finished = started + dt.timedelta(seconds=10 + sum(n.seconds for s in plan.steps for n in s.nodes))
        terminal = status in (10, 20, 30)
        data: dict[str, Any] = {
            "id": run.id,
            "trigger_id": run.id + 900_000,
            "account_id": run.account_id,
            "environment_id": plan.environment_id,
            "project_id": plan.project_id,
            "job_definition_id": run.job_id,
            "job_id": run.job_id,
            "status": status,
            "status_humanized": STATUS_NAMES[status],
            "status_message": "Run failed" if status == 20 else None,
            "dbt_version": "1.10.0",
            "git_branch": "main",
            "git_sha": "0123456789abcdef",
            "created_at": _text(run.created),
            "updated_at": _text(finished if terminal else started),
            "dequeued_at": _text(run.created + dt.timedelta(seconds=2)),
            "started_at": _text(started) if status >= 3 else None,
            "finished_at": _text(finished) if terminal else None,
            "in_progress": not terminal,
            "is_complete": terminal,
            "is_success": status == 10,
            "is_error": status == 20,
            "is_cancelled": status == 30,
            "trigger": {"id": run.id + 900_000, "cause": run.cause},
            "href": f"https://cloud.getdbt.com/deploy/{run.account_id}/projects/{plan.project_id}/runs/{run.id}/",
            "run_steps": [],
        }
        if "run_steps" in related:
            data["run_steps"] = self._steps(run, status)
        if "job" in related:
            data["job"] = {
                "id": run.job_id,
                "account_id": run.account_id,
                "project_id": plan.project_id,
                "environment_id": plan.environment_id,
                "name": plan.name,
                "execute_steps": [s.command for s in plan.steps],
            }
        return data

    def _steps(self, run: _Run, status: int) -> list[dict[str, Any]]:
        names = [*SETUP_STEPS, *(f"Invoke dbt with `{s.command}`" for s in run.plan.steps)]
        statuses = [10] * len(SETUP_STEPS) + [s.status for s in run.plan.steps]
        if status not in (10, 20, 30):
            statuses = [3 if i == 0 else 1 for i, _ in enumerate(names)]
        return [
            {
                "id": run.id * 100 + index,
                "run_id": run.id,
                "account_id": run.account_id,
                "index": index,
                "name": name,
                "status": step_status,
                "status_humanized": STATUS_NAMES[step_status],
            }
            for index, (name, step_status) in enumerate(zip(names, statuses, strict=True), start=1)
        ]

    def artifact(self, run: _Run, path: str, step: int | None) -> bytes | None:
        """The artifact's bytes, or None where dbt Cloud answers 404."""
        index = step if step is not None else len(SETUP_STEPS) + len(run.plan.steps)
        position = index - len(SETUP_STEPS) - 1
        if self.status_of(run) not in (10, 20, 30) or not 0 <= position < len(run.plan.steps):
            return None
        plan_step = run.plan.steps[position]
        if path == "run_results.json":
            fault, document = plan_step.run_results, _run_results(run, index, plan_step)
        elif path == "manifest.json":
            fault, document = plan_step.manifest, _manifest(run, index, plan_step)
        else:
            return None
        if fault == "missing":
            return None
        content = json.dumps(document).encode()
        return content[: len(content) // 2] if fault == "truncated" else content


def _text(moment: dt.datetime) -> str:
    return moment.isoformat(sep=" ")


def _invocation(run: _Run, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dbt-cloud-run-{run.id}-step-{index}"))


def _relation(plan: JobPlan, unique_id: str) -> str:
    return f"`{plan.bigquery_project}`.`analytics`.`{unique_id.rsplit('.', 1)[-1]}`"


def _run_results(run: _Run, index: int, step: Step) -> dict[str, Any]:
    started = run.created + dt.timedelta(seconds=5)
    results, clock = [], started
    for node in step.nodes:
        end = clock + dt.timedelta(seconds=node.seconds)
        response: dict[str, Any] = {
            "_message": "CREATE TABLE (3.0 rows, 1.0 KiB processed)",
            "code": "CREATE TABLE",
        }
        if node.bytes_billed is not None:
            response.update(
                bytes_processed=node.bytes_billed,
                bytes_billed=node.bytes_billed,
                location="US",
                project_id=run.plan.bigquery_project,
                job_id=f"job_{run.id}_{node.unique_id.rsplit('.', 1)[-1]}",
                slot_ms=node.slot_ms or 0,
                rows_affected=3,
            )
        results.append(
            {
                "unique_id": node.unique_id,
                "status": node.status,
                "execution_time": node.seconds,
                "thread_id": "Thread-1",
                "message": "Database Error" if node.status == "error" else "OK",
                "failures": 0 if node.unique_id.startswith("test.") else None,
                "adapter_response": response if node.status in ("success", "pass", "error") else {},
                "timing": [
                    {"name": "compile", "started_at": _iso(clock), "completed_at": _iso(clock)},
                    {"name": "execute", "started_at": _iso(clock), "completed_at": _iso(end)},
                ],
                "relation_name": _relation(run.plan, node.unique_id)
                if not node.unique_id.startswith("test.")
                else None,
            }
        )
        clock = end
    return {
        "metadata": {
            "dbt_schema_version": RUN_RESULTS_SCHEMA,
            "dbt_version": "1.10.0",
            "generated_at": _iso(clock),
            "invocation_id": _invocation(run, index),
            "invocation_started_at": _iso(started),
            "env": {},
        },
        "results": results,
        "elapsed_time": (clock - started).total_seconds(),
        "args": {"which": step.command.split()[1]},
    }


def _manifest(run: _Run, index: int, step: Step) -> dict[str, Any]:
    nodes = {}
    for node in step.nodes:
        resource_type = node.unique_id.split(".", 1)[0]
        nodes[node.unique_id] = {
            "unique_id": node.unique_id,
            "resource_type": resource_type,
            "name": node.unique_id.rsplit(".", 1)[-1],
            "package_name": "shop",
            "relation_name": _relation(run.plan, node.unique_id) if resource_type != "test" else None,
            "config": {"materialized": node.materialized if resource_type != "test" else "test"},
        }
    return {
        "metadata": {
            "dbt_schema_version": MANIFEST_SCHEMA,
            "dbt_version": "1.10.0",
            "generated_at": _iso(run.created),
            "invocation_id": _invocation(run, index),
            "adapter_type": run.plan.adapter,
            "project_name": "shop",
        },
        "nodes": nodes,
        "sources": {},
        "macros": {},
        "parent_map": {},
        "child_map": {},
    }


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class _Handler(JsonHandler):
    protocol_version = "HTTP/1.1"
    server: FakeDbtCloud

    def _reply(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
        """`body` in dbt Cloud's envelope, or an artifact's `raw` content as it is."""
        if raw is not None:
            return self.reply(status, raw, self.json_content_type)
        envelope = {
            "status": {
                "code": status,
                "is_success": status < 400,
                "user_message": "Success!" if status < 400 else "The requested resource was not found.",
                "developer_message": "",
            },
            "data": body,
        }
        self.reply_json(status, envelope)

    def _handle(self) -> None:
        method = self.command
        body = self.read_json(invalid_as_text=True)
        request = Request(method, self.url_path, self.query(), body, self.headers.get("Authorization"))
        self.server.requests.append(request)
        if request.authorization != f"Token {self.server.token}":
            self._reply(401, None)
            return
        project = _V3_PROJECT.match(request.path)
        if project and method == "GET":
            self._reply(
                200,
                {
                    "id": int(project["project"]),
                    "account_id": int(project["account"]),
                    "name": "shop",
                    "connection": {"type": "bigquery", "details": {"project_id": "shop-analytics"}},
                },
            )
            return
        match = _V2.match(request.path)
        if match is None:
            self._reply(404, None)
            return
        rest = match["rest"]
        trigger = _TRIGGER.match(rest)
        if trigger and method == "POST":
            run = self.server.trigger(int(match["account"]), int(trigger["job"]), request.body)
            self._reply(200 if run else 404, run)
            return
        read = _RUN.match(rest)
        artifact = _ARTIFACT.match(rest)
        run_id = int((read or artifact)["run"]) if (read or artifact) else None
        run = self.server.runs.get(run_id) if run_id is not None else None
        if run is None or method != "GET":
            self._reply(404, None)
            return
        if read:
            related = {
                name.strip()
                for value in request.query.get("include_related", [])
                for name in value.strip("[]").replace("'", "").split(",")
            }
            self._reply(200, self.server.read(run, related))
            return
        step = request.query.get("step", [None])[0]
        content = self.server.artifact(run, artifact["path"], int(step) if step else None)
        if content is None:
            self._reply(404, None)
        else:
            self._reply(200, raw=content)

    do_GET = do_POST = _handle  # noqa: N815


@contextmanager
def fake_dbt_cloud(
    directory: Path, token: str, account_id: int, jobs: dict[int, JobPlan]
) -> Iterator[FakeDbtCloud]:
    with serving_tls(
        directory, ["127.0.0.1"], lambda tls: FakeDbtCloud(tls, token, account_id, jobs)
    ) as server:
        yield server


def client_env(server: FakeDbtCloud) -> dict[str, str]:
    """What a client process needs to trust the fake's certificate (requests, and aiohttp's ssl)."""
    return {
        "REQUESTS_CA_BUNDLE": str(server.ca_path),  # type: ignore[attr-defined]
        "SSL_CERT_FILE": str(server.ca_path),  # type: ignore[attr-defined]
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": f"{__name__}.NoDbtCloudLineage",
    }


def _base_extractor() -> type:
    from airflow.providers.openlineage.extractors.base import BaseExtractor

    return BaseExtractor


class NoDbtCloudLineage(_base_extractor()):
    """An OpenLineage extractor ([openlineage] extractors) that reads nothing from dbt Cloud.

    The provider's own extraction fetches the run's artifacts through asgiref's `sync_to_async`, whose
    shared executor thread does not survive the fork into the OpenLineage listener's child once a
    trigger ran in the task's process, as `airflow dags test` runs them: the child then waits until
    the listener kills it, and the task's COMPLETE event (with the cost facet) is lost. Workers do not
    run triggers; the tests use this to keep the events they assert on."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["DbtCloudRunJobOperator", "DbtCloudJobRunSensor"]

    def _execute_extraction(self) -> Any:
        return None

    def extract_on_complete(self, task_instance: Any) -> Any:
        return None

    def extract_on_failure(self, task_instance: Any) -> Any:
        return None
