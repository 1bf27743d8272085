"""Allocation of a bucket's storage cost to the datasets inside it, by the bytes under each prefix.

The user maps datasets to prefixes (operator argument `allocation`, or `[cost_provider]
storage_allocation`): keys are dataset URLs (`s3://lake/raw/orders/`, `gs://lake/curated/`,
`abfss://raw@acct.dfs.core.windows.net/events/`), values the bytes under them or null to list
them through the provider's hook. Each dataset gets the bucket's storage cost of the day times
(its bytes / the bucket's bytes stored), method `allocated`. The bucket's bytes are those the billing
data says were stored that day; when they are unknown or smaller than the mapped prefixes add up to,
the prefixes' total is used. What no dataset gets stays with the bucket.

Azure bills a storage account, not its containers: there, map containers
(`abfss://container@account.dfs.core.windows.net`) or paths in them to split the account's cost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from airflow_cost_provider.billing.aws_cur import resource_bucket
from airflow_cost_provider.billing.azure_exports import storage_account_of
from airflow_cost_provider.billing.files import split_url, store_for
from airflow_cost_provider.billing.focus import STORAGE
from airflow_cost_provider.pricing.money import quantize_amount

log = logging.getLogger(__name__)
ALLOCATED = "allocated"


@dataclass(frozen=True)
class AllocationTarget:
    """A dataset a share of its bucket's storage cost goes to."""

    url: str
    provider: str
    resource: str  # bucket, or storage account name
    namespace: str  # OpenLineage dataset namespace and name
    name: str
    bytes: int | None = None


def parse_target(url: str, size: int | None = None) -> AllocationTarget:
    scheme, netloc, key = split_url(url)
    name = key.strip("/") or "/"
    if scheme == "s3" and netloc:
        return AllocationTarget(url, "aws", netloc, f"s3://{netloc}", name, size)
    if scheme == "gs" and netloc:
        return AllocationTarget(url, "gcp", netloc, f"gs://{netloc}", name, size)
    if scheme in ("abfss", "abfs") and "@" in netloc:
        container, host = netloc.split("@", 1)
        account = host.split(".", 1)[0].lower()
        return AllocationTarget(url, "azure", account, f"abfss://{container}@{host}", name, size)
    raise ValueError(
        f"allocation target {url!r} is not an s3://bucket/prefix, gs://bucket/prefix or "
        "abfss://container@account.dfs.core.windows.net/path URL"
    )


def parse_targets(mapping: dict[str, Any] | None) -> list[AllocationTarget]:
    targets = []
    for url, size in (mapping or {}).items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(
                f"allocation[{url!r}] = {size!r}: give a number of bytes, or null to list the prefix"
            )
        targets.append(parse_target(url, size))
    return targets


def measure(
    targets: list[AllocationTarget], conn_ids: dict[str, str | None] | None = None
) -> list[AllocationTarget]:
    """Fill in the bytes of targets given as null by listing their prefix through the provider."""
    measured = []
    for target in targets:
        if target.bytes is not None:
            measured.append(target)
            continue
        scheme = split_url(target.url)[0]
        prefix = target.url if target.url.endswith("/") or target.name == "/" else target.url + "/"
        objects = store_for(prefix, (conn_ids or {}).get("abfss" if scheme == "abfs" else scheme)).list(
            prefix
        )
        size = sum(obj.size for obj in objects)
        log.info("allocation: %s holds %d bytes in %d objects", target.url, size, len(objects))
        measured.append(AllocationTarget(**{**target.__dict__, "bytes": size}))
    return measured


def resource_name(provider: str, resource_id: str) -> str | None:
    """The bucket (AWS, GCP) or storage account (Azure) of a ledger resource id."""
    if provider == "aws":
        return resource_bucket(resource_id)
    if provider == "gcp":
        marker = "/buckets/"
        if marker in resource_id:
            return resource_id.rsplit(marker, 1)[1].split("/", 1)[0]
        return None if "/" in resource_id or not resource_id else resource_id
    if provider == "azure":
        return storage_account_of(resource_id)
    return None


def allocate(costs: list[dict[str, Any]], targets: list[AllocationTarget]) -> list[dict[str, Any]]:
    """Allocations of the storage costs (ledger rows) to the targets with known bytes."""
    by_resource: dict[tuple[str, str], list[AllocationTarget]] = defaultdict(list)
    for target in targets:
        if target.bytes is not None:
            by_resource[(target.provider, target.resource)].append(target)
    groups: dict[tuple, dict[str, Any]] = {}
    for row in costs:
        if row["usage_class"] != STORAGE:
            continue
        name = resource_name(row["provider"], row["resource_id"])
        if name is None or (row["provider"], name) not in by_resource:
            continue
        key = (row["provider"], row["billing_account"], row["day"], row["resource_id"], row["currency"], name)
        group = groups.setdefault(key, {"amount": Decimal(0), "bytes": 0})
        group["amount"] += row["amount"]
        group["bytes"] += row["storage_bytes"] or 0
    allocations = []
    for (provider, account, day, resource_id, currency, name), group in sorted(groups.items(), key=str):
        mapped = by_resource[(provider, name)]
        total = max(group["bytes"], sum(t.bytes for t in mapped))
        if total == 0:
            continue
        for target in mapped:
            with localcontext() as context:
                context.prec = 40
                share = Decimal(target.bytes) / Decimal(total)
            allocations.append(
                {
                    "provider": provider,
                    "billing_account": account,
                    "day": day,
                    "resource_id": resource_id,
                    "usage_class": STORAGE,
                    "currency": currency,
                    "dataset_namespace": target.namespace,
                    "dataset_name": target.name,
                    "bytes": target.bytes,
                    "share": share.quantize(Decimal("1e-12")),
                    "amount": quantize_amount(group["amount"] * share),
                    "method": ALLOCATED,
                }
            )
    return allocations
