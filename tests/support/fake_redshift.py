"""Amazon Redshift for tests: the Data API and clusters on the moto server, with what moto 5.2 does not
model added in the APIs' own shapes, and Redshift Serverless's GetWorkgroup on its own 127.0.0.1 port.

Moto keeps Data API statements and their SQL, and describes clusters, but its statements never leave
STARTED, report a Duration of 0, and drop StatementName and WorkgroupName; it has no Redshift
Serverless at all. Installed into the moto server of this process, this module:

- runs each statement to the outcome a test plans for it (FINISHED or FAILED, after a duration),
  matched by a text its SQL contains, the first time it is described;
- keeps each statement's StatementName and WorkgroupName: DescribeStatement returns the workgroup,
  and ListStatements (which moto lacks) returns the names;
- records every Data API call it answers, with its request body.

`serverless_server()` answers `RedshiftServerless.GetWorkgroup` (JSON 1.1) for the workgroups a test
defines; point the AWS connection's `service_config` for `redshift-serverless` at it.

https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_DescribeStatement.html
https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_GetWorkgroup.html
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_recorder import serving
from tests.support.json_http import JsonHandler

_ISO = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class StatementPlan:
    """How a statement ends: its status, and the Duration (ns) DescribeStatement reports."""

    duration_ns: int
    status: str = "FINISHED"
    error: str = "ERROR: planned by the test"


@dataclass
class FakeRedshiftData:
    # (text the SQL contains, plan); the first match wins
    plans: list[tuple[str, StatementPlan]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def plan(self, contains: str, **plan: Any) -> None:
        self.plans.append((contains, StatementPlan(**plan)))

    def calls_of(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    def _run(self, statement: Any) -> None:
        """Finish a statement the first time it is described, as planned (1 s FINISHED otherwise)."""
        if statement.status != "STARTED":
            return
        plan = next((p for contains, p in self.plans if contains in statement.query_string), None)
        plan = plan or StatementPlan(duration_ns=1_000_000_000)
        statement.status = plan.status
        statement.duration = plan.duration_ns
        created = dt.datetime.strptime(statement.created_at[:19], _ISO)
        statement.updated_at = (created + dt.timedelta(microseconds=plan.duration_ns // 1000)).strftime(_ISO)
        statement.error = plan.error if plan.status == "FAILED" else None

    @contextmanager
    def installed(self) -> Iterator[FakeRedshiftData]:
        """Extend moto's Redshift Data API responses in this process for the duration of the block."""
        from moto.redshiftdata.responses import RedshiftDataAPIServiceResponse as Response

        fake = self
        original_execute = Response.execute_statement
        original_describe = Response.describe_statement

        def body_of(response: Any) -> dict[str, Any]:
            try:
                return json.loads(response.body or "{}")
            except ValueError:
                return {}

        def execute_statement(response: Any):
            body = body_of(response)
            fake.calls.append(("ExecuteStatement", body))
            status, headers, answer = original_execute(response)
            answered = json.loads(answer)
            statement = response.redshiftdata_backend.statements[answered["Id"]]
            statement.statement_name = body.get("StatementName")
            statement.workgroup_name = body.get("WorkgroupName")
            if statement.workgroup_name:
                answered["WorkgroupName"] = statement.workgroup_name
                answered.pop("ClusterIdentifier", None)
            return status, headers, json.dumps(answered)

        def describe_statement(response: Any):
            body = body_of(response)
            fake.calls.append(("DescribeStatement", body))
            statement = response.redshiftdata_backend.statements.get(body.get("Id"))
            if statement is not None:
                fake._run(statement)
            status, headers, answer = original_describe(response)
            if statement is None:
                return status, headers, answer
            described = {key: value for key, value in json.loads(answer).items() if value is not None}
            if getattr(statement, "workgroup_name", None):
                described["WorkgroupName"] = statement.workgroup_name
            if getattr(statement, "error", None):
                described["Error"] = statement.error
            return status, headers, json.dumps(described)

        def list_statements(response: Any):
            fake.calls.append(("ListStatements", body_of(response)))
            statements = [
                {
                    "Id": s.id,
                    "QueryString": s.query_string,
                    "StatementName": getattr(s, "statement_name", None),
                    "Status": s.status,
                    "CreatedAt": s.created_at,
                    "UpdatedAt": s.updated_at,
                    "IsBatchStatement": False,
                }
                for s in response.redshiftdata_backend.statements.values()
            ]
            statements = [{k: v for k, v in s.items() if v is not None} for s in statements]
            return 200, {}, json.dumps({"Statements": statements})

        Response.execute_statement = execute_statement
        Response.describe_statement = describe_statement
        Response.list_statements = list_statements
        try:
            yield self
        finally:
            Response.execute_statement = original_execute
            Response.describe_statement = original_describe
            del Response.list_statements


@dataclass
class FakeServerless:
    # workgroup name -> base capacity (RPUs)
    workgroups: dict[str, int]
    calls: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _ServerlessHandler(JsonHandler):
    fake: FakeServerless
    json_content_type = "application/x-amz-json-1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json({})
        fake = self.fake
        target = self.headers.get("X-Amz-Target", "")
        fake.calls.append({"target": target, **body})
        name = body.get("workgroupName")
        if target != "RedshiftServerless.GetWorkgroup":
            self.reply_json(400, {"__type": "UnknownOperationException", "message": target})
        elif name not in fake.workgroups:
            self.reply_json(
                400, {"__type": "ResourceNotFoundException", "message": f"Workgroup {name} not found."}
            )
        else:
            self.reply_json(200, {"workgroup": _workgroup(name, fake.workgroups[name])})


def _workgroup(name: str, base_capacity: int) -> dict[str, Any]:
    return {
        "workgroupName": name,
        "workgroupId": f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        "workgroupArn": f"arn:aws:redshift-serverless:us-east-1:123456789012:workgroup/{name}",
        "namespaceName": "default",
        "baseCapacity": base_capacity,
        "status": "AVAILABLE",
        "creationDate": "2026-01-01T00:00:00Z",
    }


@contextmanager
def serverless_server(workgroups: dict[str, int]) -> Iterator[FakeServerless]:
    with serving(_ServerlessHandler, FakeServerless(dict(workgroups))) as fake:
        yield fake
