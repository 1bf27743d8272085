"""Sample billing exports: realistic, deterministic, small, in every format the importers read.

Used by `scripts/generate_billing_exports.py`, by the `example_storage_sample` DAG (which needs no
cloud account) and by the tests. The model: a few buckets per cloud, each with daily storage in two
classes, requests, retrieval and three kinds of data transfer, priced from public list prices; a
promotional credit, a correction of an earlier day, tax, and services that are not storage (which an
import must skip). Version 2 of a delivery restates two days, as providers do when they re-issue
an export.

`large_focus_parquet` writes millions of rows with DuckDB for the import benchmark.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path

from airflow_cost_provider.billing import focus

COST_PLACES = Decimal("1e-10")  # CUR and FOCUS exports carry up to 10 decimal places
GIB = 2**30

AWS_PAYER = "123456789012"
AWS_LINKED = "210987654321"
GCP_BILLING_ACCOUNT = "01A2B3-C4D5E6-F7A8B9"
GCP_PROJECT = "acme-data"
AZURE_BILLING_ACCOUNT = "5e98e158-xxxx-xxxx-xxxx-c2a93a4bcb8e:0c7a6b3a-0bd7-4b64-8d3c-6a8e1b1f1f5d_2019-05-31"
AZURE_SUBSCRIPTION = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
AZURE_RESOURCE_GROUP = "rg-data"


@dataclass(frozen=True)
class UsageKind:
    """One priced usage type of a sample bucket."""

    usage_type: str  # AWS usage type, GCP SKU description, Azure meter name
    usage_class: str  # what the importer must classify it as
    unit: str  # the unit the quantity is in
    price: Decimal  # per unit
    daily: Decimal  # a typical day's quantity for a bucket of weight 1
    sku: str
    category: str = "Storage"  # Azure meter category / GCP and AWS product family


AWS_KINDS = (
    UsageKind(
        "TimedStorage-ByteHrs", "storage", "GB-Mo", Decimal("0.023"), Decimal("1500"), "WP9ANXZGBYYSGJEA"
    ),
    UsageKind(
        "TimedStorage-SIA-ByteHrs", "storage", "GB-Mo", Decimal("0.0125"), Decimal("800"), "7K4E3RG5Z6G3UJ3B"
    ),
    UsageKind(
        "Requests-Tier1", "requests", "Requests", Decimal("0.000005"), Decimal("120000"), "QCUF7GA2NQYRSJ3X"
    ),
    UsageKind(
        "Requests-Tier2", "requests", "Requests", Decimal("0.0000004"), Decimal("900000"), "5FQUFBWMJXRV6DYS"
    ),
    UsageKind("Retrieval-SIA", "retrieval", "GB", Decimal("0.01"), Decimal("40"), "XSNHDGPXZ3PAVMA9", "Fee"),
    UsageKind(
        "DataTransfer-Out-Bytes",
        "transfer_egress",
        "GB",
        Decimal("0.09"),
        Decimal("35"),
        "N9H5BSBWXN3WAKKB",
        "Data Transfer",
    ),
    UsageKind(
        "USE1-EUW1-AWS-Out-Bytes",
        "transfer_cross_region",
        "GB",
        Decimal("0.02"),
        Decimal("60"),
        "HQEH3ZWJVT5JHKZM",
        "Data Transfer",
    ),
    UsageKind(
        "DataTransfer-Regional-Bytes",
        "transfer_inter_service",
        "GB",
        Decimal("0.01"),
        Decimal("25"),
        "7U7TWP44UP36AT3R",
        "Data Transfer",
    ),
)
GCP_KINDS = (
    UsageKind(
        "Standard Storage US Multi-region",
        "storage",
        "byte-seconds",
        Decimal("0.026"),
        Decimal("900"),
        "E5F0-6A5D-7BAD",
    ),
    UsageKind(
        "Nearline Storage Iowa",
        "storage",
        "byte-seconds",
        Decimal("0.010"),
        Decimal("2500"),
        "7A2B-5B3A-4C8E",
    ),
    UsageKind(
        "Multi-Region Standard Class A Operations",
        "requests",
        "requests",
        Decimal("0.00001"),
        Decimal("40000"),
        "1A3A-AE9C-6FE2",
    ),
    UsageKind(
        "Multi-Region Standard Class B Operations",
        "requests",
        "requests",
        Decimal("0.0000004"),
        Decimal("600000"),
        "61A7-C7E1-0F5C",
    ),
    UsageKind(
        "Nearline Data Retrieval Iowa", "retrieval", "bytes", Decimal("0.01"), Decimal("15"), "0F4B-33C3-4A81"
    ),
    UsageKind(
        "Download Worldwide Destinations (excluding Asia & Australia)",
        "transfer_egress",
        "bytes",
        Decimal("0.12"),
        Decimal("20"),
        "22EB-AAE8-FBCD",
    ),
    UsageKind(
        "Network Data Transfer GCP Inter Region within Northern America",
        "transfer_cross_region",
        "bytes",
        Decimal("0.02"),
        Decimal("45"),
        "9B2D-3F7A-1E55",
    ),
    UsageKind(
        "Cloud CDN Cache Fill from Cloud Storage",
        "transfer_inter_service",
        "bytes",
        Decimal("0.04"),
        Decimal("10"),
        "C2F5-8E0D-3B71",
    ),
)
AZURE_KINDS = (
    UsageKind(
        "Hot LRS Data Stored",
        "storage",
        "1 GB/Month",
        Decimal("0.0171"),
        Decimal("1200"),
        "DZH318Z0BQ4M/0017",
    ),
    UsageKind(
        "Cool LRS Data Stored",
        "storage",
        "1 GB/Month",
        Decimal("0.0093"),
        Decimal("3000"),
        "DZH318Z0BQ4M/0019",
    ),
    UsageKind(
        "Hot Write Operations", "requests", "10K", Decimal("0.0505"), Decimal("30"), "DZH318Z0BQ4M/001A"
    ),
    UsageKind(
        "Hot Read Operations", "requests", "10K", Decimal("0.0041"), Decimal("250"), "DZH318Z0BQ4M/001B"
    ),
    UsageKind(
        "Cool Data Retrieval", "retrieval", "1 GB", Decimal("0.0092"), Decimal("50"), "DZH318Z0BQ4M/001C"
    ),
    UsageKind(
        "Standard Data Transfer Out",
        "transfer_egress",
        "1 GB",
        Decimal("0.0803"),
        Decimal("30"),
        "DZH318Z0BZ02/0001",
        "Bandwidth",
    ),
    UsageKind(
        "Geo-Replication v2 Data Transfer",
        "transfer_cross_region",
        "1 GB",
        Decimal("0.0185"),
        Decimal("70"),
        "DZH318Z0BQ4M/001D",
    ),
)


@dataclass(frozen=True)
class Bucket:
    provider: str
    name: str  # bucket, or storage account for Azure
    region: str
    weight: Decimal  # how big it is relative to the others

    @property
    def resource_id(self) -> str:
        if self.provider == "aws":
            return self.name
        if self.provider == "gcp":
            return f"projects/_/buckets/{self.name}"
        return (
            f"/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/{AZURE_RESOURCE_GROUP}"
            f"/providers/Microsoft.Storage/storageAccounts/{self.name}"
        )


BUCKETS = (
    Bucket("aws", "acme-raw-events", "us-east-1", Decimal("1.0")),
    Bucket("aws", "acme-curated", "us-east-1", Decimal("0.35")),
    Bucket("aws", "acme-logs-eu", "eu-west-1", Decimal("0.6")),
    Bucket("gcp", "acme-lake-us", "us", Decimal("1.0")),
    Bucket("gcp", "acme-ml-artifacts", "us-central1", Decimal("0.25")),
    Bucket("azure", "acmelake", "westeurope", Decimal("1.0")),
    Bucket("azure", "acmearchive", "northeurope", Decimal("0.4")),
)
CURRENCY = {"aws": "USD", "gcp": "USD", "azure": "EUR"}
ACCOUNT = {"aws": AWS_PAYER, "gcp": GCP_BILLING_ACCOUNT, "azure": AZURE_BILLING_ACCOUNT}
KINDS = {"aws": AWS_KINDS, "gcp": GCP_KINDS, "azure": AZURE_KINDS}
SERVICE = {
    "aws": ("AmazonS3", "Amazon Simple Storage Service"),
    "gcp": ("95FF-2EF5-5EA1", "Cloud Storage"),
    "azure": ("Storage", "Storage Accounts"),
}
PROVIDER_NAME = {"aws": "AWS", "gcp": "Google Cloud", "azure": "Microsoft"}


@dataclass(frozen=True)
class Charge:
    """One line of a sample export, before it is written in a given format."""

    provider: str
    billing_account: str
    start: dt.datetime
    end: dt.datetime
    service_code: str
    service_name: str
    service_category: str
    resource_id: str | None
    resource_name: str | None
    region: str
    usage_type: str
    sku: str
    meter_category: str
    unit: str
    quantity: Decimal
    unit_price: Decimal
    cost: Decimal
    list_cost: Decimal
    currency: str
    category: str = focus.USAGE  # FOCUS ChargeCategory
    charge_class: str | None = None
    expected_class: str | None = None  # None: not object storage, the importer must skip it
    description: str = ""
    credits: tuple[tuple[str, Decimal], ...] = ()  # GCP: credits carried on the usage row
    tags: tuple[tuple[str, str], ...] = ()  # the resource's tags or labels (besides team=data)

    @property
    def day(self) -> dt.date:
        return self.start.date()

    @property
    def is_storage(self) -> bool:
        return self.expected_class is not None

    def billed(self) -> Decimal:
        """What the charge adds to the bill, its credits included."""
        return self.cost + sum((amount for _, amount in self.credits), Decimal(0))


def _money(value: Decimal) -> Decimal:
    return value.quantize(COST_PLACES, rounding=ROUND_HALF_EVEN)


def _wiggle(*parts: object) -> Decimal:
    """A deterministic factor in [0.85, 1.15) so that days and buckets differ."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return Decimal("0.85") + Decimal(int.from_bytes(digest[:4], "big") % 30000) / Decimal(100000)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _quantity(bucket: Bucket, kind: UsageKind, day: dt.date, version: int) -> Decimal:
    """A day's quantity in the kind's unit."""
    base = kind.daily * bucket.weight * _wiggle(bucket.name, kind.usage_type, day)
    if version >= 2 and kind.usage_class == "transfer_egress" and bucket.weight == 1 and day.day % 7 == 1:
        base *= Decimal("1.25")  # the restated export revises this egress
    if kind.unit in ("GB-Mo", "1 GB/Month"):
        return (base / focus.days_in_month(day)).quantize(Decimal("1e-10"))  # GB held for one day
    if kind.unit == "byte-seconds":
        return (base * GIB * 86400).to_integral_value()  # GiB held for a day, in byte-seconds
    if kind.unit == "bytes":
        return (base * GIB).to_integral_value()
    if kind.unit in ("Requests", "requests"):
        return base.to_integral_value()
    return base.quantize(Decimal("1e-6"))


def _cost(kind: UsageKind, quantity: Decimal, day: dt.date) -> Decimal:
    if kind.unit == "byte-seconds":  # priced per GiB-month
        return _money(quantity / (GIB * 86400 * focus.days_in_month(day)) * kind.price)
    if kind.unit == "bytes":  # priced per GiB
        return _money(quantity / GIB * kind.price)
    return _money(quantity * kind.price)


def _storage_charge(bucket: Bucket, kind: UsageKind, day: dt.date, version: int) -> Charge:
    provider = bucket.provider
    quantity = _quantity(bucket, kind, day, version)
    cost = _cost(kind, quantity, day)
    region_prefix = "" if provider != "aws" or bucket.region == "us-east-1" else "EUW1-"
    usage_type = region_prefix + kind.usage_type if provider == "aws" else kind.usage_type
    code, name = SERVICE[provider]
    if provider == "azure" and kind.category == "Bandwidth":
        code, name = "Bandwidth", "Bandwidth"
    credits: tuple[tuple[str, Decimal], ...] = ()
    if provider == "gcp" and kind.usage_class == "storage" and bucket.weight == 1:
        credits = (("FreeTier", _money(-cost * Decimal("0.1"))),)
    return Charge(
        provider=provider,
        billing_account=ACCOUNT[provider],
        start=_midnight(day),
        end=_midnight(day + dt.timedelta(days=1)),
        service_code=code,
        service_name=name,
        service_category="Storage" if name != "Bandwidth" else "Networking",
        resource_id=bucket.resource_id,
        resource_name=bucket.name,
        region=bucket.region,
        usage_type=usage_type,
        sku=kind.sku,
        meter_category=kind.category,
        unit=kind.unit,
        quantity=quantity,
        unit_price=kind.price,
        cost=cost,
        list_cost=cost,
        currency=CURRENCY[provider],
        expected_class=kind.usage_class,
        description=f"{kind.price} {CURRENCY[provider]} per {kind.unit} for {kind.usage_type}",
        credits=credits,
    )


WORKER_TAGS = (("airflow-component", "worker"),)


def sample_run_id(service: str, day: dt.date) -> str:
    """The OpenLineage run id of the sample job a service ran that day (a job the project tagged)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://example.com/sample-runs/{service}/{day}"))


def _job_tags(service: str, dag_id: str, day: dt.date) -> tuple[tuple[str, str], ...]:
    return (("openlineage_run_id", sample_run_id(service, day)), ("airflow_dag_id", dag_id))


def _other_service_charges(provider: str, day: dt.date) -> list[Charge]:
    """Charges that are not object storage: a storage import skips and counts them, an import of the
    whole bill keeps them (workers tagged `airflow-component=worker`, jobs with their run's tags)."""
    tags: dict[str, tuple[tuple[str, str], ...]] = {
        "i-0a1b2c3d4e5f60718": WORKER_TAGS,
        "arn:aws:glue:us-east-1:123456789012:job/orders_etl": _job_tags("glue", "example_glue", day),
        f"/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/{AZURE_RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/etl-1": WORKER_TAGS,
        "projects/acme-data": _job_tags("bigquery", "example_bigquery", day),
    }
    catalogue = {
        "aws": [
            (
                "AmazonEC2",
                "Amazon Elastic Compute Cloud",
                "Compute",
                "i-0a1b2c3d4e5f60718",
                "BoxUsage:m5.large",
                "Hrs",
                "24",
                "0.096",
            ),
            (
                "AmazonEC2",
                "Amazon Elastic Compute Cloud",
                "Compute",
                "i-0f9e8d7c6b5a49382",
                "BoxUsage:m5.large",
                "Hrs",
                "24",
                "0.096",
            ),
            (
                "AWSGlue",
                "AWS Glue",
                "Analytics",
                "arn:aws:glue:us-east-1:123456789012:job/orders_etl",
                "USE1-ETL-DPU-Hour",
                "DPU-Hour",
                "6.5",
                "0.44",
            ),
            (
                "AmazonAthena",
                "Amazon Athena",
                "Analytics",
                "arn:aws:athena:us-east-1:123456789012:workgroup/analytics",
                "USE1-DataScannedInTB",
                "Terabytes",
                "0.42",
                "5",
            ),
            (
                "ElasticMapReduce",
                "Amazon EMR",
                "Analytics",
                "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-2AXXXXXXGAPLF",
                "BoxUsage:m5.xlarge",
                "Hrs",
                "72",
                "0.048",
            ),
            (
                "AmazonRDS",
                "Amazon Relational Database Service",
                "Databases",
                "arn:aws:rds:us-east-1:123456789012:db:orders",
                "InstanceUsage:db.r6g.large",
                "Hrs",
                "24",
                "0.225",
            ),
        ],
        "gcp": [
            (
                "6F81-5844-456A",
                "Compute Engine",
                "Compute",
                "projects/acme-data/zones/us-central1-a/instances/etl-1",
                "N1 Predefined Instance Core running in Americas",
                "seconds",
                "86400",
                "0.0000087972",
            ),
            (
                "24E6-581D-38E5",
                "BigQuery",
                "Analytics",
                "projects/acme-data",
                "Analysis",
                "bytes",
                "1099511627776",
                "0.0000000000056843",
            ),
        ],
        "azure": [
            (
                "Virtual Machines",
                "Virtual Machines",
                "Compute",
                f"/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/{AZURE_RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/etl-1",
                "D2s v3",
                "1 Hour",
                "24",
                "0.1051",
            ),
        ],
    }
    charges = []
    for code, name, category, resource, usage_type, unit, quantity, price in catalogue[provider]:
        q = Decimal(quantity)
        cost = _money(q * Decimal(price))
        charges.append(
            Charge(
                provider=provider,
                billing_account=ACCOUNT[provider],
                start=_midnight(day),
                end=_midnight(day + dt.timedelta(days=1)),
                service_code=code,
                service_name=name,
                service_category=category,
                resource_id=resource,
                resource_name=resource.rsplit("/", 1)[-1] if resource else None,
                region="us-east-1"
                if provider == "aws"
                else ("us-central1" if provider == "gcp" else "westeurope"),
                usage_type=usage_type,
                sku=hashlib.sha1(usage_type.encode()).hexdigest()[:16].upper(),
                meter_category=category,
                unit=unit,
                quantity=q,
                unit_price=Decimal(price),
                cost=cost,
                list_cost=cost,
                currency=CURRENCY[provider],
                description=f"{price} per {unit} for {usage_type}",
                tags=tags.get(resource or "", ()),
            )
        )
    return charges


def sample_charges(
    start: dt.date,
    days: int,
    version: int = 1,
    providers: Iterable[str] = focus.PROVIDERS,
) -> list[Charge]:
    """Every charge of the sample buckets for `days` days from `start`.

    Version 2 restates the data: some egress is revised, and one request charge disappears.
    """
    providers = tuple(providers)
    charges: list[Charge] = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        for bucket in BUCKETS:
            if bucket.provider not in providers:
                continue
            for kind in KINDS[bucket.provider]:
                if (
                    version >= 2
                    and offset == 1
                    and bucket.name == "acme-curated"
                    and kind.usage_type == "Requests-Tier2"
                ):
                    continue  # withdrawn in the restated export
                charges.append(_storage_charge(bucket, kind, day, version))
        for provider in providers:
            charges.extend(_other_service_charges(provider, day))
            charges.extend(_credits_and_corrections(provider, day, start, offset))
    return charges


def _credits_and_corrections(provider: str, day: dt.date, start: dt.date, offset: int) -> list[Charge]:
    """A promotional credit every day (AWS, Azure; GCP carries its credits on the usage rows), tax
    (AWS), and on the third day a correction of the first day's storage of the biggest bucket."""
    bucket = next(b for b in BUCKETS if b.provider == provider and b.weight == 1)
    kind = KINDS[provider][0]
    base = _storage_charge(bucket, kind, day, 1)
    extra = []
    if provider in ("aws", "azure"):
        amount = _money(-base.cost * Decimal("0.05"))
        extra.append(
            replace(
                base,
                category=focus.CREDIT,
                quantity=Decimal(0),
                cost=amount,
                list_cost=Decimal(0),
                usage_type=base.usage_type,
                description="Promotional credit",
            )
        )
    if provider == "aws":
        tax = _money(base.cost * Decimal("0.0825"))
        extra.append(
            replace(
                base,
                category=focus.TAX,
                expected_class="tax",
                quantity=Decimal(0),
                cost=tax,
                list_cost=Decimal(0),
                usage_type="Tax",
                sku="",
                unit="",
                description="Sales tax",
            )
        )
    if offset == 2:
        first = _storage_charge(bucket, kind, start, 1)
        extra.append(
            replace(
                first,
                charge_class=focus.CORRECTION,
                category=focus.USAGE,
                quantity=-(first.quantity * Decimal("0.02")).quantize(Decimal("1e-10")),
                cost=_money(-first.cost * Decimal("0.02")),
                list_cost=_money(-first.cost * Decimal("0.02")),
                credits=(),
                description="Correction of metered storage",
            )
        )
    return extra


# ---------------------------------------------------------------- writers

FOCUS_COLUMNS = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
AZURE_EXTRA_COLUMNS = ("x_SkuMeterCategory", "x_SkuMeterSubcategory", "x_SkuMeterName", "x_ResourceType")


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _focus_rows(charges: list[Charge]) -> list[dict[str, str]]:
    rows = []
    for c in charges:
        month = c.start.replace(day=1)
        next_month = (month + dt.timedelta(days=32)).replace(day=1)
        usage = c.category == focus.USAGE
        base = {
            "AvailabilityZone": "",
            "BillingAccountId": c.billing_account,
            "BillingAccountName": f"{PROVIDER_NAME[c.provider]} billing account",
            "BillingCurrency": c.currency,
            "BillingPeriodEnd": _iso(next_month),
            "BillingPeriodStart": _iso(month),
            "ChargeClass": c.charge_class or "",
            "ChargeDescription": c.description,
            "ChargeFrequency": "Usage-Based" if usage else "One-Time",
            "ChargePeriodEnd": _iso(c.end),
            "ChargePeriodStart": _iso(c.start),
            "CommitmentDiscountCategory": "",
            "CommitmentDiscountId": "",
            "CommitmentDiscountName": "",
            "CommitmentDiscountStatus": "",
            "CommitmentDiscountType": "",
            "ConsumedQuantity": _number(c.quantity) if usage else "",
            "ConsumedUnit": c.unit if usage else "",
            "ContractedUnitPrice": _number(c.unit_price) if usage else "",
            "InvoiceIssuerName": PROVIDER_NAME[c.provider],
            "ListUnitPrice": _number(c.unit_price) if usage else "",
            "PricingCategory": "Standard" if usage else "",
            "PricingQuantity": _number(c.quantity) if usage else "",
            "PricingUnit": c.unit if usage else "",
            "ProviderName": PROVIDER_NAME[c.provider],
            "PublisherName": PROVIDER_NAME[c.provider],
            "RegionId": c.region,
            "RegionName": c.region,
            "ResourceId": c.resource_id or "",
            "ResourceName": c.resource_name or "",
            "ResourceType": "Bucket" if c.is_storage else "",
            "ServiceCategory": c.service_category,
            "ServiceName": c.service_name,
            "SkuId": "" if c.category == focus.TAX else c.sku,
            "SkuPriceId": f"{c.sku}.{c.region}" if usage and c.sku else "",
            "SubAccountId": AWS_LINKED
            if c.provider == "aws"
            else (GCP_PROJECT if c.provider == "gcp" else AZURE_SUBSCRIPTION),
            "SubAccountName": "data platform",
            "Tags": json.dumps({"team": "data", **dict(c.tags)}),
            "x_UsageType": c.usage_type,
        }
        rows.append(
            {
                **base,
                "ChargeCategory": c.category,
                "BilledCost": _number(c.cost),
                "EffectiveCost": _number(c.cost),
                "ListCost": _number(c.list_cost),
                "ContractedCost": _number(c.list_cost),
            }
        )
        for name, amount in c.credits:  # FOCUS puts a credit on its own row
            rows.append(
                {
                    **base,
                    "ChargeCategory": focus.CREDIT,
                    "ChargeDescription": f"{name} credit",
                    "ChargeFrequency": "One-Time",
                    "ConsumedQuantity": "",
                    "ConsumedUnit": "",
                    "ContractedUnitPrice": "",
                    "ListUnitPrice": "",
                    "PricingCategory": "",
                    "PricingQuantity": "",
                    "PricingUnit": "",
                    "SkuPriceId": "",
                    "BilledCost": _number(amount),
                    "EffectiveCost": _number(amount),
                    "ListCost": "0",
                    "ContractedCost": "0",
                }
            )
    return rows


def _azure_columns(row: dict[str, str], charge: Charge) -> dict[str, str]:
    return {
        **row,
        "x_SkuMeterCategory": charge.meter_category,
        "x_SkuMeterSubcategory": "Tiered Block Blob"
        if charge.meter_category == "Storage"
        else charge.meter_category,
        "x_SkuMeterName": charge.usage_type,
        "x_ResourceType": "microsoft.storage/storageaccounts" if charge.is_storage else "",
        # Azure's cost exports write the tags object without its braces
        "Tags": json.dumps({"team": "data", **dict(charge.tags)})[1:-1],
    }


def _write_csv(
    path: Path, rows: list[dict[str, str]], columns: list[str], gzip_it: bool, bom: bool = False
) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    data = ("\ufeff" if bom else "") + buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzip_it:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(data)
    else:
        path.write_text(data, encoding="utf-8", newline="")


_FOCUS_TYPES = {
    "BilledCost": "decimal",
    "EffectiveCost": "decimal",
    "ListCost": "decimal",
    "ContractedCost": "decimal",
    "ConsumedQuantity": "decimal",
    "PricingQuantity": "decimal",
    "ListUnitPrice": "decimal",
    "ContractedUnitPrice": "decimal",
    "BillingPeriodStart": "timestamp",
    "BillingPeriodEnd": "timestamp",
    "ChargePeriodStart": "timestamp",
    "ChargePeriodEnd": "timestamp",
    "Tags": "map",
}


def _write_parquet(path: Path, rows: list[dict[str, str]], columns: list[str], types: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name in columns:
        values = [row.get(name, "") for row in rows]
        kind = types.get(name)
        if kind == "decimal":
            places, wide = Decimal("1e-16"), Context(prec=60)
            arrays[name] = pa.array(
                [Decimal(v).quantize(places, context=wide) if v != "" else None for v in values],
                pa.decimal128(38, 16),
            )
        elif kind == "timestamp":
            arrays[name] = pa.array(
                [
                    dt.datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
                    if v
                    else None
                    for v in values
                ],
                pa.timestamp("ms", tz="UTC"),
            )
        elif kind == "map":  # JSON text -> MAP(string, string), as Parquet exports hold tags
            arrays[name] = pa.array(
                [list(json.loads(v).items()) if v else None for v in values],
                pa.map_(pa.string(), pa.string()),
            )
        elif kind == "double":
            arrays[name] = pa.array([float(v) if v != "" else None for v in values], pa.float64())
        else:
            arrays[name] = pa.array([v if v != "" else None for v in values], pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)


def write_focus(charges: list[Charge], path: Path, file_format: str = "csv") -> Path:
    """A FOCUS 1.0 export (plus x_UsageType) of the charges: csv, csv.gz or parquet."""
    rows = _focus_rows(charges)
    columns = [*FOCUS_COLUMNS, "x_UsageType"]
    if file_format == "parquet":
        _write_parquet(path, rows, columns, _FOCUS_TYPES)
    else:
        _write_csv(path, rows, columns, gzip_it=file_format == "csv.gz")
    return path


def write_azure_focus(charges: list[Charge], path: Path, file_format: str = "csv") -> Path:
    """An Azure Cost Management FocusCost export: FOCUS columns plus Azure's x_Sku* columns; CSV with a
    byte-order mark, as Azure writes it."""
    azure = [c for c in charges if c.provider == "azure"]
    rows = []
    for charge in azure:
        for row in _focus_rows([charge]):
            rows.append(_azure_columns(row, charge))
    columns = [*FOCUS_COLUMNS, *AZURE_EXTRA_COLUMNS]
    if file_format == "parquet":
        _write_parquet(path, rows, columns, {**_FOCUS_TYPES, "Tags": "text"})
    else:
        _write_csv(path, rows, columns, gzip_it=file_format == "csv.gz", bom=True)
    return path


CUR_COLUMNS = (
    "bill_bill_type",
    "bill_billing_entity",
    "bill_billing_period_start_date",
    "bill_billing_period_end_date",
    "bill_invoice_id",
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_operation",
    "line_item_resource_id",
    "line_item_usage_amount",
    "line_item_currency_code",
    "line_item_unblended_rate",
    "line_item_unblended_cost",
    "line_item_blended_cost",
    "line_item_line_item_description",
    "pricing_public_on_demand_cost",
    "pricing_unit",
    "product_sku",
    "product_region_code",
    "product_servicecode",
    "product_product_family",
    "resource_tags",
)
_CUR_TYPES = {
    "line_item_usage_amount": "double",
    "line_item_unblended_cost": "double",
    "line_item_blended_cost": "double",
    "pricing_public_on_demand_cost": "double",
    "bill_billing_period_start_date": "timestamp",
    "bill_billing_period_end_date": "timestamp",
    "line_item_usage_start_date": "timestamp",
    "line_item_usage_end_date": "timestamp",
    "resource_tags": "map",
}
_CUR_LINE_TYPES = {focus.USAGE: "Usage", focus.CREDIT: "Credit", focus.TAX: "Tax"}


def cur_rows(charges: list[Charge]) -> list[dict[str, str]]:
    rows = []
    for c in charges:
        if c.provider != "aws":
            continue
        month = c.start.replace(day=1)
        next_month = (month + dt.timedelta(days=32)).replace(day=1)
        correction = c.charge_class == focus.CORRECTION
        rows.append(
            {
                "bill_bill_type": "Refund" if correction else "Anniversary",
                "bill_billing_entity": "AWS",
                "bill_billing_period_start_date": _iso(month),
                "bill_billing_period_end_date": _iso(next_month),
                "bill_invoice_id": "",
                "bill_payer_account_id": c.billing_account,
                "line_item_usage_account_id": AWS_LINKED,
                "line_item_line_item_type": "Refund" if correction else _CUR_LINE_TYPES[c.category],
                "line_item_usage_start_date": _iso(c.start),
                "line_item_usage_end_date": _iso(c.end),
                "line_item_product_code": c.service_code,
                "line_item_usage_type": c.usage_type,
                "line_item_operation": "StandardStorage" if c.expected_class == "storage" else "",
                "line_item_resource_id": c.resource_id or "",
                "line_item_usage_amount": _number(c.quantity),
                "line_item_currency_code": c.currency,
                "line_item_unblended_rate": _number(c.unit_price),
                "line_item_unblended_cost": _number(c.cost),
                "line_item_blended_cost": _number(c.cost),
                "line_item_line_item_description": c.description,
                "pricing_public_on_demand_cost": _number(c.list_cost),
                "pricing_unit": c.unit,
                "product_sku": c.sku,
                "product_region_code": c.region,
                "product_servicecode": c.service_code,
                "product_product_family": c.meter_category,
                # CUR 2.0 names user tags user_<key>
                "resource_tags": json.dumps({f"user_{k}": v for k, v in c.tags}) if c.tags else "",
            }
        )
    return rows


def write_cur(charges: list[Charge], path: Path, file_format: str = "parquet") -> Path:
    """An AWS CUR 2.0 (Data Exports) file: parquet (costs as doubles, as AWS writes them) or csv.gz."""
    rows = cur_rows(charges)
    if file_format == "parquet":
        _write_parquet(path, rows, list(CUR_COLUMNS), _CUR_TYPES)
    else:
        _write_csv(path, rows, list(CUR_COLUMNS), gzip_it=file_format == "csv.gz")
    return path


def gcp_export_records(charges: list[Charge], detailed: bool = True) -> list[dict]:
    """Rows of the BigQuery billing export (standard, or detailed with `resource`), as JSON objects."""
    records = []
    for c in charges:
        if c.provider != "gcp":
            continue
        correction = c.charge_class == focus.CORRECTION
        pricing_unit = {"byte-seconds": "gibibyte month", "bytes": "gibibyte", "requests": "count"}.get(
            c.unit, c.unit
        )
        in_pricing_units = {
            "byte-seconds": c.quantity / (GIB * 86400 * focus.days_in_month(c.day)),
            "bytes": c.quantity / GIB,
        }.get(c.unit, c.quantity)
        record = {
            "billing_account_id": c.billing_account,
            "service": {"id": c.service_code, "description": c.service_name},
            "sku": {"id": c.sku, "description": c.usage_type},
            "usage_start_time": c.start.isoformat(),
            "usage_end_time": c.end.isoformat(),
            "project": {"id": GCP_PROJECT, "number": "123456789", "name": GCP_PROJECT},
            "labels": [{"key": "team", "value": "data"}, *({"key": k, "value": v} for k, v in c.tags)],
            "location": {"location": c.region, "country": "US", "region": c.region, "zone": None},
            "export_time": (c.end + dt.timedelta(hours=6)).isoformat(),
            "cost": float(c.cost),
            "currency": c.currency,
            "currency_conversion_rate": 1.0,
            "usage": {
                "amount": float(c.quantity),
                "unit": c.unit,
                "amount_in_pricing_units": float(in_pricing_units),
                "pricing_unit": pricing_unit,
            },
            "credits": [
                {
                    "name": name,
                    "amount": float(amount),
                    "full_name": name,
                    "id": f"credit-{name}",
                    "type": "PROMOTION",
                }
                for name, amount in c.credits
            ],
            "invoice": {"month": c.start.strftime("%Y%m")},
            "cost_type": "adjustment" if correction else "regular",
            "adjustment_info": (
                {
                    "id": "adj-1",
                    "description": "Correction of metered storage",
                    "mode": "PARTIAL_CORRECTION",
                    "type": "USAGE_CORRECTION",
                }
                if correction
                else None
            ),
        }
        if detailed:
            record["resource"] = {
                "name": c.resource_id,
                "global_name": f"//storage.googleapis.com/{c.resource_id}" if c.resource_id else None,
            }
        records.append(record)
    return records


def write_gcp_export(
    charges: list[Charge], path: Path, file_format: str = "jsonl", detailed: bool = True
) -> Path:
    """The BigQuery billing export as files (what `bq extract` writes): newline-delimited JSON or
    Parquet with its nested columns."""
    records = gcp_export_records(charges, detailed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if file_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records)
        for name in ("usage_start_time", "usage_end_time", "export_time"):
            index = table.schema.get_field_index(name)
            column = pa.array(
                [dt.datetime.fromisoformat(r[name]) for r in records], pa.timestamp("us", tz="UTC")
            )
            table = table.set_column(index, name, column)
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- what the tests and the sample DAG expect


def expected_totals(charges: Iterable[Charge]) -> dict[tuple, Decimal]:
    """(provider, resource_id, day, usage class, currency) -> billed amount, computed from the model."""
    totals: dict[tuple, Decimal] = {}
    for c in charges:
        if not c.is_storage:
            continue
        resource = c.resource_id.lower() if c.provider == "azure" else c.resource_id
        key = (c.provider, resource, c.day, c.expected_class, c.currency)
        totals[key] = totals.get(key, Decimal(0)) + c.billed()
    return totals


def write_sample_exports(
    directory: Path, start: dt.date, days: int, version: int = 1
) -> dict[str, list[Path]]:
    """Write one delivery in each format to `directory`: what the sample DAG and the demo import."""
    charges = sample_charges(start, days, version)
    stamp = f"{start:%Y%m%d}-{days}d-v{version}"
    written = {
        "focus": [write_focus(charges, directory / "focus" / f"focus-{stamp}.csv")],
        "aws-cur": [write_cur(charges, directory / "aws-cur" / f"cur2-{stamp}.parquet")],
        "gcp-billing-export": [write_gcp_export(charges, directory / "gcp" / f"gcp-billing-{stamp}.jsonl")],
        "azure-export": [write_azure_focus(charges, directory / "azure" / f"focuscost-{stamp}.csv")],
    }
    return written


# ---------------------------------------------------------------- a large FOCUS file for the benchmark


def large_focus_parquet(
    path: Path, rows: int, start: dt.date = dt.date(2026, 1, 1), buckets: int = 2000
) -> Path:
    """`rows` FOCUS rows of hourly S3 charges of `buckets` buckets x the eight AWS usage kinds (several
    line items per hour, as per-operation rows are), 25 % other services (worker instances tagged with
    a run id per day) and 1 % credits, over the month from `start`. Written by DuckDB in row groups,
    so memory stays flat."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = ", ".join(
        f"({index}, '{k.usage_type}', '{k.unit}', {k.price}, '{k.sku}')" for index, k in enumerate(AWS_KINDS)
    )
    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute("SET TimeZone = 'UTC'")
    literal = "'" + str(path).replace("'", "''") + "'"
    con.execute(
        f"""
COPY (
  WITH kinds(k, usage_type, unit, price, sku) AS (VALUES {kinds}),
  base AS (
    SELECT i,
      (i // 3) % 4 = 3 AS other_service,
      i % 100 = 7 AS credit,
      CAST(i % {len(AWS_KINDS)} AS INTEGER) AS k,
      'lake-bucket-' || lpad(CAST((i // 8) % {buckets} AS VARCHAR), 5, '0') AS bucket,
      TIMESTAMPTZ '{start} 00:00:00+00' + to_hours(CAST((i // ({buckets} * 8)) % (24 * 28) AS INTEGER)) AS hour,
      CAST(((hash(i) % 100000) + 1) AS DECIMAL(18,0)) / 1000 AS quantity
    FROM range({rows}) AS r(i)
  )
  SELECT
    CAST(CASE WHEN credit THEN -round(quantity * price * 0.05, 10) ELSE round(quantity * price, 10) END AS DECIMAL(38,10)) AS BilledCost,
    '{AWS_PAYER}' AS BillingAccountId,
    'USD' AS BillingCurrency,
    CASE WHEN credit THEN 'Credit' ELSE 'Usage' END AS ChargeCategory,
    CAST(NULL AS VARCHAR) AS ChargeClass,
    hour + INTERVAL 1 HOUR AS ChargePeriodEnd,
    hour AS ChargePeriodStart,
    CAST(CASE WHEN credit THEN NULL ELSE quantity END AS DECIMAL(38,10)) AS ConsumedQuantity,
    CASE WHEN credit THEN NULL ELSE unit END AS ConsumedUnit,
    CAST(round(quantity * price, 10) AS DECIMAL(38,10)) AS EffectiveCost,
    CAST(round(quantity * price, 10) AS DECIMAL(38,10)) AS ListCost,
    'AWS' AS ProviderName,
    'us-east-1' AS RegionId,
    CASE WHEN other_service THEN 'i-' || substr(md5(bucket), 1, 17) ELSE bucket END AS ResourceId,
    CASE WHEN other_service THEN 'Compute' ELSE 'Storage' END AS ServiceCategory,
    CASE WHEN other_service THEN 'Amazon Elastic Compute Cloud' ELSE 'Amazon Simple Storage Service' END AS ServiceName,
    sku AS SkuId,
    CASE WHEN other_service THEN 'BoxUsage:m5.large' ELSE usage_type END AS x_UsageType,
    CASE WHEN other_service
      THEN '{{"airflow-component": "worker", "openlineage_run_id": "' || md5(CAST(CAST(hour AS DATE) AS VARCHAR)) || '"}}'
      ELSE '{{"team": "data"}}' END AS Tags
  FROM base JOIN kinds USING (k)
) TO {literal} (FORMAT parquet, ROW_GROUP_SIZE 1000000)
"""
    )
    con.close()
    return path
