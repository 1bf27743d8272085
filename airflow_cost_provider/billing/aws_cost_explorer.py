"""AWS Cost Explorer, for accounts without a Data Export: S3 costs per bucket and usage type, and
with `all_services` the whole bill.

Every Cost Explorer request is billed (USD 0.01 each), so an import makes as few as it can: one
query per kind for the whole window, DAILY, filtered to S3 in the request, paged with
NextPageToken, and every page kept in the ledger's response cache for `cache_ttl` so that a retry,
a second task or a re-run within that time pays nothing.

- The last 14 days: `GetCostAndUsageWithResources`, grouped by RESOURCE_ID (the bucket) and
  USAGE_TYPE. Resource-level data must be enabled in the Cost Explorer settings.
- Older days: `GetCostAndUsage`, grouped by a cost allocation tag on the buckets (`bucket_tag_key`,
  which must be activated in the Billing console) and USAGE_TYPE. Untagged costs have no resource.

UnblendedCost is the billed cost; credits and refunds are netted into it by Cost Explorer.

The whole bill (`all_services`): S3 as above, and every other service in three more queries that add
up to its cost without counting any of it twice (Cost Explorer groups by two keys at most):

- `GetCostAndUsage` grouped by SERVICE and the tag `openlineage_run_id` this project sets on jobs
  (it must be an activated cost allocation tag): the tagged costs, one row per service and run id;
- `GetCostAndUsage` grouped by SERVICE and USAGE_TYPE, filtered to costs without that tag: the rest,
  per usage type, for the days older than 14;
- `GetCostAndUsageWithResources` grouped by SERVICE and RESOURCE_ID, filtered to the services the
  previous query found and to costs without the tag: the rest per resource for the last 14 days.
  Older days have no resource id: only tagged rows and `billing_resources` rules without a
  `resource_id` can match them.
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
RUN_ID_TAG = "openlineage_run_id"  # the cost allocation tag this project sets on jobs
NO_RESOURCE = "NoResourceId"  # Cost Explorer's group key for costs without a resource
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


def _services(names: list[str]) -> dict[str, Any]:
    return {"Dimensions": {"Key": "SERVICE", "Values": names}}


def _untagged(tag_key: str) -> dict[str, Any]:
    return {"Tags": {"Key": tag_key, "MatchOptions": ["ABSENT"]}}


def _request(
    window: DateWindow, group_by: list[dict[str, str]], filter_: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": window.start.isoformat(), "End": window.end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": METRICS,
        "Filter": filter_ or _services([S3_SERVICE]),
        "GroupBy": group_by,
    }


def _tag_value(key: str, tag_key: str | None) -> str | None:
    prefix = f"{tag_key}$"  # Cost Explorer answers "<tag key>$<value>", "<tag key>$" if untagged
    return (key[len(prefix) :] if key.startswith(prefix) else "") or None


def _group_values(keys: list[str], kinds: tuple[str, ...], tag_key: str | None) -> dict[str, str | None]:
    """The resource, usage type, service and run id of a group, from its Keys in the order of the
    request's GroupBy. Kinds: resource, usage_type, service, tag (a bucket tag: the resource) and
    run_tag (the run id tag)."""
    values: dict[str, str | None] = {"resource": None, "usage_type": None, "service": None, "run_id": None}
    for kind, key in zip(kinds, keys, strict=False):
        if kind == "tag":
            values["resource"] = _tag_value(key, tag_key)
        elif kind == "run_tag":
            values["run_id"] = _tag_value(key, tag_key)
        elif kind == "resource":
            values["resource"] = None if key in ("", NO_RESOURCE) else key
        else:
            values[kind] = key or None
    return values


def rows_from_pages(
    pages: list[dict[str, Any]],
    account: str,
    kinds: tuple[str, ...],
    tag_key: str | None,
    log_: RequestLog,
    only_tagged: bool = False,
    days: DateWindow | None = None,
) -> list[focus.FocusRow]:
    """FOCUS rows from Cost Explorer results; `kinds` names each group key (see `_group_values`).
    `only_tagged`: keep the groups with a run id only; `days`: keep the results of these days only."""
    rows = []
    for page in pages:
        for result in page.get("ResultsByTime", []):
            start = dt.date.fromisoformat(result["TimePeriod"]["Start"])
            if days is not None and start not in days:
                continue
            if result.get("Estimated"):
                log_.estimated_days.add(start)
            moment = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
            for group in result.get("Groups", []):
                values = _group_values(group.get("Keys") or [], kinds, tag_key)
                if only_tagged and values["run_id"] is None:
                    continue  # the untagged rest comes from the queries filtered to it
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
                        ServiceName=values["service"] or S3_SERVICE,
                        ServiceCategory=None if values["service"] else "Storage",
                        ResourceId=values["resource"],
                        ConsumedQuantity=quantity,
                        ConsumedUnit=None if unit in (None, "", "N/A") else unit,
                        x_Provider="aws",
                        x_UsageType=values["usage_type"],
                        Tags=json.dumps({tag_key: values["run_id"]}) if values["run_id"] else None,
                    )
                )
    return rows


def _s3_rows(
    window: DateWindow,
    resource_start: dt.date,
    explorer: CostExplorer,
    account: str,
    bucket_tag_key: str | None,
) -> list[focus.FocusRow]:
    """S3 per bucket and usage type: by resource id for the last 14 days, by bucket tag before."""
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
    return rows


def _other_service_rows(
    window: DateWindow, resource_start: dt.date, explorer: CostExplorer, account: str, run_id_tag: str
) -> list[focus.FocusRow]:
    """Every service but S3 (see the module's docstring): tagged rows per run id, the untagged rest
    per resource for the last 14 days and per usage type before them. Together they add up to each
    service's daily cost once."""
    not_s3 = {"Not": _services([S3_SERVICE])}
    tagged = explorer.pages(
        "GetCostAndUsage",
        _request(window, [_dimension("SERVICE"), {"Type": "TAG", "Key": run_id_tag}], not_s3),
    )
    rows = rows_from_pages(
        tagged, account, ("service", "run_tag"), run_id_tag, explorer.requests, only_tagged=True
    )
    untagged = {"And": [not_s3, _untagged(run_id_tag)]}
    by_usage = explorer.pages(
        "GetCostAndUsage", _request(window, [_dimension("SERVICE"), _dimension("USAGE_TYPE")], untagged)
    )
    if window.start < resource_start:
        older = DateWindow(window.start, resource_start)
        rows += rows_from_pages(
            by_usage, account, ("service", "usage_type"), None, explorer.requests, days=older
        )
    if resource_start < window.end:
        recent = DateWindow(resource_start, window.end)
        # the services with an untagged cost in these days: GetCostAndUsageWithResources is asked
        # for named services
        services = sorted(
            {
                group["Keys"][0]
                for page in by_usage
                for result in page.get("ResultsByTime", [])
                if dt.date.fromisoformat(result["TimePeriod"]["Start"]) in recent
                for group in result.get("Groups", [])
                if group.get("Keys")
            }
        )
        if services:
            pages = explorer.pages(
                "GetCostAndUsageWithResources",
                _request(
                    recent,
                    [_dimension("SERVICE"), _dimension("RESOURCE_ID")],
                    {"And": [_services(services), _untagged(run_id_tag)]},
                ),
            )
            rows += rows_from_pages(pages, account, ("service", "resource"), None, explorer.requests)
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
    all_services: bool = False,
    run_id_tag: str = RUN_ID_TAG,
) -> CollectedCosts:
    """S3 costs of the window: per bucket for the last 14 days, per bucket tag before that;
    `all_services`: the whole bill as well, every other service with its run id tag, resource or
    usage type (see the module's docstring)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    explorer = explorer or CostExplorer(aws_conn_id, engine, cache_ttl)
    account = explorer.account_id()
    resource_start = min(max(window.start, today - dt.timedelta(days=RESOURCE_DAYS)), window.end)
    rows = _s3_rows(window, resource_start, explorer, account, bucket_tag_key)
    if all_services:
        rows += _other_service_rows(window, resource_start, explorer, account, run_id_tag)
        if window.start < resource_start:
            log.info(
                "Cost Explorer: days %s .. %s are older than %d days: their untagged costs are imported per "
                "service and usage type, without a resource id",
                window.start,
                resource_start - dt.timedelta(days=1),
                RESOURCE_DAYS,
            )
    log.info(
        "Cost Explorer: %d paid requests (USD 0.01 each), %d answered from the cache",
        explorer.requests.paid,
        explorer.requests.cached,
    )
    collected = read_rows(rows, "aws-cost-explorer", "cost-explorer", window, all_services=all_services)
    collected.estimated_days = set(explorer.requests.estimated_days)
    return collected
