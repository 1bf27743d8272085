"""Azure Cost Management Query API: a scope's daily actual cost per storage account.

One query per import and calendar month of its window: ActualCost, Daily, the days as a custom time
period, filtered to storage account resources, grouped by ResourceId and MeterCategory (or, with
`meter_dimension="Meter"`, by meter name, which tells storage, operations and retrieval apart).
Pages are followed through `nextLink`. A Daily query covers one month at most (the API shortens a
longer period to its last month without an error), hence a query per month. The API throttles per
scope and tenant: a 429 (or 503) answer is retried after the wait its headers ask for
(`x-ms-ratelimit-microsoft.costmanagement-*-retry-after`, `Retry-After`), up to `max_wait` seconds
each and `wait_budget` seconds in all; a longer wait fails the import with an error that says so.

The whole bill (`all_services`): two queries (per month) over the scope, unfiltered (a query groups
by two keys at most): one grouped by ResourceId and ServiceName (each resource's cost per service),
one by ResourceId and the tag `openlineage_run_id` this project sets (TagKey; the answer has the
columns TagKey and TagValue, null or empty for costs without the tag): a resource's tagged cost
becomes a row with its run id, taken out of the resource's largest service row that day, so that the
rows add up to the resource's cost once. Storage accounts are among them (their rows are the storage
costs, by service: Storage, Bandwidth).

The token comes from the Azure provider's connection (`AzureBaseHook`, with
`use_azure_identity_object: true` in its extra): a service principal, a managed identity or the
default credential chain.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingSourceError, provider_required
from airflow_cost_provider.billing.importer import CollectedCosts, read_rows
from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)

API_VERSION = "2023-11-01"
RUN_ID_TAG = "openlineage_run_id"  # the tag this project sets on the resources a task runs
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 120
MAX_PAGES = 200
MAX_ATTEMPTS = 6
# Azure cloud -> (management endpoint, token scope); the connection extra `cloud_environment` picks one
CLOUDS = {
    "AzurePublicCloud": ("https://management.azure.com", "https://management.azure.com/.default"),
    "AzureUSGovernment": (
        "https://management.usgovcloudapi.net",
        "https://management.usgovcloudapi.net/.default",
    ),
    "AzureChinaCloud": (
        "https://management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
    ),
}
RETRY_AFTER_HEADERS = (
    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-client-retry-after",
    "retry-after",
)


def query_body(
    window: DateWindow,
    meter_dimension: str = "MeterCategory",
    grouping: list[dict[str, str]] | None = None,
    storage_only: bool = True,
) -> dict[str, Any]:
    """The query: storage accounts by ResourceId and `meter_dimension`; or `grouping` over the whole
    scope when `storage_only` is False."""
    last_day = window.end - dt.timedelta(days=1)
    body = {
        "type": "ActualCost",
        "timeframe": "Custom",
        "timePeriod": {"from": f"{window.start}T00:00:00+00:00", "to": f"{last_day}T23:59:59+00:00"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [
                {"type": "Dimension", "name": "ResourceId"},
                {"type": "Dimension", "name": meter_dimension},
            ],
            "filter": {
                "dimensions": {
                    "name": "ResourceType",
                    "operator": "In",
                    "values": ["microsoft.storage/storageaccounts"],
                }
            },
        },
    }
    if grouping is not None:
        body["dataset"]["grouping"] = grouping
    if not storage_only:
        del body["dataset"]["filter"]
    return body


def months(window: DateWindow) -> list[DateWindow]:
    """The window cut at the start of each calendar month: the periods of its Daily queries."""
    parts, start = [], window.start
    while start < window.end:
        next_month = (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        parts.append(DateWindow(start, min(next_month, window.end)))
        start = next_month
    return parts


def retry_after(headers) -> float | None:
    """The longest wait any throttling header asks for, in seconds."""
    waits = []
    for name in RETRY_AFTER_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            waits.append(float(value))
        except ValueError:
            continue  # an HTTP date: treat as unknown
    return max(waits) if waits else None


def scope_account(scope: str) -> str:
    """The billing account (or subscription) id a scope names, used as the ledger's billing account."""
    parts = [p for p in scope.strip("/").split("/") if p]
    for marker in ("billingAccounts", "subscriptions"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1]
    return scope


class CostManagementClient:
    def __init__(
        self,
        azure_conn_id: str = "azure_default",
        *,
        max_wait: float = 60.0,
        wait_budget: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.azure_conn_id = azure_conn_id
        self.max_wait = max_wait
        self.wait_budget = wait_budget
        self.sleep = sleep
        self.waited = 0.0
        self.requests = 0
        self._session = None
        self._endpoint: str | None = None

    def _connect(self) -> None:
        with provider_required("microsoft-azure", "the Cost Management source"):
            import requests
            from airflow.providers.microsoft.azure.hooks.base_azure import AzureBaseHook

        hook = AzureBaseHook(conn_id=self.azure_conn_id)
        conn = hook.get_connection(self.azure_conn_id)
        extra = conn.extra_dejson
        endpoint, token_scope = CLOUDS.get(
            extra.get("cloud_environment") or "AzurePublicCloud", CLOUDS["AzurePublicCloud"]
        )
        credential = hook.get_credential(conn=conn)
        if not hasattr(credential, "get_token"):
            raise BillingSourceError(
                f"Azure connection {self.azure_conn_id!r}: set use_azure_identity_object: true in its extra "
                "so that a token for the Cost Management API can be requested"
            )
        token = credential.get_token(token_scope).token
        self._endpoint = (extra.get("management_endpoint") or endpoint).rstrip("/")
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    def post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self._session.post(
                url, json=body, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
            )
            self.requests += 1
            if response.status_code in (429, 503):
                wait = retry_after(response.headers)
                wait = 2.0**attempt if wait is None else wait
                if wait > self.max_wait or self.waited + wait > self.wait_budget or attempt == MAX_ATTEMPTS:
                    raise BillingSourceError(
                        f"Cost Management API throttled the query (HTTP {response.status_code}) and asks to wait "
                        f"{wait:g} s; waited {self.waited:g} s already, limits: {self.max_wait:g} s per wait, "
                        f"{self.wait_budget:g} s in all. Run again later or raise max_wait."
                    )
                log.info("Cost Management API throttled; waiting %g s as asked (attempt %d)", wait, attempt)
                self.sleep(wait)
                self.waited += wait
                continue
            if response.status_code >= 400:
                raise BillingSourceError(
                    f"Cost Management API answered HTTP {response.status_code}: {response.text[:500]}"
                )
            return response.json()
        raise BillingSourceError("Cost Management API: no answer after retries")  # not reached

    def query_months(self, scope: str, window: DateWindow, **body: Any) -> list[dict[str, Any]]:
        """Every page of `query_body(part, **body)` for each calendar month of the window."""
        return [page for part in months(window) for page in self.query(scope, query_body(part, **body))]

    def query(self, scope: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Every page of the query's result, following nextLink."""
        if self._session is None:
            self._connect()
        url = f"{self._endpoint}/{scope.strip('/')}/providers/Microsoft.CostManagement/query?api-version={API_VERSION}"
        pages = []
        for _ in range(MAX_PAGES):
            page = self.post(url, body)
            pages.append(page)
            url = (page.get("properties") or {}).get("nextLink")
            if not url:
                return pages
        raise BillingSourceError(f"Cost Management API: more than {MAX_PAGES} pages; narrow the window")


def _usage_day(value: Any) -> dt.date:
    text = str(int(value)) if isinstance(value, (int, float)) else str(value)
    if len(text) == 8 and text.isdigit():
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()


def records(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of every page as dicts keyed by column name."""
    found = []
    for page in pages:
        properties = page.get("properties") or {}
        names = [column["name"] for column in properties.get("columns", [])]
        found += [dict(zip(names, values, strict=False)) for values in properties.get("rows", [])]
    return found


def _cost(record: dict[str, Any]) -> Decimal:
    return Decimal(str(record.get("Cost", record.get("PreTaxCost"))))


def _currency(record: dict[str, Any]) -> str:
    return record.get("Currency") or record.get("BillingCurrency")


def rows_from_pages(pages: list[dict[str, Any]], account: str, meter_dimension: str) -> list[focus.FocusRow]:
    rows = []
    for page in pages:
        for record in records([page]):
            day = _usage_day(record["UsageDate"])
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            meter = record.get(meter_dimension)
            rows.append(
                focus.FocusRow(
                    BillingAccountId=account,
                    BilledCost=_cost(record),
                    BillingCurrency=_currency(record),
                    ChargePeriodStart=start,
                    ChargePeriodEnd=start + dt.timedelta(days=1),
                    ServiceName="Storage",
                    ResourceId=record.get("ResourceId"),
                    x_Provider="azure",
                    x_UsageType=meter,
                )
            )
    return rows


def whole_bill_rows(
    by_service: list[dict[str, Any]], by_tag: list[dict[str, Any]], account: str, run_id_tag: str = RUN_ID_TAG
) -> list[focus.FocusRow]:
    """Rows of every service from the two whole-bill queries (see the module's docstring): per
    resource and service, and the tagged part of a resource's cost apart, with its run id."""
    services: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for record in by_service:
        key = (_usage_day(record["UsageDate"]), (record.get("ResourceId") or "").lower(), _currency(record))
        services[key][record.get("ServiceName") or ""] += _cost(record)
    tagged: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for record in by_tag:
        value = record.get("TagValue")
        if not value or (record.get("TagKey") or run_id_tag).lower() != run_id_tag.lower():
            continue  # untagged: in the service rows
        key = (_usage_day(record["UsageDate"]), (record.get("ResourceId") or "").lower(), _currency(record))
        tagged[key][value] += _cost(record)

    def row(key: tuple, service: str, amount: Decimal, run_id: str | None = None) -> focus.FocusRow:
        day, resource, currency = key
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        return focus.FocusRow(
            BillingAccountId=account,
            BilledCost=amount,
            BillingCurrency=currency,
            ChargePeriodStart=start,
            ChargePeriodEnd=start + dt.timedelta(days=1),
            ServiceName=service,
            ServiceCategory=None,
            ResourceId=resource or None,
            x_Provider="azure",
            x_UsageType=service or None,
            Tags=json.dumps({run_id_tag: run_id}) if run_id else None,
        )

    rows = []
    for key in sorted(set(services) | set(tagged)):
        amounts = dict(services.get(key, {}))
        runs = tagged.get(key, {})
        # the tagged cost is taken out of the resource's largest service that day
        largest = max(sorted(amounts), key=lambda name: amounts[name]) if amounts else ""
        for run_id, amount in sorted(runs.items()):
            rows.append(row(key, largest, amount, run_id))
            amounts[largest] = amounts.get(largest, Decimal(0)) - amount
        rows += [row(key, service, amount) for service, amount in sorted(amounts.items()) if amount != 0]
    return rows


def fetch(
    window: DateWindow,
    *,
    scope: str,
    azure_conn_id: str = "azure_default",
    meter_dimension: str = "MeterCategory",
    max_wait: float = 60.0,
    wait_budget: float = 300.0,
    client: CostManagementClient | None = None,
    all_services: bool = False,
    run_id_tag: str = RUN_ID_TAG,
) -> CollectedCosts:
    """Daily storage account costs of the window for a scope (/subscriptions/<id>, a billing
    account /providers/Microsoft.Billing/billingAccounts/<id>, ...); `all_services`: the whole bill
    of the scope, per resource, service and run id tag."""
    client = client or CostManagementClient(azure_conn_id, max_wait=max_wait, wait_budget=wait_budget)
    account = scope_account(scope)
    if all_services:
        resource = {"type": "Dimension", "name": "ResourceId"}
        by_service = client.query_months(
            scope,
            window,
            grouping=[resource, {"type": "Dimension", "name": "ServiceName"}],
            storage_only=False,
        )
        by_tag = client.query_months(
            scope, window, grouping=[resource, {"type": "TagKey", "name": run_id_tag}], storage_only=False
        )
        pages = by_service + by_tag
        rows = whole_bill_rows(records(by_service), records(by_tag), account, run_id_tag)
    else:
        pages = client.query_months(scope, window, meter_dimension=meter_dimension)
        rows = rows_from_pages(pages, account, meter_dimension)
    log.info(
        "Cost Management: %d rows in %d pages (%d requests, %g s waited for throttling)",
        len(rows),
        len(pages),
        client.requests,
        client.waited,
    )
    return read_rows(
        rows, "azure-cost-management", f"cost-management:{scope}", window, all_services=all_services
    )
