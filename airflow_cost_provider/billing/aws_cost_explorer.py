"""AWS Cost Explorer, for accounts without a Data Export: S3 costs per bucket and usage type.

Every Cost Explorer request is billed (USD 0.01 each), so an import makes as few as it can: one
query per kind for the whole window, DAILY, filtered to S3 in the request, paged with
NextPageToken, and every page kept in the ledger's response cache for `cache_ttl` so that a retry,
a second task or a re-run within that time pays nothing.

- The last 14 days: `GetCostAndUsageWithResources`, grouped by RESOURCE_ID (the bucket) and
  USAGE_TYPE. Resource-level data must be enabled in the Cost Explorer settings.
- Older days: `GetCostAndUsage`, grouped by a cost allocation tag on the buckets (`bucket_tag_key`,
  which must be activated in the Billing console) and USAGE_TYPE. Untagged costs have no resource.

UnblendedCost is the billed cost; credits and refunds are netted into it by Cost Explorer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingSourceError, provider_required
from airflow_cost_provider.billing.importer import CollectedCosts, read_rows
from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)

S3_SERVICE = "Amazon Simple Storage Service"
RESOURCE_DAYS = 14  # how far back GetCostAndUsageWithResources reaches
METRICS = ["UnblendedCost", "UsageQuantity"]
MAX_PAGES = 100
_METHODS = {
    "GetCostAndUsage": "get_cost_and_usage",
    "GetCostAndUsageWithResources": "get_cost_and_usage_with_resources",
}
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60


@dataclass
class RequestLog:
    """What an import asked Cost Explorer, for its log line: requests paid and requests cached."""

    paid: int = 0
    cached: int = 0
    estimated_days: set[dt.date] = field(default_factory=set)


def request_key(operation: str, request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([operation, request], sort_keys=True).encode()).hexdigest()


class CostExplorer:
    """Paged, cached Cost Explorer queries through the Amazon provider's AWS connection."""

    def __init__(
        self,
        aws_conn_id: str = "aws_default",
        engine=None,
        cache_ttl: dt.timedelta = dt.timedelta(hours=12),
        client=None,
    ) -> None:
        self.aws_conn_id = aws_conn_id
        self.engine = engine
        self.cache_ttl = cache_ttl
        self._client = client
        self.requests = RequestLog()

    def _hook_client(self, client_type: str):
        with provider_required("amazon", "the Cost Explorer source"):
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
            from botocore.config import Config

        # Cost Explorer answers in us-east-1 whatever the connection's region
        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type=client_type, region_name="us-east-1")
        timeouts = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        return hook.get_client_type(config=hook.config.merge(timeouts))

    @property
    def client(self):
        if self._client is None:
            self._client = self._hook_client("ce")
        return self._client

    def account_id(self) -> str:
        """The account the connection signs in to: the billing account of what Cost Explorer shows."""
        return self._hook_client("sts").get_caller_identity()["Account"]

    def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        from airflow_cost_provider.ledger import store

        key = request_key(operation, request)
        if self.engine is not None:
            cached = store.cached_billing_response(self.engine, key, self.cache_ttl)
            if cached is not None:
                self.requests.cached += 1
                return cached
        method = getattr(self.client, _METHODS[operation])
        try:
            response = method(**request)
        except Exception as error:
            raise BillingSourceError(
                f"Cost Explorer {operation} failed: {type(error).__name__}: {error}"
            ) from error
        self.requests.paid += 1
        response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        if self.engine is not None:
            store.cache_billing_response(self.engine, key, "aws-cost-explorer", response)
        return response

    def pages(self, operation: str, request: dict[str, Any]) -> list[dict[str, Any]]:
        pages = []
        token = None
        for _ in range(MAX_PAGES):
            page = self._call(operation, {**request, **({"NextPageToken": token} if token else {})})
            pages.append(page)
            token = page.get("NextPageToken")
            if not token:
                return pages
        raise BillingSourceError(f"Cost Explorer {operation}: more than {MAX_PAGES} pages; narrow the window")


def _dimension(key: str) -> dict[str, str]:
    return {"Type": "DIMENSION", "Key": key}


def _request(window: DateWindow, group_by: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": window.start.isoformat(), "End": window.end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": METRICS,
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": [S3_SERVICE]}},
        "GroupBy": group_by,
    }


def _group_values(keys: list[str], kinds: tuple[str, ...], tag_key: str | None) -> dict[str, str | None]:
    """The resource and usage type of a group, from its Keys in the order of the request's GroupBy."""
    values: dict[str, str | None] = {"resource": None, "usage_type": None}
    for kind, key in zip(kinds, keys, strict=False):
        if kind == "tag":
            prefix = f"{tag_key}$"  # Cost Explorer answers "<tag key>$<value>", "<tag key>$" if untagged
            values["resource"] = (key[len(prefix) :] if key.startswith(prefix) else "") or None
        else:
            values[kind] = key or None
    return values


def rows_from_pages(
    pages: list[dict[str, Any]],
    account: str,
    kinds: tuple[str, ...],
    tag_key: str | None,
    log_: RequestLog,
) -> list[focus.FocusRow]:
    """FOCUS rows from Cost Explorer results; `kinds` names each group key: resource, tag, usage_type."""
    rows = []
    for page in pages:
        for result in page.get("ResultsByTime", []):
            start = dt.date.fromisoformat(result["TimePeriod"]["Start"])
            if result.get("Estimated"):
                log_.estimated_days.add(start)
            moment = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
            for group in result.get("Groups", []):
                values = _group_values(group.get("Keys") or [], kinds, tag_key)
                cost = group["Metrics"]["UnblendedCost"]
                usage = group["Metrics"].get("UsageQuantity", {})
                amount = Decimal(cost["Amount"])
                quantity = Decimal(usage["Amount"]) if usage.get("Amount") else None
                if amount == 0 and not quantity:
                    continue  # Cost Explorer lists empty groups; a day without charges is not a zero cost
                unit = usage.get("Unit")
                rows.append(
                    focus.FocusRow(
                        BillingAccountId=account,
                        BilledCost=amount,
                        BillingCurrency=cost["Unit"],
                        ChargePeriodStart=moment,
                        ChargePeriodEnd=moment + dt.timedelta(days=1),
                        ServiceName=S3_SERVICE,
                        ResourceId=values["resource"],
                        ConsumedQuantity=quantity,
                        ConsumedUnit=None if unit in (None, "", "N/A") else unit,
                        x_Provider="aws",
                        x_UsageType=values["usage_type"],
                    )
                )
    return rows


def fetch(
    window: DateWindow,
    *,
    aws_conn_id: str = "aws_default",
    bucket_tag_key: str | None = "bucket",
    engine=None,
    cache_ttl: dt.timedelta = dt.timedelta(hours=12),
    today: dt.date | None = None,
    explorer: CostExplorer | None = None,
) -> CollectedCosts:
    """S3 costs of the window: per bucket for the last 14 days, per bucket tag before that."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    explorer = explorer or CostExplorer(aws_conn_id, engine, cache_ttl)
    account = explorer.account_id()
    resource_start = max(window.start, today - dt.timedelta(days=RESOURCE_DAYS))
    rows: list[focus.FocusRow] = []
    if resource_start < window.end:
        kinds = ("resource", "usage_type")
        request = _request(
            DateWindow(resource_start, window.end), [_dimension("RESOURCE_ID"), _dimension("USAGE_TYPE")]
        )
        pages = explorer.pages("GetCostAndUsageWithResources", request)
        rows += rows_from_pages(pages, account, kinds, None, explorer.requests)
    if window.start < resource_start:
        if bucket_tag_key:
            kinds = ("tag", "usage_type")
            group_by = [{"Type": "TAG", "Key": bucket_tag_key}, _dimension("USAGE_TYPE")]
        else:
            log.warning(
                "Cost Explorer: days %s .. %s are older than %d days and no bucket_tag_key is set: "
                "their costs are imported without a bucket",
                window.start,
                resource_start - dt.timedelta(days=1),
                RESOURCE_DAYS,
            )
            kinds, group_by = ("usage_type",), [_dimension("USAGE_TYPE")]
        pages = explorer.pages(
            "GetCostAndUsage", _request(DateWindow(window.start, resource_start), group_by)
        )
        rows += rows_from_pages(pages, account, kinds, bucket_tag_key, explorer.requests)
    log.info(
        "Cost Explorer: %d paid requests (USD 0.01 each), %d answered from the cache",
        explorer.requests.paid,
        explorer.requests.cached,
    )
    collected = read_rows(rows, "aws-cost-explorer", "cost-explorer", window)
    collected.estimated_days = set(explorer.requests.estimated_days)
    return collected
