"""The Snowflake SQL API v2 (POST /api/v2/statements, GET /api/v2/statements/{handle}) on 127.0.0.1.

`SnowflakeSqlApiHook` builds its URL as `https://{account}.snowflakecomputing.com/api/v2/...`, with no
port and always https. So this server is also the HTTPS proxy of the process under test
(HTTPS_PROXY): it answers CONNECT, terminates TLS with a self-signed certificate for the account's
host name (trusted through REQUESTS_CA_BUNDLE), and serves the API inside the tunnel. Nothing is
resolved or forwarded: every CONNECT is recorded, so a test can check nothing else was reached.

Statements are not run. The server keeps each one as Snowflake's query history would, with an
execution time the test chooses, and answers the SQL the cost provider and the OpenLineage provider
send about them: SELECT ... FROM TABLE(SNOWFLAKE.INFORMATION_SCHEMA.QUERY_HISTORY(...)) WHERE QUERY_ID
IN (...) and SHOW WAREHOUSES LIKE '...'. Shapes follow
https://docs.snowflake.com/en/developer-guide/sql-api/reference.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO
from socketserver import _SocketWriter  # type: ignore[attr-defined]
from typing import Any

from tests.support.fake_snowflake import Certificate
from tests.support.json_http import JsonHandler, LocalServer, running

ASYNC_IN_PROGRESS = {
    "code": "333334",
    "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring "
    "and management.",
}
HISTORY_COLUMNS = (
    "QUERY_ID",
    "QUERY_TEXT",
    "QUERY_TYPE",
    "QUERY_TAG",
    "WAREHOUSE_NAME",
    "WAREHOUSE_SIZE",
    "WAREHOUSE_TYPE",
    "EXECUTION_STATUS",
    "ERROR_CODE",
    "ERROR_MESSAGE",
    "START_TIME",
    "END_TIME",
    "TOTAL_ELAPSED_TIME",
    "EXECUTION_TIME",
)
SHOW_WAREHOUSES_COLUMNS = (
    "name", "state", "type", "size", "min_cluster_count", "max_cluster_count", "started_clusters",
    "running", "queued", "is_default", "is_current", "auto_suspend", "auto_resume", "available",
    "provisioning", "quiescing", "other", "created_on", "resumed_on", "updated_on", "owner", "comment",
    "enable_query_acceleration", "query_acceleration_max_scale_factor", "resource_monitor", "actives",
    "pendings", "failed", "suspended", "uuid", "scaling_policy", "budget", "owner_role_type",
    "resource_constraint",
)  # fmt: skip
_HISTORY_SELECT = re.compile(
    r"\A\s*SELECT\s+(?P<items>.+?)\s+FROM\s+TABLE\(\s*(?:SNOWFLAKE\.)?INFORMATION_SCHEMA\.QUERY_HISTORY"
    r"\((?P<arguments>[^)]*(?:\([^)]*\)[^)]*)*)\)\s*\)\s*WHERE\s+QUERY_ID\s*"
    r"(?:IN\s*\((?P<ids>[^)]*)\)|=\s*(?P<id>'[^']*'))\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL,
)
_DATE_PART_MS = re.compile(
    r"\ADATE_PART\(\s*EPOCH_MILLISECOND\s*,\s*(?P<column>\w+)\s*\)\s+AS\s+(?P<alias>\w+)\Z", re.IGNORECASE
)
_RANGE_START = re.compile(
    r"END_TIME_RANGE_START\s*=>\s*TO_TIMESTAMP_LTZ\(\s*(\d+)\s*,\s*3\s*\)", re.IGNORECASE
)
_SHOW_WAREHOUSES = re.compile(
    r"\A\s*SHOW\s+WAREHOUSES(?:\s+LIKE\s+'(?P<pattern>(?:[^']|'')*)')?\s*;?\s*\Z", re.I
)
_handles = itertools.count(1)


def new_handle() -> str:
    """A handle shaped like Snowflake's query ids."""
    return f"01bd{secrets.token_hex(2)}-0000-{next(_handles):04x}-0000-{secrets.token_hex(6)}"


class SqlError(Exception):
    def __init__(self, message: str, code: str = "001003", sql_state: str = "42000") -> None:
        super().__init__(message)
        self.code, self.sql_state = code, sql_state


@dataclass
class Query:
    """One statement as Snowflake's query history keeps it."""

    handle: str
    text: str
    query_type: str
    query_tag: str
    warehouse: str | None
    start_ms: int
    execution_ms: int
    children: list[str] = field(default_factory=list)
    columns: tuple[str, ...] = ("status",)
    rows: list[list[Any]] = field(default_factory=lambda: [["Statement executed successfully."]])
    polls_left: int = 0

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.execution_ms


@dataclass(frozen=True)
class Recorded:
    method: str
    host: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


def _seconds(ms: int) -> str:
    """A TIMESTAMP_LTZ as the SQL API writes it in JSON: epoch seconds with nine decimals."""
    return f"{ms // 1000}.{ms % 1000:03d}000000"


def _split_statements(sql: str) -> list[str]:
    from snowflake.connector.util_text import split_statements

    return [text for text, _ in split_statements(StringIO(sql), remove_comments=False) if text.strip()]


def _split_items(items: str) -> list[str]:
    """Select items, split on the commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in items:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


class FakeSnowflakeSqlApi(LocalServer):
    def __init__(
        self,
        certificate: Certificate,
        account: str,
        token: str,
        warehouses: dict[str, str],
        execution_ms: Callable[[str], int],
        polls_before_done: int = 1,
    ) -> None:
        """`warehouses` maps name to size as SHOW WAREHOUSES writes it ('Medium'); `execution_ms`
        gives each statement's execution time from its text."""
        self.host = f"{account}.snowflakecomputing.com"
        self.token = token
        self.warehouses = warehouses
        self.execution_ms = execution_ms
        self.polls_before_done = polls_before_done
        self.connects: list[str] = []
        self.requests: list[Recorded] = []
        self.queries: dict[str, Query] = {}
        self.lock = threading.Lock()
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(str(certificate.cert_file), str(certificate.key_file))
        super().__init__(_Handler)

    @property
    def proxy_url(self) -> str:
        return self.url

    def posted(self) -> list[dict[str, Any]]:
        """The bodies of every POST /api/v2/statements, in order."""
        return [r.body for r in self.requests if r.method == "POST" and r.path == "/api/v2/statements"]

    # ------------------------------------------------------------------ statements

    def submit(self, body: dict[str, Any]) -> Query:
        sql = body["statement"]
        parameters = {k.upper(): v for k, v in (body.get("parameters") or {}).items()}
        query_tag = str(parameters.get("QUERY_TAG") or "")
        warehouse = body.get("warehouse")
        now = int(time.time() * 1000)
        if (history := _HISTORY_SELECT.match(sql)) is not None:
            columns, rows = self.history(history)
            return self._keep(
                Query(new_handle(), sql, "SELECT", query_tag, warehouse, now, 12, [], columns, rows)
            )
        if (show := _SHOW_WAREHOUSES.match(sql)) is not None:
            columns, rows = self.show_warehouses(show.group("pattern"))
            return self._keep(Query(new_handle(), sql, "SHOW", query_tag, None, now, 0, [], columns, rows))
        statements = _split_statements(sql)
        expected = int(parameters.get("MULTI_STATEMENT_COUNT", 1))
        if expected != 0 and expected != len(statements):
            raise SqlError(
                f"Actual statement count {len(statements)} did not match the desired statement count {expected}.",
                code="000008",
                sql_state="0A000",
            )
        children = [
            self._keep(
                Query(
                    new_handle(),
                    text,
                    text.split()[0].upper(),
                    query_tag,
                    warehouse,
                    now,
                    self.execution_ms(text),
                )
            )
            for text in statements
        ]
        if len(children) == 1:
            children[0].polls_left = self.polls_before_done
            return children[0]
        parent = Query(
            new_handle(),
            sql,
            "MULTI_STATEMENT",
            query_tag,
            warehouse,
            now,
            sum(child.execution_ms for child in children),
            [child.handle for child in children],
            rows=[["Multiple statements executed successfully."]],
            polls_left=self.polls_before_done,
        )
        return self._keep(parent)

    def _keep(self, query: Query) -> Query:
        with self.lock:
            self.queries[query.handle] = query
        return query

    def history(self, match: re.Match) -> tuple[tuple[str, ...], list[list[Any]]]:
        """SELECT ... FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY(...)) WHERE QUERY_ID IN (...)."""
        ids = re.findall(r"'([^']*)'", match.group("ids") or match.group("id"))
        since = _RANGE_START.search(match.group("arguments"))
        since_ms = int(since.group(1)) if since else 0
        columns, getters = [], []
        for item in _split_items(match.group("items")):
            if (date_part := _DATE_PART_MS.match(item)) is not None:
                column = date_part.group("column").upper()
                if column not in ("START_TIME", "END_TIME"):
                    raise SqlError(f"SQL compilation error: invalid argument {column} for DATE_PART")
                columns.append(date_part.group("alias").upper())
                getters.append(lambda q, c=column: str(q.start_ms if c == "START_TIME" else q.end_ms))
            elif item.upper() in HISTORY_COLUMNS:
                columns.append(item.upper())
                getters.append(lambda q, c=item.upper(): self._history_value(q, c))
            else:
                raise SqlError(
                    f"SQL compilation error: error line 1 at position 7 invalid identifier '{item}'"
                )
        with self.lock:
            found = [self.queries[i] for i in ids if i in self.queries and self.queries[i].end_ms >= since_ms]
        return tuple(columns), [[get(query) for get in getters] for query in found]

    def _history_value(self, query: Query, column: str) -> Any:
        size = self.warehouses.get((query.warehouse or "").upper()) if query.query_type != "SHOW" else None
        values = {
            "QUERY_ID": query.handle,
            "QUERY_TEXT": query.text,
            "QUERY_TYPE": query.query_type,
            "QUERY_TAG": query.query_tag,
            "WAREHOUSE_NAME": query.warehouse.upper() if query.warehouse else None,
            "WAREHOUSE_SIZE": size,
            "WAREHOUSE_TYPE": "STANDARD" if size else None,
            "EXECUTION_STATUS": "SUCCESS",
            "ERROR_CODE": None,
            "ERROR_MESSAGE": None,
            "START_TIME": _seconds(query.start_ms),
            "END_TIME": _seconds(query.end_ms),
            "TOTAL_ELAPSED_TIME": str(query.execution_ms + 25),
            "EXECUTION_TIME": str(query.execution_ms),
        }
        return values[column]

    def show_warehouses(self, pattern: str | None) -> tuple[tuple[str, ...], list[list[Any]]]:
        like = (pattern or "%").replace("''", "'").upper()
        glob = "".join("*" if c == "%" else "?" if c == "_" else c for c in like)
        rows = []
        for name, size in sorted(self.warehouses.items()):
            if fnmatch.fnmatchcase(name.upper(), glob):
                row = dict.fromkeys(SHOW_WAREHOUSES_COLUMNS, "0")
                row.update(name=name, state="SUSPENDED", type="STANDARD", size=size, owner="SYSADMIN")
                row.update(resource_constraint="STANDARD_GEN_1", is_default="N", is_current="N", comment="")
                rows.append([row[c] for c in SHOW_WAREHOUSES_COLUMNS])
        return SHOW_WAREHOUSES_COLUMNS, rows


def result_set(query: Query, request_id: str) -> dict[str, Any]:
    """A finished statement's ResultSet."""
    document: dict[str, Any] = {
        "resultSetMetaData": {
            "numRows": len(query.rows),
            "format": "jsonv2",
            "partitionInfo": [{"rowCount": len(query.rows), "uncompressedSize": len(json.dumps(query.rows))}],
            "rowType": [
                {
                    "name": c,
                    "database": "",
                    "schema": "",
                    "table": "",
                    "nullable": True,
                    "type": "text",
                    "byteLength": None,
                    "length": None,
                    "scale": None,
                    "precision": None,
                    "collation": None,
                }
                for c in query.columns
            ],  # fmt: skip
        },
        "data": query.rows,
        "code": "090001",
        "statementStatusUrl": f"/api/v2/statements/{query.handle}?requestId={request_id}",
        "requestId": request_id,
        "sqlState": "00000",
        "statementHandle": query.handle,
        "message": "Statement executed successfully.",
        "createdOn": query.start_ms,
    }
    if query.children:
        document["statementHandles"] = query.children
    return document


class _Handler(JsonHandler):
    server: FakeSnowflakeSqlApi
    protocol_version = "HTTP/1.1"
    tunnel_host = ""

    def do_CONNECT(self) -> None:  # noqa: N802
        """Become the tunnel's far end: TLS for the requested host, then the API inside it."""
        self.server.connects.append(self.path)
        self.reply(200, message="Connection Established")
        self.wfile.flush()
        connection = self.server.tls.wrap_socket(self.connection, server_side=True)
        self.connection = connection
        self.rfile = connection.makefile("rb", self.rbufsize)
        self.wfile = _SocketWriter(connection)
        self.tunnel_host = self.path.rsplit(":", 1)[0]
        self.close_connection = False

    def _record(self, body: Any) -> tuple[str, dict[str, list[str]]]:
        path, query = self.url_path, self.query()
        self.server.requests.append(
            Recorded(self.command, self.tunnel_host, path, query, dict(self.headers.items()), body)
        )
        return path, query

    def _authorized(self) -> bool:
        if self.tunnel_host != self.server.host:
            self.reply_json(404, {"code": "390189", "message": f"unknown host {self.tunnel_host!r}"})
            return False
        if (
            self.headers.get("Authorization") != f"Bearer {self.server.token}"
            or self.headers.get("X-Snowflake-Authorization-Token-Type") != "PROGRAMMATIC_ACCESS_TOKEN"
        ):
            self.reply_json(401, {"code": "390303", "message": "Invalid OAuth access token. "})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        path, query = self._record(body)
        if not self._authorized():
            return
        request_id = (query.get("requestId") or [""])[0]
        if path != "/api/v2/statements" or not isinstance(body, dict) or not body.get("statement"):
            self.reply_json(400, {"code": "391902", "message": "Invalid request: statement is required."})
            return
        try:
            statement = self.server.submit(body)
        except SqlError as error:
            self.reply_json(422, {"code": error.code, "message": str(error), "sqlState": error.sql_state,
                              "statementHandle": new_handle()})  # fmt: skip
            return
        if (query.get("async") or ["false"])[0].lower() == "true":
            self.reply_json(202, {**ASYNC_IN_PROGRESS, "statementHandle": statement.handle,
                              "statementStatusUrl": f"/api/v2/statements/{statement.handle}"})  # fmt: skip
            return
        statement.polls_left = 0
        self.reply_json(200, result_set(statement, request_id))

    def do_GET(self) -> None:  # noqa: N802
        path, query = self._record(None)
        if not self._authorized():
            return
        handle = path.rsplit("/", 1)[-1]
        with self.server.lock:
            statement = self.server.queries.get(handle)
            if statement is not None and statement.polls_left > 0:
                statement.polls_left -= 1
                self.reply_json(202, {**ASYNC_IN_PROGRESS, "statementHandle": handle,
                                  "statementStatusUrl": f"/api/v2/statements/{handle}"})  # fmt: skip
                return
        if statement is None:
            self.reply_json(
                404, {"code": "000709", "message": f"Statement {handle} not found", "sqlState": "02000"}
            )
            return
        self.reply_json(200, result_set(statement, (query.get("requestId") or [""])[0]))


@contextmanager
def fake_sql_api(**options: Any) -> Iterator[FakeSnowflakeSqlApi]:
    with running(FakeSnowflakeSqlApi(**options), name="fake snowflake sql api") as server:
        yield server
