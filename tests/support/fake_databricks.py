"""A Databricks SQL warehouse on 127.0.0.1: the connector's own Thrift service over HTTP, plus the
REST endpoints the cost provider reads (query history, warehouses).

The Thrift side is `databricks.sql.thrift_api.TCLIService` — the generated service the connector
speaks — served with TBinaryProtocol on POST to the warehouse's http_path, as a warehouse does. Every
statement is answered at once as finished, with its result inline (`directResults`), and is kept with
the session configuration (where `QUERY_TAGS` travels) and a server-side duration that the query
history then reports.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from databricks.sql.thrift_api.TCLIService import TCLIService, ttypes
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from tests.support.fake_databricks_jobs import workspace_connection
from tests.support.json_http import JsonHandler, LocalServer, running

SUCCESS = ttypes.TStatus(statusCode=ttypes.TStatusCode.SUCCESS_STATUS)
_SELECT_NUMBER = re.compile(r"^\s*SELECT\s+(\d+)\b", re.IGNORECASE)


@dataclass
class ExecutedStatement:
    query_id: str
    statement: str
    warehouse_id: str
    session_configuration: dict[str, str]
    conf_overlay: dict[str, str]
    start_ms: int
    duration_ms: int


@dataclass
class RestRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class _Session:
    warehouse_id: str
    configuration: dict[str, str] = field(default_factory=dict)


class _Warehouse:
    """The TCLIService handler: one instance per server, sessions keyed by their guid."""

    def __init__(self, server: FakeDatabricks) -> None:
        self.server = server
        self.sessions: dict[bytes, _Session] = {}
        self.current_warehouse = threading.local()

    def OpenSession(self, req):  # noqa: N802 - the Thrift service's method names
        guid = uuid.uuid4().bytes
        self.sessions[guid] = _Session(self.current_warehouse.id, dict(req.configuration or {}))
        return ttypes.TOpenSessionResp(
            status=SUCCESS,
            serverProtocolVersion=ttypes.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8,
            sessionHandle=ttypes.TSessionHandle(
                sessionId=ttypes.THandleIdentifier(guid=guid, secret=uuid.uuid4().bytes)
            ),
            canUseMultipleCatalogs=True,
            configuration={},
        )

    def CloseSession(self, req):  # noqa: N802
        self.sessions.pop(req.sessionHandle.sessionId.guid, None)
        return ttypes.TCloseSessionResp(status=SUCCESS)

    def ExecuteStatement(self, req):  # noqa: N802
        session = self.sessions[req.sessionHandle.sessionId.guid]
        guid = uuid.uuid4().bytes
        executed = self.server.record_statement(
            query_id=str(uuid.UUID(bytes=guid)),
            statement=req.statement,
            warehouse_id=session.warehouse_id,
            session_configuration=dict(session.configuration),
            conf_overlay=dict(req.confOverlay or {}),
        )
        column, value = _result_of(executed.statement)
        metadata = ttypes.TGetResultSetMetadataResp(
            status=SUCCESS,
            schema=ttypes.TTableSchema(
                columns=[
                    ttypes.TColumnDesc(
                        columnName=column,
                        typeDesc=ttypes.TTypeDesc(
                            types=[
                                ttypes.TTypeEntry(
                                    primitiveEntry=ttypes.TPrimitiveTypeEntry(type=ttypes.TTypeId.BIGINT_TYPE)
                                )
                            ]
                        ),
                        position=1,
                    )
                ]
            ),
            resultFormat=ttypes.TSparkRowSetType.COLUMN_BASED_SET,
            lz4Compressed=False,
        )
        rows = ttypes.TRowSet(
            startRowOffset=0,
            rows=[],
            columns=[ttypes.TColumn(i64Val=ttypes.TI64Column(values=[value], nulls=b"\x00"))],
        )
        return ttypes.TExecuteStatementResp(
            status=SUCCESS,
            operationHandle=ttypes.TOperationHandle(
                operationId=ttypes.THandleIdentifier(guid=guid, secret=uuid.uuid4().bytes),
                operationType=ttypes.TOperationType.EXECUTE_STATEMENT,
                hasResultSet=True,
            ),
            directResults=ttypes.TSparkDirectResults(
                operationStatus=ttypes.TGetOperationStatusResp(
                    status=SUCCESS, operationState=ttypes.TOperationState.FINISHED_STATE
                ),
                resultSetMetadata=metadata,
                resultSet=ttypes.TFetchResultsResp(
                    status=SUCCESS, hasMoreRows=False, results=rows, resultSetMetadata=metadata
                ),
                closeOperation=ttypes.TCloseOperationResp(status=SUCCESS),
            ),
        )

    def GetOperationStatus(self, req):  # noqa: N802
        return ttypes.TGetOperationStatusResp(
            status=SUCCESS, operationState=ttypes.TOperationState.FINISHED_STATE
        )

    def CloseOperation(self, req):  # noqa: N802
        return ttypes.TCloseOperationResp(status=SUCCESS)

    def CancelOperation(self, req):  # noqa: N802
        return ttypes.TCancelOperationResp(status=SUCCESS)


def _result_of(statement: str) -> tuple[str, int]:
    """`SELECT <n>` returns n; anything else reports what a DML statement does: no rows affected."""
    match = _SELECT_NUMBER.match(statement)
    return (match.group(1), int(match.group(1))) if match else ("num_affected_rows", 0)


class FakeDatabricks(LocalServer):
    def __init__(self, token: str, warehouses: dict[str, dict[str, Any]]) -> None:
        self.token = token
        self.warehouses = warehouses
        self.statements: list[ExecutedStatement] = []
        self.rest_requests: list[RestRequest] = []
        self.thrift_authorizations: list[str | None] = []
        # server-side durations: distinct per statement, so a mix-up between queries shows in the cost
        self._durations = itertools.count(1200, 700)
        self._lock = threading.Lock()
        self.handler = _Warehouse(self)
        self.processor = TCLIService.Processor(self.handler)
        super().__init__(_Handler)

    def http_path(self, warehouse_id: str) -> str:
        return f"/sql/1.0/warehouses/{warehouse_id}"

    def connection(self, warehouse_id: str, **extra: Any) -> dict[str, Any]:
        """An Airflow connection (JSON form) to this server. The REST base URL follows the provider's
        own rule (schema + host + port); the Thrift transport takes the full http:// URI."""
        thrift = {
            "http_path": self.http_path(warehouse_id),
            "_connection_uri": f"http://127.0.0.1:{self.port}{self.http_path(warehouse_id)}",
            "enable_telemetry": False,
            "_retry_stop_after_attempts_count": 1,
            "_socket_timeout": 10,
        }
        return workspace_connection(self.port, self.token, {**thrift, **extra})

    def record_statement(self, **fields: Any) -> ExecutedStatement:
        with self._lock:
            executed = ExecutedStatement(
                **fields, start_ms=int(time.time() * 1000), duration_ms=next(self._durations)
            )
            self.statements.append(executed)
            return executed

    def history_entry(self, executed: ExecutedStatement) -> dict[str, Any]:
        """One `res` element of GET /api/2.0/sql/history/queries, as the Query History API returns it."""
        end_ms = executed.start_ms + executed.duration_ms
        return {
            "query_id": executed.query_id,
            "status": "FINISHED",
            "query_text": executed.statement,
            "query_start_time_ms": executed.start_ms,
            "execution_end_time_ms": end_ms,
            "query_end_time_ms": end_ms,
            "duration": executed.duration_ms,
            "warehouse_id": executed.warehouse_id,
            "endpoint_id": executed.warehouse_id,
            "statement_type": executed.statement.split(None, 1)[0].upper(),
            "is_final": True,
            "rows_produced": 1,
            "metrics": {
                "total_time_ms": executed.duration_ms,
                "execution_time_ms": executed.duration_ms - 100,
                "compilation_time_ms": 100,
            },
        }

    def history_requests(self) -> list[RestRequest]:
        return [r for r in self.rest_requests if r.path == "/api/2.0/sql/history/queries"]

    def warehouse_requests(self) -> list[RestRequest]:
        return [r for r in self.rest_requests if r.path.startswith("/api/2.0/sql/warehouses/")]


class _Handler(JsonHandler):
    server: FakeDatabricks
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_body()
        self.server.thrift_authorizations.append(self.headers.get("Authorization"))
        warehouse = re.fullmatch(r"/sql/1\.0/(?:warehouses|endpoints)/([\w-]+)", self.url_path)
        if warehouse is None or warehouse.group(1) not in self.server.warehouses:
            return self.reply_text(404, "no such warehouse")
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self.reply_text(401, "invalid token")
        self.server.handler.current_warehouse.id = warehouse.group(1)
        output = TTransport.TMemoryBuffer()
        self.server.processor.process(
            TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body)),
            TBinaryProtocol.TBinaryProtocol(output),
        )
        self.reply(200, output.getvalue(), "application/x-thrift")

    def do_GET(self) -> None:  # noqa: N802
        path, query = self.url_path, self.query()
        authorization = self.headers.get("Authorization")
        self.server.rest_requests.append(RestRequest("GET", path, query, authorization))
        if authorization != f"Bearer {self.server.token}":
            return self.reply_json(401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."})
        if path == "/api/2.0/sql/history/queries":
            wanted = set(query.get("filter_by.statement_ids", []))
            with self.server._lock:
                found = [s for s in self.server.statements if not wanted or s.query_id in wanted]
            entries = [self.server.history_entry(s) for s in reversed(found)]  # newest first
            return self.reply_json(200, {"res": entries, "has_next_page": False})
        warehouse = re.fullmatch(r"/api/2\.0/sql/warehouses/([\w-]+)", path)
        if warehouse and warehouse.group(1) in self.server.warehouses:
            return self.reply_json(
                200, {"id": warehouse.group(1), **self.server.warehouses[warehouse.group(1)]}
            )
        self.reply_json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{path} not found"})


@contextmanager
def fake_databricks(token: str, warehouses: dict[str, dict[str, Any]]) -> Iterator[FakeDatabricks]:
    with running(FakeDatabricks(token, warehouses)) as server:
        yield server
