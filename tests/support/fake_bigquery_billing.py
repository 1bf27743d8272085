"""A BigQuery REST v2 server on 127.0.0.1 that holds Cloud Billing export tables and runs queries on them.

It answers what `google-cloud-bigquery` calls for a query job (jobs.insert, jobs.get,
jobs.getQueryResults with paging) in the API's resource shapes. Each query is translated from
GoogleSQL to DuckDB with sqlglot (named query parameters bound as typed literals, NUMERIC kept at
BigQuery's 38 digits and 9 decimals) and run on the tables the test loaded: the query the importer
sends is the query that runs. Point the client at it with `BIGQUERY_EMULATOR_HOST`.

It also holds the `region-<location>`.INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT view a test loads
(`load_jobs_timeline`: one row per job and second, the view's columns), queried by the same name.

https://cloud.google.com/bigquery/docs/information-schema-jobs-timeline

https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from tests.support.fake_bigquery import (
    _JOB,
    _JOBS,
    _QUERY_RESULTS,
    BigQueryHandler,
    Request,
    job_reference,
)
from tests.support.json_http import LocalServer, running

# DuckDB result type -> BigQuery schema type
_TYPES = (
    ("DECIMAL", "NUMERIC"),
    ("BIGINT", "INTEGER"),
    ("INTEGER", "INTEGER"),
    ("HUGEINT", "INTEGER"),
    ("DOUBLE", "FLOAT"),
    ("FLOAT", "FLOAT"),
    ("DATE", "DATE"),
    ("TIMESTAMP", "TIMESTAMP"),
    ("BOOLEAN", "BOOLEAN"),
)


# The scalar columns of INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT, as DuckDB types
# (https://cloud.google.com/bigquery/docs/information-schema-jobs-timeline#schema)
TIMELINE_COLUMNS = {
    "period_start": "TIMESTAMPTZ",
    "period_slot_ms": "BIGINT",
    "project_id": "VARCHAR",
    "project_number": "BIGINT",
    "user_email": "VARCHAR",
    "principal_subject": "VARCHAR",
    "job_id": "VARCHAR",
    "job_type": "VARCHAR",
    "statement_type": "VARCHAR",
    "priority": "VARCHAR",
    "parent_job_id": "VARCHAR",
    "job_creation_time": "TIMESTAMPTZ",
    "job_start_time": "TIMESTAMPTZ",
    "job_end_time": "TIMESTAMPTZ",
    "state": "VARCHAR",
    "reservation_id": "VARCHAR",
    "edition": "VARCHAR",
    "total_bytes_billed": "BIGINT",
    "total_bytes_processed": "BIGINT",
    "cache_hit": "BOOLEAN",
    "transaction_id": "VARCHAR",
}


def _bigquery_type(duckdb_type: str) -> str:
    return next((bq for prefix, bq in _TYPES if duckdb_type.upper().startswith(prefix)), "STRING")


def _cell(value: Any, bq_type: str) -> Any:
    if value is None:
        return None
    if bq_type == "TIMESTAMP":
        return str(int(value.timestamp() * 1_000_000))  # formatOptions.useInt64Timestamp
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class FakeBigQueryBilling(LocalServer):
    def __init__(self, page_size: int = 50) -> None:
        self.page_size = page_size
        self.requests: list[Request] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.results: dict[tuple[str, str], tuple[list[dict], list[list[Any]]]] = {}
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        super().__init__(_Handler)

    # ------------------------------------------------------------------ the tests' set-up and checks

    def load_table(self, table: str, records: list[dict[str, Any]], timestamps: tuple[str, ...] = ()) -> None:
        """Create `project.dataset.table` from JSON-like records (nested structs and arrays as in the
        export). Columns named in `timestamps` become TIMESTAMP; `_PARTITIONTIME` is the day of
        `export_time` when there is one (ingestion-time partitioning, as in the export tables)."""
        import pyarrow as pa

        project, dataset, name = table.split(".")
        with self._lock:
            self.db.execute(f"ATTACH IF NOT EXISTS ':memory:' AS \"{project}\"")
            self.db.execute(f'CREATE SCHEMA IF NOT EXISTS "{project}"."{dataset}"')
            arrow = pa.Table.from_pylist(records)
            self.db.register("incoming", arrow)
            casts = ", ".join(f'CAST("{c}" AS TIMESTAMPTZ) AS "{c}"' for c in timestamps)
            replace = f"REPLACE ({casts})" if casts else ""
            partition = ", date_trunc('day', CAST(export_time AS TIMESTAMPTZ)) AS _PARTITIONTIME"
            if "export_time" not in arrow.column_names:
                partition = ""
            self.db.execute(
                f'CREATE OR REPLACE TABLE "{project}"."{dataset}"."{name}" AS '
                f"SELECT * {replace}{partition} FROM incoming"
            )
            self.db.unregister("incoming")

    def load_jobs_timeline(self, location: str, records: list[dict[str, Any]]) -> None:
        """`region-<location>`.INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT from rows with its columns
        (period_start, period_slot_ms, project_id, job_id, job_creation_time, reservation_id, ...).
        The view has every column of TIMELINE_COLUMNS, NULL where the rows leave one out; a column
        the view does not have is an error."""
        import pyarrow as pa

        unknown = sorted({name for record in records for name in record} - set(TIMELINE_COLUMNS))
        if unknown:
            raise ValueError(f"JOBS_TIMELINE_BY_PROJECT has no column {', '.join(unknown)}")
        given = {name for record in records for name in record}
        region = f"region-{location.lower()}"
        columns = ", ".join(
            f'CAST("{name}" AS {type_}) AS "{name}"'
            if name in given
            else f'CAST(NULL AS {type_}) AS "{name}"'
            for name, type_ in TIMELINE_COLUMNS.items()
        )
        with self._lock:
            self.db.execute(f"ATTACH IF NOT EXISTS ':memory:' AS \"{region}\"")
            # every column any row has (from_pylist would take the first row's only)
            incoming = pa.table({name: [record.get(name) for record in records] for name in sorted(given)})
            self.db.register("incoming", incoming)
            # sqlglot reads `region-us`.INFORMATION_SCHEMA.VIEW as the table "INFORMATION_SCHEMA.VIEW"
            self.db.execute(
                f'CREATE OR REPLACE TABLE "{region}"."main"."INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT" AS '
                f"SELECT {columns} FROM incoming"
            )
            self.db.unregister("incoming")

    def inserted(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST" and _JOBS.match(r.path)]

    def result_reads(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and _QUERY_RESULTS.match(r.path)]

    # ------------------------------------------------------------------ running a query

    def _duckdb_sql(self, query: str, parameters: list[dict[str, Any]]) -> str:
        values = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in parameters}
        tree = sqlglot.parse_one(query, read="bigquery")

        def bind(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Parameter):
                name = node.name
                if name not in values:
                    raise ValueError(f"Query parameter '{name}' not found")
                type_, value = values[name]
                if type_ == "TIMESTAMP":
                    return exp.cast(exp.Literal.string(value), exp.DataType.build("TIMESTAMPTZ"))
                if type_ == "DATE":
                    return exp.cast(exp.Literal.string(value), exp.DataType.build("DATE"))
                if type_ in ("INT64", "NUMERIC", "FLOAT64"):
                    return exp.Literal.number(value)
                return exp.Literal.string(value)
            if (
                isinstance(node, exp.DataType)
                and node.this == exp.DataType.Type.DECIMAL
                and not node.expressions
            ):
                return exp.DataType.build("DECIMAL(38, 9)")  # BigQuery NUMERIC
            return node

        return tree.transform(bind).sql(dialect="duckdb")

    def insert(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reference = job_reference(project, body, len(self.jobs) + 1)
        configuration = dict(body.get("configuration") or {})
        configuration["jobType"] = "QUERY"
        query = configuration.get("query", {})
        resource = {
            "kind": "bigquery#job",
            "id": f"{project}:{reference['location']}.{reference['jobId']}",
            "jobReference": reference,
            "configuration": configuration,
            "status": {"state": "DONE"},
            "statistics": {"creationTime": "1", "startTime": "1", "endTime": "2"},
        }
        key = (project, reference["jobId"])
        try:
            sql = self._duckdb_sql(query.get("query", ""), query.get("queryParameters", []))
            with self._lock:
                cursor = self.db.execute(sql)
                description = cursor.description
                rows = cursor.fetchall()
        except Exception as error:  # an invalid query fails the job, as BigQuery does
            failure = {"reason": "invalidQuery", "location": "query", "message": str(error)}
            resource["status"] = {"state": "DONE", "errorResult": failure, "errors": [failure]}
            self.jobs[key] = resource
            return 200, resource
        schema = [{"name": d[0], "type": _bigquery_type(str(d[1])), "mode": "NULLABLE"} for d in description]
        self.results[key] = (
            schema,
            [[_cell(v, f["type"]) for v, f in zip(row, schema, strict=True)] for row in rows],
        )
        processed = str(1_000_000 * max(1, len(rows)))
        resource["statistics"]["totalBytesProcessed"] = processed
        resource["statistics"]["query"] = {
            "totalBytesProcessed": processed,
            "totalBytesBilled": processed,
            "cacheHit": False,
            "statementType": "SELECT",
        }
        self.jobs[key] = resource
        return 200, resource

    def query_results(self, project: str, job_id: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        job = self.jobs.get((project, job_id))
        if job is None:
            return 404, _error(404, "notFound", f"Not found: Job {project}:{job_id}")
        failure = job["status"].get("errorResult")
        if failure:
            return 400, _error(400, failure["reason"], failure["message"])
        schema, rows = self.results[(project, job_id)]
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("maxResults", self.page_size)), self.page_size)
        page = rows[start : start + size]
        payload: dict[str, Any] = {
            "kind": "bigquery#getQueryResults",
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "schema": {"fields": schema},
            "totalRows": str(len(rows)),
        }
        if page:  # BigQuery leaves `rows` out of a page without rows (maxResults=0 asks for none)
            payload["rows"] = [{"f": [{"v": value} for value in row]} for row in page]
        if start + size < len(rows) and size > 0:
            payload["pageToken"] = str(start + size)
        return 200, payload


def _error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": reason}]}}


class _Handler(BigQueryHandler):
    server: FakeBigQueryBilling

    def do_POST(self) -> None:  # noqa: N802
        path, _query, body = self._record()
        if match := _JOBS.match(path):
            self._send(*self.server.insert(match["project"], body or {}))
        else:
            self._send(404, _error(404, "notFound", f"Not found: {path}"))

    def do_GET(self) -> None:  # noqa: N802
        path, query, _body = self._record()
        if match := _JOB.match(path):
            job = self.server.jobs.get((match["project"], match["job_id"]))
            if job is None:
                return self._send(404, _error(404, "notFound", f"Not found: Job {match['job_id']}"))
            self._send(200, job)
        elif match := _QUERY_RESULTS.match(path):
            self._send(*self.server.query_results(match["project"], match["job_id"], query))
        else:
            self._send(404, _error(404, "notFound", f"Not found: {path}"))


@contextmanager
def fake_bigquery_billing(page_size: int = 50) -> Iterator[FakeBigQueryBilling]:
    server = FakeBigQueryBilling(page_size)
    try:
        with running(server):
            yield server
    finally:
        server.db.close()
