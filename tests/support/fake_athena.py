"""Amazon Athena on the moto server, with what moto 5.2 does not model added in the API's own shapes.

Moto runs Athena queries to SUCCEEDED (or CANCELLED on StopQueryExecution) and keeps their query
strings, but reports every query as having scanned 0 bytes and does not implement
BatchGetQueryExecution. Installed into the moto server of this process, this module:

- answers BatchGetQueryExecution (up to 50 ids; unknown ids come back as UnprocessedQueryExecutionIds)
  from moto's own query executions, exactly as GetQueryExecution describes them;
- gives queries the statistics and final state a test plans for them, matched by a text the query
  contains (what Athena's engine would have reported for that query);
- records every Athena call it answers, with its request body.

https://docs.aws.amazon.com/athena/latest/APIReference/API_BatchGetQueryExecution.html
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QueryPlan:
    """What Athena reports for a query: bytes scanned, engine time, and a final state other than the
    one moto gives it (e.g. FAILED)."""

    scanned_bytes: int = 0
    engine_time_ms: int = 0
    state: str | None = None
    reason: str = "planned by the test"


@dataclass
class FakeAthena:
    # (text the query contains, plan); the first match wins
    plans: list[tuple[str, QueryPlan]] = field(default_factory=list)
    # (action, request body) for every Athena call answered, and its client's user agent
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    user_agents: list[tuple[str, str]] = field(default_factory=list)

    def plan(self, contains: str, **plan: Any) -> None:
        self.plans.append((contains, QueryPlan(**plan)))

    def calls_of(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    def _planned(self, execution: dict[str, Any]) -> dict[str, Any]:
        query = execution.get("Query") or ""
        plan = next((p for contains, p in self.plans if contains in query), None)
        if plan is None:
            return execution
        statistics = execution.setdefault("Statistics", {})
        statistics["DataScannedInBytes"] = plan.scanned_bytes
        statistics["EngineExecutionTimeInMillis"] = plan.engine_time_ms
        statistics["TotalExecutionTimeInMillis"] = plan.engine_time_ms
        if plan.state and execution["Status"]["State"] in ("SUCCEEDED", plan.state):
            execution["Status"]["State"] = plan.state
            execution["Status"]["StateChangeReason"] = plan.reason
        return execution

    @contextmanager
    def installed(self) -> Iterator[FakeAthena]:
        """Extend moto's Athena responses in this process for the duration of the block."""
        from moto.athena.responses import AthenaResponse

        fake = self
        original_get = AthenaResponse.get_query_execution
        original_start = AthenaResponse.start_query_execution

        def body_of(response: Any) -> dict[str, Any]:
            action = response.headers.get("X-Amz-Target", "").rpartition(".")[2]
            fake.user_agents.append((action, response.headers.get("User-Agent", "")))
            try:
                return json.loads(response.body or "{}")
            except ValueError:
                return {}

        def describe(response: Any, query_execution_id: str) -> dict[str, Any]:
            response._get_param = lambda name, if_none=None: (
                query_execution_id if name == "QueryExecutionId" else if_none
            )
            try:
                return fake._planned(json.loads(original_get(response))["QueryExecution"])
            finally:
                del response._get_param

        def start_query_execution(response: Any):
            fake.calls.append(("StartQueryExecution", body_of(response)))
            return original_start(response)

        def get_query_execution(response: Any) -> str:
            body = body_of(response)
            fake.calls.append(("GetQueryExecution", body))
            return json.dumps({"QueryExecution": describe(response, body["QueryExecutionId"])})

        def batch_get_query_execution(response: Any):
            body = body_of(response)
            fake.calls.append(("BatchGetQueryExecution", body))
            ids = body.get("QueryExecutionIds") or []
            if not 1 <= len(ids) <= 50:
                message = "QueryExecutionIds must hold between 1 and 50 ids"
                return json.dumps({"__type": "InvalidRequestException", "Message": message}), {"status": 400}
            known = response.athena_backend.executions
            executions, unprocessed = [], []
            for query_execution_id in ids:
                if query_execution_id in known:
                    executions.append(describe(response, query_execution_id))
                else:
                    unprocessed.append(
                        {
                            "QueryExecutionId": query_execution_id,
                            "ErrorCode": "INVALID_INPUT",
                            "ErrorMessage": f"QueryExecution {query_execution_id} was not found",
                        }
                    )
            return json.dumps({"QueryExecutions": executions, "UnprocessedQueryExecutionIds": unprocessed})

        AthenaResponse.start_query_execution = start_query_execution
        AthenaResponse.get_query_execution = get_query_execution
        AthenaResponse.batch_get_query_execution = batch_get_query_execution
        try:
            yield self
        finally:
            AthenaResponse.start_query_execution = original_start
            AthenaResponse.get_query_execution = original_get
            del AthenaResponse.batch_get_query_execution
