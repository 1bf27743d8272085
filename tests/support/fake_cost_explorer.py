"""Cost Explorer for tests: moto's own GetCostAndUsage, plus GetCostAndUsageWithResources, which moto
does not implement, answered here in front of it.

`cost_explorer_front(moto_url)` is an HTTP server on 127.0.0.1 that answers
`AWSInsightsIndexService.GetCostAndUsageWithResources` (the JSON protocol boto3 speaks) from the
daily records the test loads: the request's Filter expression (Dimensions SERVICE, RESOURCE_ID,
USAGE_TYPE; Tags with Values or MatchOptions ABSENT; And, Or, Not), its time period and up to two
GroupBy keys (DIMENSION SERVICE, RESOURCE_ID, USAGE_TYPE or a TAG, answered "<key>$<value>"), a few
days per page with NextPageToken. Resource-level data reaches back 14 days from `today` (when set);
an older start is refused as Cost Explorer refuses it. With `answer_cost_and_usage`, GetCostAndUsage
is answered the same way (without RESOURCE_ID); otherwise it and every other request go to the moto
server unchanged, and `queue_cost_and_usage` loads moto's answers through its documented results
queue (moto returns them in order, one per distinct request).

https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_GetCostAndUsageWithResources.html
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, running

WITH_RESOURCES = "AWSInsightsIndexService.GetCostAndUsageWithResources"
COST_AND_USAGE = "AWSInsightsIndexService.GetCostAndUsage"
_DIMENSIONS = {"SERVICE": "service", "RESOURCE_ID": "resource_id", "USAGE_TYPE": "usage_type"}


@dataclass(frozen=True)
class CostRecord:
    day: dt.date
    service: str
    resource_id: str
    usage_type: str
    cost: Decimal
    quantity: Decimal
    unit: str
    currency: str = "USD"
    tags: tuple[tuple[str, str], ...] = ()


def records_of(charges) -> list[CostRecord]:
    """Cost Explorer's records of sample charges (`billing.samples`): S3 under its service name with
    each bucket tagged `bucket`, the other services with their own tags."""
    s3 = "Amazon Simple Storage Service"
    return [
        CostRecord(
            c.day,
            s3 if c.is_storage else c.service_name,
            c.resource_id or "",
            c.usage_type,
            c.billed(),
            c.quantity,
            c.unit,
            tags=(("bucket", c.resource_id),) if c.is_storage else c.tags,
        )
        for c in charges
    ]


def _matches(record: CostRecord, expression: dict[str, Any]) -> bool:
    """A Cost Explorer Expression on one record."""
    if "And" in expression:
        return all(_matches(record, part) for part in expression["And"])
    if "Or" in expression:
        return any(_matches(record, part) for part in expression["Or"])
    if "Not" in expression:
        return not _matches(record, expression["Not"])
    if "Dimensions" in expression:
        condition = expression["Dimensions"]
        if condition["Key"] not in _DIMENSIONS:
            raise ValueError(f"the fake filters on {sorted(_DIMENSIONS)}, not {condition['Key']}")
        return getattr(record, _DIMENSIONS[condition["Key"]]) in condition["Values"]
    if "Tags" in expression:
        condition = expression["Tags"]
        value = dict(record.tags).get(condition["Key"])
        if "ABSENT" in condition.get("MatchOptions", []):
            return value is None
        return value is not None and value in condition.get("Values", [])
    raise ValueError(f"the fake does not know the expression {sorted(expression)}")


def _group_key(record: CostRecord, group: dict[str, str]) -> str:
    if group["Type"] == "TAG":
        return f"{group['Key']}${dict(record.tags).get(group['Key'], '')}"
    return getattr(record, _DIMENSIONS[group["Key"]])


@dataclass
class Request:
    target: str
    body: dict[str, Any]


class CostExplorerFront(LocalServer):
    def __init__(self, moto_url: str, days_per_page: int = 2) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.days_per_page = days_per_page
        self.records: list[CostRecord] = []
        self.requests: list[Request] = []
        self.estimated_from: dt.date | None = None  # days from this one on are answered Estimated
        self.today: dt.date | None = None  # resource-level data reaches back 14 days from it
        self.answer_cost_and_usage = False  # GetCostAndUsage from the records too, not from moto
        super().__init__(_Handler)

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.target.endswith("." + operation)]

    def with_resources(self, body: dict[str, Any]) -> dict[str, Any]:
        start = dt.date.fromisoformat(body["TimePeriod"]["Start"])
        if self.today is not None and start < self.today - dt.timedelta(days=14):
            raise ValueError("start date is earlier than 14 days ago: resource-level data is kept 14 days")
        if "Filter" not in body:
            raise ValueError("Filter is required")
        return self.answer(body, resources=True)

    def answer(self, body: dict[str, Any], resources: bool = False) -> dict[str, Any]:
        period = body["TimePeriod"]
        start, end = dt.date.fromisoformat(period["Start"]), dt.date.fromisoformat(period["End"])
        group_by = body.get("GroupBy", [])
        if len(group_by) > 2:
            raise ValueError("GroupBy takes two keys at most")
        for group in group_by:
            if group["Type"] == "DIMENSION" and group["Key"] not in _DIMENSIONS:
                raise ValueError(f"the fake groups by {sorted(_DIMENSIONS)}, not {group['Key']}")
            if group["Key"] == "RESOURCE_ID" and not resources:
                raise ValueError("RESOURCE_ID is a dimension of GetCostAndUsageWithResources only")
        expression = body.get("Filter")
        days = [start + dt.timedelta(days=n) for n in range((end - start).days)]
        offset = int(body.get("NextPageToken") or 0)
        page_days = days[offset : offset + self.days_per_page]
        results = []
        for day in page_days:
            groups: dict[tuple[str, ...], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
            units: dict[tuple[str, ...], str] = {}
            for record in self.records:
                if record.day == day and (expression is None or _matches(record, expression)):
                    key = tuple(_group_key(record, group) for group in group_by)
                    groups[key][0] += record.cost
                    groups[key][1] += record.quantity
                    units[key] = record.unit
            results.append(
                {
                    "TimePeriod": {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()},
                    "Total": {},
                    "Groups": [
                        {
                            "Keys": list(key),
                            "Metrics": {
                                "UnblendedCost": {"Amount": str(cost), "Unit": "USD"},
                                "UsageQuantity": {"Amount": str(quantity), "Unit": units[key]},
                            },
                        }
                        for key, (cost, quantity) in sorted(groups.items())
                    ],
                    "Estimated": self.estimated_from is not None and day >= self.estimated_from,
                }
            )
        answer: dict[str, Any] = {"GroupDefinitions": group_by, "ResultsByTime": results}
        if offset + self.days_per_page < len(days):
            answer["NextPageToken"] = str(offset + self.days_per_page)
        return answer


class _Handler(JsonHandler):
    server: CostExplorerFront
    protocol_version = "HTTP/1.1"
    json_content_type = "application/x-amz-json-1.1"

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(
            self.server.moto_url + self.path, data=body or None, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                self.reply(response.status, response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as error:
            self.reply(error.code, error.read(), error.headers.get("Content-Type", ""))

    def _handle(self) -> None:
        raw = self.read_body()
        target = self.headers.get("X-Amz-Target", "")
        if target:
            self.server.requests.append(Request(target, json.loads(raw or b"{}")))
        own = target == WITH_RESOURCES or (target == COST_AND_USAGE and self.server.answer_cost_and_usage)
        if not own:
            return self._forward(raw)
        try:
            body = json.loads(raw)
            payload = (
                self.server.with_resources(body) if target == WITH_RESOURCES else self.server.answer(body)
            )
        except (KeyError, ValueError) as error:
            return self.reply_json(400, {"__type": "ValidationException", "message": str(error)})
        self.reply_json(200, payload)

    do_POST = _handle  # noqa: N815
    do_GET = _handle  # noqa: N815


@contextmanager
def cost_explorer_front(moto_url: str, days_per_page: int = 2) -> Iterator[CostExplorerFront]:
    with running(CostExplorerFront(moto_url, days_per_page)) as server:
        yield server


def queue_cost_and_usage(moto_url: str, results: list[dict[str, Any]]) -> None:
    """Queue moto's answers to GetCostAndUsage, in the order the requests will come."""
    request = urllib.request.Request(
        f"{moto_url.rstrip('/')}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 201:
            raise RuntimeError(f"moto did not take the results: HTTP {response.status}")


def reset_moto(moto_url: str) -> None:
    """Forget every answer moto holds (its backends are shared by every moto server of the process):
    queued and already given GetCostAndUsage results included."""
    request = urllib.request.Request(f"{moto_url.rstrip('/')}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
