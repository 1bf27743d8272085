"""Cost Explorer for tests: moto's own GetCostAndUsage, plus GetCostAndUsageWithResources, which moto
does not implement, answered here in front of it.

`cost_explorer_front(moto_url)` is an HTTP server on 127.0.0.1 that answers
`AWSInsightsIndexService.GetCostAndUsageWithResources` (the JSON protocol boto3 speaks) from the
daily records the test loads, grouped by RESOURCE_ID and USAGE_TYPE, filtered to the requested
SERVICE and time period, a few days per page with NextPageToken; every other request is passed to
the moto server unchanged. `queue_cost_and_usage` loads moto's GetCostAndUsage answers through its
documented results queue (moto returns them in order, one per distinct request).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WITH_RESOURCES = "AWSInsightsIndexService.GetCostAndUsageWithResources"


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


@dataclass
class Request:
    target: str
    body: dict[str, Any]


class CostExplorerFront(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, moto_url: str, days_per_page: int = 2) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.days_per_page = days_per_page
        self.records: list[CostRecord] = []
        self.requests: list[Request] = []
        self.estimated_from: dt.date | None = None  # days from this one on are answered Estimated
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.target.endswith("." + operation)]

    def with_resources(self, body: dict[str, Any]) -> dict[str, Any]:
        period = body["TimePeriod"]
        start, end = dt.date.fromisoformat(period["Start"]), dt.date.fromisoformat(period["End"])
        keys = [g["Key"] for g in body.get("GroupBy", [])]
        if keys != ["RESOURCE_ID", "USAGE_TYPE"]:
            raise ValueError(f"the fake groups by RESOURCE_ID and USAGE_TYPE, not {keys}")
        services = set(body["Filter"]["Dimensions"]["Values"])
        days = [start + dt.timedelta(days=n) for n in range((end - start).days)]
        offset = int(body.get("NextPageToken") or 0)
        page_days = days[offset : offset + self.days_per_page]
        results = []
        for day in page_days:
            groups: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
            units: dict[tuple[str, str], str] = {}
            for record in self.records:
                if record.day == day and record.service in services:
                    key = (record.resource_id, record.usage_type)
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
        answer: dict[str, Any] = {"GroupDefinitions": body["GroupBy"], "ResultsByTime": results}
        if offset + self.days_per_page < len(days):
            answer["NextPageToken"] = str(offset + self.days_per_page)
        return answer


class _Handler(BaseHTTPRequestHandler):
    server: CostExplorerFront
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(
            self.server.moto_url + self.path, data=body or None, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                self._reply(response.status, response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as error:
            self._reply(error.code, error.read(), error.headers.get("Content-Type", ""))

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target", "")
        if target:
            self.server.requests.append(Request(target, json.loads(raw or b"{}")))
        if target != WITH_RESOURCES:
            return self._forward(raw)
        try:
            payload = self.server.with_resources(json.loads(raw))
        except (KeyError, ValueError) as error:
            error_body = {"__type": "ValidationException", "message": str(error)}
            return self._reply(400, json.dumps(error_body).encode(), "application/x-amz-json-1.1")
        self._reply(200, json.dumps(payload).encode(), "application/x-amz-json-1.1")

    do_POST = _handle  # noqa: N815
    do_GET = _handle  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def cost_explorer_front(moto_url: str, days_per_page: int = 2) -> Iterator[CostExplorerFront]:
    server = CostExplorerFront(moto_url, days_per_page)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
