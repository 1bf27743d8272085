"""A Trino coordinator on 127.0.0.1 speaking the client REST protocol.

POST /v1/statement starts a query; the client follows `nextUri` (queued -> executing pages) until the
page without one, whose `stats` are final (state FINISHED, cpuTimeMillis, wallTimeMillis,
physicalInputBytes, ...). DELETE on a `nextUri` cancels the query. GET /v1/query/{queryId} returns the
query's QueryInfo with `queryStats` in Trino's own formats (airlift Duration and DataSize strings).
Every request's headers and every statement are recorded.

Statements: `SELECT <n>` returns one row [n] over two pages, so the query is still running when
`execute()` returns; `INSERT ...` reports an update count; anything else returns no rows.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, running

_SELECT_NUMBER = re.compile(r"^\s*SELECT\s+(\d+)\b", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)


@dataclass
class FakeQuery:
    query_id: str
    statement: str
    headers: dict[str, str]
    cpu_time_ms: int
    wall_time_ms: int
    elapsed_time_ms: int
    physical_input_bytes: int
    state: str = "QUEUED"
    pages_served: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def client_tags(self) -> list[str]:
        value = self.headers.get("X-Trino-Client-Tags", "")
        return [tag for tag in value.split(",") if tag]

    def stats(self, final: bool) -> dict[str, Any]:
        """StatementStats as the coordinator reports it; before the end only part of the work is done."""
        return {
            "state": self.state,
            "queued": self.state == "QUEUED",
            "scheduled": self.state != "QUEUED",
            "nodes": 1,
            "totalSplits": 4,
            "queuedSplits": 0,
            "runningSplits": 0 if final else 2,
            "completedSplits": 4 if final else 2,
            "cpuTimeMillis": self.cpu_time_ms if final else self.cpu_time_ms // 3,
            "wallTimeMillis": self.wall_time_ms if final else self.wall_time_ms // 3,
            "queuedTimeMillis": 2,
            "elapsedTimeMillis": self.elapsed_time_ms if final else self.elapsed_time_ms // 3,
            "processedRows": 1000 if final else 300,
            "processedBytes": self.physical_input_bytes if final else self.physical_input_bytes // 3,
            "physicalInputBytes": self.physical_input_bytes if final else self.physical_input_bytes // 3,
            "physicalWrittenBytes": 0,
            "peakMemoryBytes": 1 << 20,
            "spilledBytes": 0,
        }


def airlift_duration(milliseconds: int) -> str:
    """io.airlift.units.Duration.toString() of convertToMostSuccinctTimeUnit()."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds >= size:
            return f"{milliseconds / size:.2f}{unit}"
    return f"{milliseconds:.2f}ms"


def airlift_data_size(num_bytes: int) -> str:
    """io.airlift.units.DataSize.toString() of succinctBytes(): binary units, two decimals."""
    unit, size = "B", 1
    for candidate, candidate_size in (("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40)):
        if num_bytes >= candidate_size:
            unit, size = candidate, candidate_size
    value = num_bytes / size
    return f"{int(value)}{unit}" if value == int(value) else f"{value:.2f}{unit}"


class FakeTrino(LocalServer):
    def __init__(self) -> None:
        self.queries: dict[str, FakeQuery] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(_Handler)

    def start_query(self, statement: str, headers: dict[str, str]) -> FakeQuery:
        with self._lock:
            number = next(self._numbers)
            # usage is distinct per query and exact in Trino's Duration/DataSize strings
            query = FakeQuery(
                query_id=f"20260102_101500_{number:05d}_fake1",
                statement=statement,
                headers=headers,
                cpu_time_ms=1500 * number,
                wall_time_ms=2000 * number,
                elapsed_time_ms=750 * number,
                physical_input_bytes=(3 * number) << 20,
            )
            self.queries[query.query_id] = query
            return query

    def statements(self) -> list[FakeQuery]:
        return list(self.queries.values())

    def query_info(self, query: FakeQuery) -> dict[str, Any]:
        """GET /v1/query/{queryId}: the QueryInfo document (the parts a client reads)."""
        return {
            "queryId": query.query_id,
            "state": query.state,
            "query": query.statement,
            "session": {
                "user": query.headers.get("X-Trino-User"),
                "source": query.headers.get("X-Trino-Source"),
                "clientTags": query.client_tags,
            },
            "self": f"{self.url}/v1/query/{query.query_id}",
            "queryStats": {
                "createTime": "2026-01-02T10:15:00.000Z",
                "elapsedTime": airlift_duration(query.elapsed_time_ms),
                "queuedTime": "2.00ms",
                "totalScheduledTime": airlift_duration(query.wall_time_ms),
                "totalCpuTime": airlift_duration(query.cpu_time_ms),
                "physicalInputDataSize": airlift_data_size(query.physical_input_bytes),
                "physicalInputPositions": 1000,
            },
        }

    def page(self, query: FakeQuery) -> dict[str, Any]:
        """The next result page of the query; the one without `nextUri` is the last."""
        query.pages_served += 1
        base = {
            "id": query.query_id,
            "infoUri": f"{self.url}/ui/query.html?{query.query_id}",
            "warnings": [],
        }
        if query.pages_served == 1:
            return {**base, "nextUri": self._next_uri(query), "stats": query.stats(final=False)}
        select = _SELECT_NUMBER.match(query.statement)
        if select and query.pages_served == 2:
            query.state = "RUNNING"
            return {
                **base,
                "nextUri": self._next_uri(query),
                "columns": [
                    {
                        "name": "_col0",
                        "type": "integer",
                        "typeSignature": {"rawType": "integer", "arguments": []},
                    }
                ],
                "data": [[int(select.group(1))]],
                "stats": query.stats(final=False),
            }
        query.state = "FINISHED"
        page = {**base, "stats": query.stats(final=True)}
        if _INSERT.match(query.statement):
            page.update(
                columns=[
                    {
                        "name": "rows",
                        "type": "bigint",
                        "typeSignature": {"rawType": "bigint", "arguments": []},
                    }
                ],
                data=[[2]],
                updateType="INSERT",
                updateCount=2,
            )
        return page

    def _next_uri(self, query: FakeQuery) -> str:
        return f"{self.url}/v1/statement/executing/{query.query_id}/token/{query.pages_served}"


class _Handler(JsonHandler):
    server: FakeTrino
    protocol_version = "HTTP/1.1"

    def _record(self) -> dict[str, str]:
        headers = dict(self.headers.items())
        self.server.requests.append((self.command, self.path, headers))
        return headers

    def do_POST(self) -> None:  # noqa: N802
        headers = self._record()
        body = self.read_body().decode()
        if self.path != "/v1/statement":
            return self.reply_json(404, {"message": "not found"})
        if not headers.get("X-Trino-User"):
            return self.reply_json(401, {"message": "X-Trino-User must be set"})
        query = self.server.start_query(body, headers)
        self.reply_json(200, self.server.page(query))

    def do_GET(self) -> None:  # noqa: N802
        headers = self._record()
        executing = re.fullmatch(r"/v1/statement/executing/([\w]+)/token/\d+", self.path)
        info = re.fullmatch(r"/v1/query/([\w]+)", self.path)
        query_id = (executing or info).group(1) if (executing or info) else None
        query = self.server.queries.get(query_id or "")
        if query is None:
            return self.reply_json(404, {"message": f"{self.path} not found"})
        query.requests.append(("GET", self.path))
        if info:
            if not headers.get("X-Trino-User"):
                return self.reply_json(401, {"message": "X-Trino-User must be set"})
            return self.reply_json(200, self.server.query_info(query))
        self.reply_json(200, self.server.page(query))

    def do_DELETE(self) -> None:  # noqa: N802
        self._record()
        executing = re.fullmatch(r"/v1/statement/executing/([\w]+)/token/\d+", self.path)
        query = self.server.queries.get(executing.group(1)) if executing else None
        if query is None:
            return self.reply_json(404, {"message": "not found"})
        query.requests.append(("DELETE", self.path))
        if query.state not in ("FINISHED", "FAILED"):
            query.state = "FAILED"  # USER_CANCELED: the work done so far is still spent
        self.reply(204)


@contextmanager
def fake_trino() -> Iterator[FakeTrino]:
    with running(FakeTrino()) as server:
        yield server
