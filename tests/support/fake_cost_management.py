"""An Azure Cost Management Query API server on 127.0.0.1, with the managed identity token endpoint.

POST {scope}/providers/Microsoft.CostManagement/query answers from the usage records the test
loads: it applies the request's time period (with Daily granularity, one month at most: a longer
period is cut to its last month, silently), ResourceType filter and Daily granularity, groups by
the requested dimensions (two groupings at most; a `TagKey` grouping answers the columns `TagKey`
and `TagValue`, null for records without the tag), sums Cost, and returns the API's shape
(`properties.columns`, `rows`, `nextLink`), a page at a time. It can throttle: the first N queries get HTTP 429 with the Cost
Management rate-limit headers. Requests without the bearer token it issued get 401.

The token endpoint is the App Service managed identity one (IDENTITY_ENDPOINT, IDENTITY_HEADER),
which azure-identity's DefaultAzureCredential uses when those variables are set.

https://learn.microsoft.com/rest/api/cost-management/query/usage
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, running

TOKEN = "fake-management-token"
IDENTITY_HEADER = "fake-identity-header"
QUERY_SUFFIX = "/providers/Microsoft.CostManagement/query"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class UsageRecord:
    """One line of the fake's cost details: what queries aggregate."""

    day: dt.date
    resource_id: str
    resource_type: str
    meter_category: str
    meter: str
    cost: Decimal
    currency: str
    service_name: str | None = None  # default: the meter category
    tags: tuple[tuple[str, str], ...] = ()


def records_of(charges) -> list[UsageRecord]:
    """The cost details of sample charges (`billing.samples`): storage accounts and the other
    resources (virtual machines), with their tags."""
    return [
        UsageRecord(
            c.day,
            c.resource_id,
            "microsoft.storage/storageaccounts" if c.is_storage else "microsoft.compute/virtualmachines",
            c.meter_category,
            c.usage_type,
            c.billed(),
            c.currency,
            tags=c.tags,
        )
        for c in charges
    ]


def _month_before(day: dt.date) -> dt.date:
    """The same day a month earlier (the month's last day when it has no such day)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    last = (dt.date(year, month, 28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return dt.date(year, month, min(day.day, last.day))


class FakeCostManagement(LocalServer):
    def __init__(self, page_size: int = 25) -> None:
        self.page_size = page_size
        self.records: list[UsageRecord] = []
        self.requests: list[Request] = []
        self.throttle_next = 0  # the next N queries answer 429
        self.throttle_seconds = 1
        super().__init__(_Handler)

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}/msi/token"

    def queries(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(QUERY_SUFFIX)]

    def token_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/msi/token"]

    # ------------------------------------------------------------------ the API

    @staticmethod
    def groupings(body: dict[str, Any]) -> list[dict[str, str]]:
        grouping = body["dataset"].get("grouping", [])
        if len(grouping) > 2:
            raise ValueError("a query groups by two dimensions or tags at most")
        for group in grouping:
            if group["type"] not in ("Dimension", "TagKey"):
                raise ValueError(f"unknown grouping type {group['type']}")
        return grouping

    def run_query(self, body: dict[str, Any]) -> list[list[Any]]:
        period = body["timePeriod"]
        first = dt.datetime.fromisoformat(period["from"]).date()
        last = dt.datetime.fromisoformat(period["to"]).date()
        dataset = body["dataset"]
        if dataset.get("granularity") != "Daily":
            raise ValueError("the fake answers Daily granularity only")
        first = max(first, _month_before(last) + dt.timedelta(days=1))
        grouping = self.groupings(body)
        wanted_types = None
        condition = (dataset.get("filter") or {}).get("dimensions")
        if condition and condition["name"] == "ResourceType" and condition["operator"] == "In":
            wanted_types = {v.lower() for v in condition["values"]}
        sums: dict[tuple, Decimal] = defaultdict(Decimal)
        for record in self.records:
            if not first <= record.day <= last:
                continue
            if wanted_types is not None and record.resource_type.lower() not in wanted_types:
                continue
            values = {
                "ResourceId": record.resource_id.lower(),  # the API answers ids in lower case
                "MeterCategory": record.meter_category,
                "Meter": record.meter,
                "ResourceType": record.resource_type,
                "ServiceName": record.service_name or record.meter_category,
            }
            key: list[Any] = [int(record.day.strftime("%Y%m%d"))]
            for group in grouping:
                if group["type"] == "TagKey":
                    value = dict(record.tags).get(group["name"])
                    key += [group["name"], value] if value is not None else [None, None]
                else:
                    key.append(values[group["name"]])
            sums[(*key, record.currency)] += record.cost
        return [[float(cost), *key] for key, cost in sorted(sums.items(), key=lambda item: repr(item[0]))]

    def answer(self, url: str, body: dict[str, Any], skip: int) -> dict[str, Any]:
        columns: list[dict[str, str]] = []
        for group in self.groupings(body):
            if group["type"] == "TagKey":
                columns += [{"name": "TagKey", "type": "String"}, {"name": "TagValue", "type": "String"}]
            else:
                columns.append({"name": group["name"], "type": "String"})
        rows = self.run_query(body)
        page = rows[skip : skip + self.page_size]
        next_link = None
        if skip + self.page_size < len(rows):
            base = url.split("&$skiptoken=")[0]
            next_link = f"{base}&$skiptoken={skip + self.page_size}"
        return {
            "id": "subscriptions/fake/providers/Microsoft.CostManagement/query/fake",
            "name": "fake",
            "type": "Microsoft.CostManagement/query",
            "properties": {
                "nextLink": next_link,
                "columns": [
                    {"name": "Cost", "type": "Number"},
                    {"name": "UsageDate", "type": "Number"},
                    *columns,
                    {"name": "Currency", "type": "String"},
                ],
                "rows": page,
            },
        }


class _Handler(JsonHandler):
    server: FakeCostManagement
    protocol_version = "HTTP/1.1"
    json_content_type = "application/json; charset=utf-8"

    def _record(self) -> tuple[str, dict[str, str], Any]:
        path, query, body = self.url_path, self.query_last(), self.read_json()
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append(Request(self.command, path, query, headers, body))
        return path, query, body

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.reply_json(status, payload, headers)

    def do_GET(self) -> None:  # noqa: N802
        path, query, _ = self._record()
        if path != "/msi/token":
            return self._send(404, {"error": {"code": "NotFound", "message": path}})
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return self._send(
                400, {"error": "invalid_request", "error_description": "missing identity header"}
            )
        expires = int(dt.datetime.now(dt.timezone.utc).timestamp()) + 3600
        self._send(
            200,
            {
                "access_token": TOKEN,
                "expires_on": str(expires),
                "resource": query.get("resource"),
                "token_type": "Bearer",
            },
        )

    def do_POST(self) -> None:  # noqa: N802
        path, query, body = self._record()
        if not path.endswith(QUERY_SUFFIX):
            return self._send(404, {"error": {"code": "NotFound", "message": path}})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"error": {"code": "AuthenticationFailed", "message": "no valid token"}})
        if query.get("api-version") is None:
            return self._send(
                400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}}
            )
        server = self.server
        if server.throttle_next > 0:
            server.throttle_next -= 1
            wait = str(server.throttle_seconds)
            return self._send(
                429,
                {"error": {"code": "429", "message": "Too many requests. Please retry."}},
                {
                    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": wait,
                    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": wait,
                    "Retry-After": wait,
                },
            )
        try:
            payload = server.answer(f"{server.url}{self.path}", body, int(query.get("$skiptoken") or 0))
        except (KeyError, ValueError) as error:
            return self._send(400, {"error": {"code": "BadRequest", "message": str(error)}})
        self._send(
            200, payload, {"x-ms-ratelimit-microsoft.costmanagement-qpu-remaining": "QueryResource=11"}
        )


@contextmanager
def fake_cost_management(page_size: int = 25) -> Iterator[FakeCostManagement]:
    with running(FakeCostManagement(page_size)) as server:
        yield server


def azure_connection(server: FakeCostManagement) -> str:
    """AIRFLOW_CONN_AZURE_DEFAULT for the fake: a managed identity, the API at the fake's address."""
    return json.dumps(
        {
            "conn_type": "azure",
            "extra": {"use_azure_identity_object": True, "management_endpoint": server.url},
        }
    )


def identity_environment(server: FakeCostManagement) -> dict[str, str]:
    """The App Service managed identity variables that make azure-identity ask the fake for tokens."""
    return {"IDENTITY_ENDPOINT": server.identity_endpoint, "IDENTITY_HEADER": IDENTITY_HEADER}
