"""AWS Cost and Usage Report 2.0 (Data Exports): Parquet or gzip CSV, read from S3.

A Data Export writes each billing period under
`s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/`, either overwriting the files or
adding a new delivery folder each time. For a window, we read the latest delivery of every month it
touches. FOCUS exports (the "FOCUS 1.0 with AWS columns" table) use the same layout: give
`file_format="focus"` for those.

Object storage here is S3 and S3 Glacier: `line_item_product_code` AmazonS3 or AmazonGlacier, which
includes the data transfer AWS books under S3 for a bucket.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.files import RemoteObject, store_for
from airflow_cost_provider.billing.formats import FileFormat, column_or_null, tags_sql
from airflow_cost_provider.billing.scan import IS_STORAGE, ROW, TAGS, DateWindow, Normalised, quote

STORAGE_PRODUCT_CODES = ("AmazonS3", "AmazonGlacier")
SERVICE_NAMES = {"AmazonS3": "Amazon Simple Storage Service", "AmazonGlacier": "Amazon S3 Glacier"}

# line_item_line_item_type -> FOCUS ChargeCategory
_CHARGE_CATEGORY = {
    "Usage": focus.USAGE,
    "DiscountedUsage": focus.USAGE,
    "SavingsPlanCoveredUsage": focus.USAGE,
    "Credit": focus.CREDIT,
    "Refund": focus.CREDIT,
    "BundledDiscount": focus.CREDIT,
    "Discount": focus.CREDIT,
    "EdpDiscount": focus.CREDIT,
    "PrivateRateDiscount": focus.CREDIT,
    "SavingsPlanNegation": focus.CREDIT,
    "Tax": focus.TAX,
    "Fee": focus.PURCHASE,
    "RIFee": focus.PURCHASE,
    "SavingsPlanRecurringFee": focus.PURCHASE,
    "SavingsPlanUpfrontFee": focus.PURCHASE,
}

REQUIRED_COLUMNS = (
    "bill_payer_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_currency_code",
    "line_item_unblended_cost",
)


class AwsCurFormat(FileFormat):
    name = "aws-cur"
    provider = "aws"
    description = "AWS Cost and Usage Report 2.0 / Data Exports (Parquet or gzip CSV)"

    def normalise(self, columns: dict[str, str], label: str) -> Normalised:
        self.require(columns, label, *REQUIRED_COLUMNS)
        line_type = quote("line_item_line_item_type")
        categories = " ".join(
            f"WHEN {focus.sql_text(k)} THEN {focus.sql_text(v)}" for k, v in _CHARGE_CATEGORY.items()
        )
        product = quote("line_item_product_code")
        services = " ".join(
            f"WHEN {focus.sql_text(k)} THEN {focus.sql_text(v)}" for k, v in SERVICE_NAMES.items()
        )
        charge_class = "NULL"
        if "bill_bill_type" in columns:
            charge_class = f"CASE WHEN {quote('bill_bill_type')} = 'Refund' THEN 'Correction' END"
        select = {
            ROW: ROW,
            focus.BILLING_ACCOUNT_ID: quote("bill_payer_account_id"),
            focus.BILLED_COST: quote("line_item_unblended_cost"),
            focus.EFFECTIVE_COST: column_or_null(
                columns, "line_item_net_unblended_cost", "line_item_unblended_cost"
            ),
            focus.LIST_COST: column_or_null(columns, "pricing_public_on_demand_cost"),
            focus.BILLING_CURRENCY: quote("line_item_currency_code"),
            focus.CHARGE_PERIOD_START: quote("line_item_usage_start_date"),
            focus.CHARGE_PERIOD_END: quote("line_item_usage_end_date"),
            focus.CHARGE_CATEGORY: f"CASE {line_type} {categories} ELSE {focus.sql_text(focus.USAGE)} END",
            focus.CHARGE_CLASS: charge_class,
            focus.SERVICE_NAME: f"CASE {product} {services} ELSE {product} END",
            focus.RESOURCE_ID: column_or_null(columns, "line_item_resource_id"),
            focus.REGION_ID: column_or_null(columns, "product_region_code", "product_region"),
            focus.SKU_ID: column_or_null(columns, "product_sku"),
            focus.CONSUMED_QUANTITY: column_or_null(columns, "line_item_usage_amount"),
            focus.CONSUMED_UNIT: column_or_null(columns, "pricing_unit"),
            focus.X_PROVIDER: "'aws'",
            focus.X_USAGE_TYPE: column_or_null(columns, "line_item_usage_type"),
            IS_STORAGE: focus.storage_services_sql(product, STORAGE_PRODUCT_CODES),
            TAGS: resource_tags_sql(columns),
        }
        origin = {
            focus.BILLED_COST: "line_item_unblended_cost",
            focus.EFFECTIVE_COST: "line_item_net_unblended_cost"
            if "line_item_net_unblended_cost" in columns
            else "line_item_unblended_cost",
            focus.LIST_COST: "pricing_public_on_demand_cost",
            focus.BILLING_CURRENCY: "line_item_currency_code",
            focus.CHARGE_PERIOD_START: "line_item_usage_start_date",
            focus.CHARGE_PERIOD_END: "line_item_usage_end_date",
            focus.CONSUMED_QUANTITY: "line_item_usage_amount",
        }
        sql = "SELECT " + ", ".join(f"{expr} AS {quote(name)}" for name, expr in select.items())
        tags = "resource_tags" if "resource_tags" in columns else None
        if tags is None and legacy_tag_columns(columns):
            tags = f"{LEGACY_TAG_PREFIX}*"
        return Normalised(sql + " FROM billing_input", origin, tags_column=tags)


LEGACY_TAG_PREFIX = "resourceTags/"  # legacy CUR: one column per tag, `resourceTags/user:team`


def legacy_tag_columns(columns: dict[str, str]) -> list[str]:
    return sorted(name for name in columns if name.startswith(LEGACY_TAG_PREFIX))


def resource_tags_sql(columns: dict[str, str]) -> str:
    """CUR 2.0's `resource_tags` (a MAP in Parquet, JSON text in CSV), or legacy CUR's tag columns
    as one JSON object (keys as `user:team`; empty values are dropped when the tags are parsed)."""
    if "resource_tags" in columns:
        return tags_sql(columns, "resource_tags")
    legacy = legacy_tag_columns(columns)
    if not legacy:
        return "NULL"
    pairs = ", ".join(
        f"{focus.sql_text(name.removeprefix(LEGACY_TAG_PREFIX))}, CAST({quote(name)} AS VARCHAR)"
        for name in legacy
    )
    return f"CAST(json_object({pairs}) AS VARCHAR)"


def resource_bucket(resource_id: str) -> str | None:
    """The bucket of an S3 line item's resource id (a bucket name, or an S3 ARN)."""
    if not resource_id:
        return None
    if resource_id.startswith("arn:aws:s3:::"):
        resource_id = resource_id.removeprefix("arn:aws:s3:::").split("/", 1)[0]
    return resource_id if re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", resource_id) else None


def months_of(window: DateWindow) -> list[dt.date]:
    months = []
    day = window.start.replace(day=1)
    while day < window.end:
        months.append(day)
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return months


_PERIOD = re.compile(r"BILLING_PERIOD=(\d{4})-(\d{2})")


def billing_period(url: str) -> tuple[int, int] | None:
    match = _PERIOD.search(url)
    return (int(match[1]), int(match[2])) if match else None


def latest_deliveries(
    objects: list[RemoteObject],
    months: list[dt.date],
    accepts: Callable[[str], bool],
    month_of: Callable[[str], tuple[int, int] | None] = billing_period,
) -> list[RemoteObject]:
    """The data files of the latest delivery of each month in an export's listing.

    Exports that overwrite keep one set of files per month folder; exports that keep every version
    add a folder per delivery under it, and the folder written last is the current one.
    """
    by_month: dict[tuple[int, int], list[RemoteObject]] = {}
    for obj in objects:
        month = month_of(obj.url)
        if month and accepts(obj.url.rsplit("/", 1)[-1]):
            by_month.setdefault(month, []).append(obj)
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    chosen = []
    for month in months:
        files = by_month.get((month.year, month.month), [])
        if not files:
            continue
        folders: dict[str, list[RemoteObject]] = {}
        for obj in files:
            folders.setdefault(obj.url.rsplit("/", 1)[0], []).append(obj)
        # the folder written last; on a tie (stores keep whole seconds) the later name
        folder = max(folders, key=lambda name: (max(o.modified or oldest for o in folders[name]), name))
        newest = folders[folder]
        chosen.extend(sorted(newest, key=lambda o: o.url))
    return chosen


def list_export(
    path: str, window: DateWindow, conn_id: str | None, accepts: Callable[[str], bool]
) -> list[RemoteObject]:
    """The files to read for the window from a Data Export at `path` (s3://bucket/prefix/export-name/):
    one listing per month of the window, under data/BILLING_PERIOD=YYYY-MM/."""
    store = store_for(path, conn_id)
    months = months_of(window)
    root = path.rstrip("/") + "/"
    objects: list[RemoteObject] = []
    for month in months:
        period = f"BILLING_PERIOD={month:%Y-%m}/"
        objects += store.list(root + period if root.endswith("/data/") else root + "data/" + period)
    return latest_deliveries(objects, months, accepts)
