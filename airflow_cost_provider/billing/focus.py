"""The FOCUS-shaped row every billing source is normalised to, and what we derive from it.

FOCUS (FinOps Open Cost and Usage Specification, https://focus.finops.org) names the columns; the
columns we add are prefixed `x_`, as the specification asks of vendor columns. Sources that read
files map their columns to these names in SQL; sources that call an API build `FocusRow`s.

Also here, because every source shares them: which services are object storage, which usage class a
charge belongs to, and how many bytes a storage charge stands for.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, fields
from decimal import Decimal

# ---------------------------------------------------------------- column names

BILLED_COST = "BilledCost"
EFFECTIVE_COST = "EffectiveCost"
LIST_COST = "ListCost"
BILLING_CURRENCY = "BillingCurrency"
BILLING_ACCOUNT_ID = "BillingAccountId"
CHARGE_PERIOD_START = "ChargePeriodStart"
CHARGE_PERIOD_END = "ChargePeriodEnd"
CHARGE_CATEGORY = "ChargeCategory"
CHARGE_CLASS = "ChargeClass"
SERVICE_NAME = "ServiceName"
SERVICE_CATEGORY = "ServiceCategory"
PROVIDER_NAME = "ProviderName"
RESOURCE_ID = "ResourceId"
REGION_ID = "RegionId"
SKU_ID = "SkuId"
CONSUMED_QUANTITY = "ConsumedQuantity"
CONSUMED_UNIT = "ConsumedUnit"
TAGS = "Tags"
# ours
X_PROVIDER = "x_Provider"  # aws | gcp | azure
X_USAGE_TYPE = "x_UsageType"  # the platform's usage type, SKU description or meter name

# The exact type every amount and quantity is summed in: 12 decimal places keep sub-nano precision
# per row (amounts are rounded once, to the nano-unit, after summing) and read float artefacts such
# as 0.00041632453999999996 as the number that was meant.
DECIMAL_TYPE = "DECIMAL(38,12)"

PROVIDERS = ("aws", "gcp", "azure")

# FOCUS ChargeCategory values (1.0: Adjustment, Credit, Purchase, Tax, Usage) and the one ChargeClass.
USAGE = "Usage"
CREDIT = "Credit"
ADJUSTMENT = "Adjustment"
PURCHASE = "Purchase"
TAX = "Tax"
CORRECTION = "Correction"


@dataclass(frozen=True)
class FocusRow:
    """One normalised charge, as API sources produce it (file sources do the same mapping in SQL)."""

    BillingAccountId: str
    BilledCost: Decimal
    BillingCurrency: str
    ChargePeriodStart: dt.datetime
    ChargePeriodEnd: dt.datetime
    ChargeCategory: str = USAGE
    ChargeClass: str | None = None
    ServiceName: str | None = None
    ServiceCategory: str | None = "Storage"
    ResourceId: str | None = None
    RegionId: str | None = None
    SkuId: str | None = None
    ConsumedQuantity: Decimal | None = None
    ConsumedUnit: str | None = None
    EffectiveCost: Decimal | None = None
    ListCost: Decimal | None = None
    x_Provider: str | None = None
    x_UsageType: str | None = None
    Tags: str | None = None  # JSON text: an object, or a list of {key, value} (GCP labels)


FOCUS_ROW_COLUMNS = tuple(field.name for field in fields(FocusRow))


# the DuckDB type of each FocusRow field, for API rows loaded into the same SQL as files
FOCUS_ROW_TYPES = {
    name: (
        DECIMAL_TYPE
        if name in ("BilledCost", "ConsumedQuantity", "EffectiveCost", "ListCost")
        else "TIMESTAMPTZ"
        if name in ("ChargePeriodStart", "ChargePeriodEnd")
        else "VARCHAR"
    )
    for name in FOCUS_ROW_COLUMNS
}


# ---------------------------------------------------------------- providers and storage services

_PROVIDER_NAMES = {
    "aws": "aws",
    "amazon web services": "aws",
    "amazon": "aws",
    "google cloud": "gcp",
    "google cloud platform": "gcp",
    "google": "gcp",
    "gcp": "gcp",
    "microsoft": "azure",
    "microsoft azure": "azure",
    "azure": "azure",
}


def provider_of(name: str | None) -> str | None:
    """aws | gcp | azure from a FOCUS ProviderName (or our own code), None when unknown."""
    return _PROVIDER_NAMES.get((name or "").strip().lower())


# ServiceName values of object storage across the three clouds' FOCUS data and their own exports.
STORAGE_SERVICE_NAMES = (
    "Amazon Simple Storage Service",
    "Amazon S3",
    "Amazon S3 Glacier",
    "Amazon Glacier",
    "Cloud Storage",
    "Storage Accounts",
    "Storage",
    "Azure Blob Storage",
    "Azure Data Lake Storage",
    "Azure Storage",
)
# Azure books data transfer of a storage account under other services (Bandwidth): the resource says
# it is a storage account.
AZURE_STORAGE_ACCOUNT_MARKER = "/providers/microsoft.storage/storageaccounts/"


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def storage_services_sql(column: str, services: tuple[str, ...] = STORAGE_SERVICE_NAMES) -> str:
    return f"{column} IN ({', '.join(sql_text(name) for name in services)})"


# ---------------------------------------------------------------- usage classes

STORAGE = "storage"
REQUESTS = "requests"
RETRIEVAL = "retrieval"
TRANSFER_EGRESS = "transfer_egress"
TRANSFER_CROSS_REGION = "transfer_cross_region"
TRANSFER_INTER_SERVICE = "transfer_inter_service"
TAX_CLASS = "tax"
COMMITMENT = "commitment"
OTHER = "other"
USAGE_CLASSES = (
    STORAGE,
    REQUESTS,
    RETRIEVAL,
    TRANSFER_EGRESS,
    TRANSFER_CROSS_REGION,
    TRANSFER_INTER_SERVICE,
    TAX_CLASS,
    COMMITMENT,
    OTHER,
)

# First match wins. The text is the usage type / SKU description / meter name and the unit,
# lower-cased: AWS `USE1-TimedStorage-ByteHrs`, GCP `Standard Storage US Multi-region`, Azure
# `Hot LRS Data Stored`. Transfer comes before storage: AWS transfer types end in "-Bytes".
_CLASS_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        TRANSFER_CROSS_REGION,
        re.compile(
            r"inter[- ]?region|cross[- ]?region|inter[- ]continent|intra[- ]continent|replication"
            r"|(^|[^a-z0-9])[a-z0-9]{2,5}-[a-z0-9]{2,5}-aws-(in|out)-bytes|s3rtc|egress between"
            r"|egress within"
        ),
    ),
    (
        TRANSFER_INTER_SERVICE,
        re.compile(
            r"cloudfront|\bcdn\b|cache fill|datatransfer-regional|regional-bytes|to google services"
            r"|c3datatransfer|private ?link|inter[- ]?zone|inter-az"
        ),
    ),
    (OTHER, re.compile(r"datatransfer-in-bytes|data transfer in\b|ingress")),
    (
        TRANSFER_EGRESS,
        re.compile(
            r"datatransfer-out|data transfer out|transfer out|download|internet egress|egress|bandwidth"
            r"|-out-bytes"
        ),
    ),
    (RETRIEVAL, re.compile(r"retrieval|restore|select-(returned|scanned)")),
    (
        REQUESTS,
        re.compile(r"request|operation|class [ab]\b|tier\d|data write|api call|transaction"),
    ),
    (
        STORAGE,
        re.compile(
            r"timedstorage|storage|byte-?hrs|data stored|early ?delete|gb-mo|gb/month|gibibyte month"
            r"|byte-seconds"
        ),
    ),
)


def usage_class(usage_type: str | None, unit: str | None, charge_category: str | None) -> str:
    """The usage class of a storage charge: storage, requests, retrieval, transfer_egress,
    transfer_cross_region, transfer_inter_service, tax, commitment or other."""
    if charge_category == TAX:
        return TAX_CLASS
    if charge_category == PURCHASE:
        return COMMITMENT
    text = f"{usage_type or ''} | {unit or ''}".lower()
    for name, pattern in _CLASS_RULES:
        if pattern.search(text):
            return name
    return OTHER


# ---------------------------------------------------------------- bytes stored

GIB = 2**30
TIB = 2**40


def _unit_key(unit: str) -> str:
    return re.sub(r"[\s_]+", "", unit.strip().lower()).removeprefix("1")


# unit -> (bytes per unit, how the period is expressed: "month", "second", "hour" or "day")
_STORAGE_TIME_UNITS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(
        ("gb-mo", "gb-month", "gb-months", "gb/month", "gbmonth", "gib-month", "gib-mo", "gibibytemonth"),
        (GIB, "month"),
    ),
    **dict.fromkeys(
        ("gibibytemonths", "gibibyte-month", "gb-mon", "gbmo", "gb/mo"),
        (GIB, "month"),
    ),
    **dict.fromkeys(("tb-mo", "tb-month", "tb/month", "tib-month", "tebibytemonth"), (TIB, "month")),
    **dict.fromkeys(("byte-seconds", "byte-second", "bytesecond", "byteseconds"), (1, "second")),
    **dict.fromkeys(("byte-hours", "bytehrs", "byte-hrs", "bytehours"), (1, "hour")),
    **dict.fromkeys(
        ("gibibytehour", "gibibytehours", "gb-hour", "gb-hours", "gb-hr", "gb-hrs", "gib-hour"), (GIB, "hour")
    ),
    **dict.fromkeys(("gibibyteday", "gb-day", "gb-days", "gib-day"), (GIB, "day")),
}


def days_in_month(day: dt.date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def storage_unit(unit: str | None) -> tuple[int, str] | None:
    """(bytes per unit, period: month, second, hour or day) of a unit of data stored over time."""
    return _STORAGE_TIME_UNITS.get(_unit_key(unit)) if unit else None


def bytes_stored(quantity: Decimal | None, unit: str | None, day: dt.date) -> Decimal | None:
    """The average bytes stored over `day` that a day's worth of storage usage in `unit` stands for.

    A GB-month billed on one day is GB x (24 / hours in the month): so bytes = quantity x 2^30 x days in
    the month. Hourly rows of the same day add up to the same number. None when the unit is not
    storage over time.
    """
    known = storage_unit(unit)
    if quantity is None or known is None:
        return None
    per_unit, period = known
    if period == "month":
        return quantity * per_unit * days_in_month(day)
    if period == "second":
        return quantity * per_unit / 86400
    if period == "hour":
        return quantity * per_unit / 24
    return quantity * per_unit
