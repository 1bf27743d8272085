"""The `costProvider_storageCost` dataset facet: what keeping a bucket (or a dataset in it) cost.

It rides in `dataset.facets` of the outputs of the import task's COMPLETE event (Marquez shows
dataset facets, not `outputFacets`). Dataset names follow OpenLineage's naming: namespace
`s3://{bucket}`, `gs://{bucket}` or `abfss://{container}@{account}.dfs.core.windows.net`, name the
path in it, `/` for the bucket itself.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

import attr
from openlineage.client.facet_v2 import DatasetFacet

from airflow_cost_provider.openlineage.facets import schema_document

STORAGE_FACET_KEY = "costProvider_storageCost"
STORAGE_SCHEMA_FILE = "CostProviderStorageCostDatasetFacet.json"
STORAGE_FACET_SCHEMA_ID = schema_document(STORAGE_SCHEMA_FILE)["$id"]


@attr.define
class CostProviderStorageCostDatasetFacet(DatasetFacet):
    """A dataset's storage cost over a billing period; exact amounts stay in the ledger."""

    period: dict[str, str]
    provider: str
    resourceId: str  # noqa: N815 (OpenLineage facets name their fields in camelCase)
    source: str
    status: str
    method: str
    totals: list[dict[str, Any]] = attr.field(factory=list)
    usageClasses: list[dict[str, Any]] = attr.field(factory=list)  # noqa: N815
    billingAccountIds: list[str] | None = None  # noqa: N815
    credits: list[dict[str, Any]] | None = None
    bytesStored: int | None = None  # noqa: N815
    share: float | None = None
    allocatedFrom: dict[str, str] | None = None  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return f"{STORAGE_FACET_SCHEMA_ID}#/$defs/CostProviderStorageCostDatasetFacet"


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def bucket_dataset(provider: str, resource_id: str) -> tuple[str, str] | None:
    """(namespace, name) of the bucket a ledger resource id is, or None when it is not one (an Azure
    storage account, a GCP project of the standard export, charges without a resource)."""
    from airflow_cost_provider.billing.allocation import resource_name

    name = resource_name(provider, resource_id)
    if name is None or provider == "azure":
        return None
    return (f"s3://{name}" if provider == "aws" else f"gs://{name}", "/")


def _money(amounts: dict[str, Decimal]) -> list[dict[str, Any]]:
    return [{"amount": _number(amount), "currency": currency} for currency, amount in sorted(amounts.items())]


def _period(period) -> dict[str, str]:
    return {"start": period.start.isoformat(), "end": period.end.isoformat()}


def storage_facets(
    costs: list[dict[str, Any]],
    allocations: list[dict[str, Any]],
    period,
    source: str,
    status: str,
) -> dict[tuple[str, str], CostProviderStorageCostDatasetFacet]:
    """(namespace, name) -> facet, from the ledger's storage costs and allocations of the period."""
    facets: dict[tuple[str, str], CostProviderStorageCostDatasetFacet] = {}
    by_resource: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in costs:
        by_resource[(row["provider"], row["resource_id"])].append(row)
    for (provider, resource_id), rows in sorted(by_resource.items()):
        dataset = bucket_dataset(provider, resource_id)
        if dataset is None:
            continue
        totals: dict[str, Decimal] = defaultdict(Decimal)
        credits: dict[str, Decimal] = defaultdict(Decimal)
        classes: dict[tuple[str, str], dict[str, Any]] = {}
        stored_by_day: dict[dt.date, int] = defaultdict(int)
        for row in rows:
            totals[row["currency"]] += row["amount"]
            if row["credit"]:
                credits[row["currency"]] += row["credit"]
            entry = classes.setdefault(
                (row["usage_class"], row["currency"]),
                {"amount": Decimal(0), "quantity": Decimal(0), "units": set()},
            )
            entry["amount"] += row["amount"]
            if row["quantity"] is not None and row["unit"]:
                entry["quantity"] += row["quantity"]
                entry["units"].add(row["unit"])
            else:
                entry["units"].add(None)
            if row["storage_bytes"] is not None:
                stored_by_day[row["day"]] += row["storage_bytes"]
        usage_classes = []
        for (usage_class, currency), entry in sorted(classes.items()):
            item: dict[str, Any] = {
                "usageClass": usage_class,
                "amount": _number(entry["amount"]),
                "currency": currency,
            }
            if len(entry["units"]) == 1 and None not in entry["units"]:
                item.update(quantity=_number(entry["quantity"]), unit=next(iter(entry["units"])))
            usage_classes.append(item)
        facets[dataset] = CostProviderStorageCostDatasetFacet(
            period=_period(period),
            provider=provider,
            resourceId=resource_id,
            source=source,
            status=status,
            method="metered",
            totals=_money(totals),
            usageClasses=usage_classes,
            billingAccountIds=sorted({row["billing_account"] for row in rows if row["billing_account"]})
            or None,
            credits=_money(credits) or None,
            bytesStored=round(sum(stored_by_day.values()) / len(stored_by_day)) if stored_by_day else None,
        )
    facets.update(_allocated_facets(costs, allocations, period, source, status))
    return facets


def _allocated_facets(costs, allocations, period, source, status):
    storage_total: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in costs:
        if row["usage_class"] == "storage":
            storage_total[(row["provider"], row["resource_id"], row["currency"])] += row["amount"]
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for allocation in allocations:
        grouped[(allocation["dataset_namespace"], allocation["dataset_name"])].append(allocation)
    facets = {}
    for dataset, items in sorted(grouped.items()):
        first = items[0]
        amounts: dict[str, Decimal] = defaultdict(Decimal)
        for item in items:
            amounts[item["currency"]] += item["amount"]
        whole = storage_total.get((first["provider"], first["resource_id"], first["currency"]))
        share = float(amounts[first["currency"]] / whole) if whole else float(first["share"])
        days = {item["day"] for item in items}
        bucket = bucket_dataset(first["provider"], first["resource_id"])
        facets[dataset] = CostProviderStorageCostDatasetFacet(
            period=_period(period),
            provider=first["provider"],
            resourceId=first["resource_id"],
            source=source,
            status=status,
            method="allocated",
            totals=_money(amounts),
            usageClasses=[
                {"usageClass": "storage", "amount": _number(amount), "currency": currency}
                for currency, amount in sorted(amounts.items())
            ],
            billingAccountIds=sorted({i["billing_account"] for i in items if i["billing_account"]}) or None,
            bytesStored=round(sum(i["bytes"] for i in items) / len(days)),
            share=min(1.0, max(0.0, share)),
            allocatedFrom={"namespace": bucket[0], "name": bucket[1]} if bucket else None,
        )
    return facets


def storage_datasets(facets: dict[tuple[str, str], CostProviderStorageCostDatasetFacet]) -> list:
    """OpenLineage output datasets carrying the facet in `facets` (dataset facets)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    return [
        Dataset(namespace=namespace, name=name, facets={STORAGE_FACET_KEY: facet})
        for (namespace, name), facet in sorted(facets.items())
    ]
