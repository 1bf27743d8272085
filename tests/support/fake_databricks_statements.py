"""The Databricks SQL Statement Execution API on 127.0.0.1, answering from DuckDB.

POST /api/2.0/sql/statements runs the statement it is sent: Databricks SQL translated to DuckDB by
sqlglot, the `system` catalog renamed (DuckDB reserves the name) and the named parameters bound. The
answers have the API's shapes: `status.state`, a `manifest` with the schema and chunks, and `result`
with `data_array` (every value as JSON text, or null) and `next_chunk_index`; further chunks come
from GET .../result/chunks/{n}. A statement can be held PENDING for a number of polls, a SQL error is
a FAILED state with `status.error`, and a bad token or warehouse an HTTP error with `error_code`.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.support.fake_databricks_jobs import workspace_connection
from tests.support.json_http import JsonHandler, LocalServer, SentRequest, running

SYSTEM_CATALOG = "databricks_system"  # DuckDB reserves `system`

SCHEMA_SQL = f"""
ATTACH ':memory:' AS {SYSTEM_CATALOG};
CREATE SCHEMA {SYSTEM_CATALOG}.billing;
CREATE TABLE {SYSTEM_CATALOG}.billing.usage (
  record_id VARCHAR, account_id VARCHAR, workspace_id VARCHAR, sku_name VARCHAR, cloud VARCHAR,
  usage_start_time TIMESTAMPTZ, usage_end_time TIMESTAMPTZ, usage_date DATE,
  custom_tags MAP(VARCHAR, VARCHAR), usage_unit VARCHAR, usage_quantity DECIMAL(38, 18),
  usage_metadata STRUCT(cluster_id VARCHAR, job_id VARCHAR, warehouse_id VARCHAR, job_run_id VARCHAR,
    notebook_id VARCHAR, dlt_pipeline_id VARCHAR, dlt_update_id VARCHAR),
  record_type VARCHAR, billing_origin_product VARCHAR);
CREATE TABLE {SYSTEM_CATALOG}.billing.list_prices (
  price_start_time TIMESTAMPTZ, price_end_time TIMESTAMPTZ, account_id VARCHAR, sku_name VARCHAR,
  cloud VARCHAR, currency_code VARCHAR, usage_unit VARCHAR, pricing STRUCT("default" DECIMAL(30, 18)));
"""


def _sql(value: Any) -> str:
    """A DuckDB literal: NULL, a MAP of a dict, else quoted text."""
    if value is None:
        return "NULL"
    if isinstance(value, dict):
        return "MAP {" + ", ".join(f"'{k}': '{v}'" for k, v in value.items()) + "}::MAP(VARCHAR, VARCHAR)"
    return f"'{value}'"


@dataclass
class _Statement:
    statement_id: str
    warehouse_id: str
    polls_left: int
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    cancelled: bool = False


def _text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, Decimal):
        return "DECIMAL"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"


def _typed(parameter: dict[str, Any]) -> Any:
    value = parameter.get("value")
    if value is not None and parameter.get("type") == "DATE":
        return dt.date.fromisoformat(value)
    return value


def to_duckdb(statement: str) -> str:
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(statement, read="databricks")
    for table in tree.find_all(exp.Table):
        if table.catalog == "system":
            table.set("catalog", exp.to_identifier(SYSTEM_CATALOG))
    return tree.sql(dialect="duckdb")


class FakeStatementApi(LocalServer):
    def __init__(self, token: str, warehouses: set[str], rows_per_chunk: int = 1000, pending_polls: int = 0):
        import duckdb

        self.token = token
        self.warehouses = warehouses
        self.rows_per_chunk = rows_per_chunk
        self.pending_polls = pending_polls
        self.requests: list[SentRequest] = []
        self.statements: dict[str, _Statement] = {}
        self.lock = threading.Lock()
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self.db.execute(SCHEMA_SQL)
        super().__init__(_Handler)

    def connection(self, warehouse_id: str | None = None) -> dict[str, Any]:
        """An Airflow connection (JSON form) to this workspace: schema http, host, port, token."""
        extra = {"http_path": f"/sql/1.0/warehouses/{warehouse_id}"} if warehouse_id else {}
        return workspace_connection(self.port, self.token, extra)

    def execute(self, sql: str, parameters: list[dict[str, Any]] | None = None) -> None:
        """Set up the tables (DuckDB SQL, the catalog as SYSTEM_CATALOG)."""
        with self.lock:
            self.db.execute(sql, parameters or [])

    def insert(self, account: str, workspace: str, usage: list[tuple], prices: list[tuple]) -> None:
        """Rows of `list_prices`: (sku, cloud, unit, price, from day, until day or None), in USD; and of
        `usage`, one hour each: (day, hour, sku, DBU, cluster, job, warehouse, job run, custom tags,
        record type[, pipeline, update])."""
        for sku, cloud, unit, price, since, until in prices:
            self.execute(
                f"INSERT INTO {SYSTEM_CATALOG}.billing.list_prices VALUES ('{since} 00:00+00', "
                f"{_sql(until and until + ' 00:00+00')}, '{account}', '{sku}', '{cloud}', 'USD', '{unit}', "
                f"{{'default': {price}}})"
            )
        for n, (day, hour, sku, quantity, cluster, job, warehouse, run, tags, kind, *dlt) in enumerate(usage):
            pipeline, update = dlt or (None, None)
            start = f"{day} {hour:02d}:00+00"
            self.execute(
                f"INSERT INTO {SYSTEM_CATALOG}.billing.usage VALUES ('r{n}-{len(usage)}', '{account}', "
                f"'{workspace}', '{sku}', 'AWS', '{start}', TIMESTAMPTZ '{start}' + INTERVAL 1 HOUR, '{day}', "
                f"{_sql(tags)}, 'DBU', {quantity}, {{'cluster_id': {_sql(cluster)}, 'job_id': {_sql(job)}, "
                f"'warehouse_id': {_sql(warehouse)}, 'job_run_id': {_sql(run)}, 'notebook_id': NULL, "
                f"'dlt_pipeline_id': {_sql(pipeline)}, 'dlt_update_id': {_sql(update)}}}, '{kind}', "
                f"{_sql('DLT' if pipeline else 'JOBS')})"
            )

    def run(self, body: dict[str, Any]) -> _Statement:
        import duckdb

        statement = _Statement(str(uuid.uuid4()), body["warehouse_id"], self.pending_polls)
        values = {p["name"]: _typed(p) for p in body.get("parameters") or []}
        try:
            sql = to_duckdb(body["statement"])
            with self.lock:
                cursor = self.db.cursor()
                result = cursor.execute(sql, values)
                names = [d[0] for d in result.description]
                rows = result.fetchall()
        except duckdb.CatalogException as error:  # as Databricks words a missing table
            statement.error = {
                "error_code": "BAD_REQUEST",
                "message": f"[TABLE_OR_VIEW_NOT_FOUND] The table or view cannot be found. ({error})",
            }
        except Exception as error:  # what the warehouse reports as the statement's failure
            statement.error = {"error_code": "BAD_REQUEST", "message": str(error)}
        else:
            first = rows[0] if rows else [None] * len(names)
            statement.columns = [
                {"name": name, "type_name": _type_name(value), "type_text": _type_name(value), "position": i}
                for i, (name, value) in enumerate(zip(names, first, strict=True))
            ]
            statement.rows = [[_text(v) for v in row] for row in rows]
        self.statements[statement.statement_id] = statement
        return statement

    def chunk(self, statement: _Statement, index: int) -> dict[str, Any]:
        size = self.rows_per_chunk
        data = statement.rows[index * size : (index + 1) * size]
        chunk = {"chunk_index": index, "row_offset": index * size, "row_count": len(data), "data_array": data}
        if (index + 1) * size < len(statement.rows):
            chunk["next_chunk_index"] = index + 1
            chunk["next_chunk_internal_link"] = (
                f"/api/2.0/sql/statements/{statement.statement_id}/result/chunks/{index + 1}"
            )
        return chunk

    def answer(self, statement: _Statement) -> dict[str, Any]:
        if statement.cancelled:
            return {"statement_id": statement.statement_id, "status": {"state": "CANCELED"}}
        if statement.polls_left > 0:
            return {"statement_id": statement.statement_id, "status": {"state": "PENDING"}}
        if statement.error is not None:
            return {
                "statement_id": statement.statement_id,
                "status": {"state": "FAILED", "error": statement.error},
            }
        size = self.rows_per_chunk
        count = max(1, -(-len(statement.rows) // size))
        return {
            "statement_id": statement.statement_id,
            "status": {"state": "SUCCEEDED"},
            "manifest": {
                "format": "JSON_ARRAY",
                "schema": {"column_count": len(statement.columns), "columns": statement.columns},
                "total_chunk_count": count,
                "chunks": [
                    {
                        "chunk_index": i,
                        "row_offset": i * size,
                        "row_count": len(statement.rows[i * size : (i + 1) * size]),
                    }
                    for i in range(count)
                ],
                "total_row_count": len(statement.rows),
                "truncated": False,
            },
            "result": self.chunk(statement, 0),
        }


class _Handler(JsonHandler):
    server: FakeStatementApi
    protocol_version = "HTTP/1.1"

    def _authorized(self, body: Any) -> bool:
        authorization = self.headers.get("Authorization")
        self.server.requests.append(SentRequest(self.command, self.path, body, authorization))
        if authorization != f"Bearer {self.server.token}":
            self.reply_json(403, {"error_code": "403", "message": "Invalid access token."})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        if not self._authorized(body):
            return
        parts = self.path.strip("/").split("/")
        if self.path == "/api/2.0/sql/statements":
            if body.get("warehouse_id") not in self.server.warehouses:
                return self.reply_json(
                    404,
                    {
                        "error_code": "RESOURCE_DOES_NOT_EXIST",
                        "message": f"SQL warehouse {body.get('warehouse_id')} does not exist.",
                    },
                )
            return self.reply_json(200, self.server.answer(self.server.run(body)))
        if len(parts) == 6 and parts[5] == "cancel" and parts[4] in self.server.statements:
            self.server.statements[parts[4]].cancelled = True
            return self.reply_json(200, {})
        self.reply_json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {self.path}"})

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized(None):
            return
        parts = self.path.strip("/").split("/")
        statement = self.server.statements.get(parts[4]) if len(parts) >= 5 else None
        if statement is None:
            return self.reply_json(
                404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such statement"}
            )
        if len(parts) == 5:
            statement.polls_left -= 1
            return self.reply_json(200, self.server.answer(statement))
        if len(parts) == 8 and parts[5:7] == ["result", "chunks"]:
            return self.reply_json(200, self.server.chunk(statement, int(parts[7])))
        self.reply_json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {self.path}"})


@contextmanager
def fake_statement_api(
    token: str, warehouses: set[str], rows_per_chunk: int = 1000, pending_polls: int = 0
) -> Iterator[FakeStatementApi]:
    server = FakeStatementApi(token, warehouses, rows_per_chunk, pending_polls)
    try:
        with running(server):
            yield server
    finally:
        server.db.close()
