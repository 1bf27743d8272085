"""The ledger as FOCUS 1.2 cost and usage rows (https://focus.finops.org), for FinOps tools.

One row per priced cost line of the task tries that ended in a period, and one per imported storage
cost of the billing days that start in it. Every amount is the ledger's exact Decimal: BilledCost,
EffectiveCost and ContractedCost are the line's amount (FOCUS requires EffectiveCost and
ContractedCost to match BilledCost for a charge that no discount or commitment relates to): its
estimate, or once `airflow-cost reconcile` reached it, its share of the bill; ListCost and
`x_EstimatedCost` are its estimate at list price or rate, and `x_CostStatus` tells the two apart. Unpriced usage has no cost,
and FOCUS costs cannot be null: it is left out and counted. Pure: no Airflow.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_cost_provider.billing import focus
from airflow_cost_provider.ledger.schema import lines, storage_costs, task_run_labels, task_runs, usage
from airflow_cost_provider.ledger.store import from_nanos
from airflow_cost_provider.pricing.money import EXACT
from airflow_cost_provider.pricing.units import IncompatibleUnitsError, UnknownUnitError, convert, get_unit

FOCUS_VERSION = "1.2"
UTC = dt.timezone.utc

# FOCUS columns this export writes, besides those billing/focus.py already names.
BILLING_ACCOUNT_NAME = "BillingAccountName"
BILLING_PERIOD_START = "BillingPeriodStart"
BILLING_PERIOD_END = "BillingPeriodEnd"
CHARGE_DESCRIPTION = "ChargeDescription"
CHARGE_FREQUENCY = "ChargeFrequency"
CONTRACTED_COST = "ContractedCost"
INVOICE_ISSUER_NAME = "InvoiceIssuerName"
LIST_UNIT_PRICE = "ListUnitPrice"
PRICING_QUANTITY = "PricingQuantity"
PRICING_UNIT = "PricingUnit"
PUBLISHER_NAME = "PublisherName"
RESOURCE_NAME = "ResourceName"
SERVICE_SUBCATEGORY = "ServiceSubcategory"
INVOICE_ID = "InvoiceId"
COMMITMENT_DISCOUNT_STATUS = "CommitmentDiscountStatus"
SKU_PRICE_ID = "SkuPriceId"

# The task rows' billing account: the ledger does not know the cloud account a query ran under.
TASK_BILLING_ACCOUNT = "airflow-cost-provider"
TASK_BILLING_ACCOUNT_NAME = "Airflow task costs (airflow-cost-provider ledger)"
# Tags this provider defines are prefixed (FOCUS Tags-C-012-M); cost labels are the one unprefixed
# user scheme, DAG tags (valueless, so `true`: Tags-C-008-M) the prefixed one.
PROVIDER_TAG_PREFIX = "airflow/"
DAG_TAG_PREFIX = "airflow-dag-tag/"

# column -> kind: cost (exact to the nano-unit), number (exact, finer), time, text
COLUMNS: dict[str, str] = {
    focus.BILLED_COST: "cost",
    focus.EFFECTIVE_COST: "cost",
    focus.LIST_COST: "cost",
    CONTRACTED_COST: "cost",
    focus.BILLING_CURRENCY: "text",
    focus.BILLING_ACCOUNT_ID: "text",
    BILLING_ACCOUNT_NAME: "text",
    BILLING_PERIOD_START: "time",
    BILLING_PERIOD_END: "time",
    focus.CHARGE_PERIOD_START: "time",
    focus.CHARGE_PERIOD_END: "time",
    focus.CHARGE_CATEGORY: "text",
    focus.CHARGE_CLASS: "text",
    CHARGE_DESCRIPTION: "text",
    CHARGE_FREQUENCY: "text",
    focus.CONSUMED_QUANTITY: "number",
    focus.CONSUMED_UNIT: "text",
    PRICING_QUANTITY: "number",
    PRICING_UNIT: "text",
    LIST_UNIT_PRICE: "number",
    focus.SERVICE_NAME: "text",
    focus.SERVICE_CATEGORY: "text",
    SERVICE_SUBCATEGORY: "text",
    focus.PROVIDER_NAME: "text",
    PUBLISHER_NAME: "text",
    INVOICE_ISSUER_NAME: "text",
    INVOICE_ID: "text",  # none: these costs are on no invoice
    focus.REGION_ID: "text",
    focus.RESOURCE_ID: "text",
    RESOURCE_NAME: "text",
    focus.SKU_ID: "text",
    SKU_PRICE_ID: "text",
    focus.TAGS: "text",
    # null: no commitment discount applies (FOCUS reads ConsumedQuantity's nullability through it)
    COMMITMENT_DISCOUNT_STATUS: "text",
    "x_RowKind": "text",  # task | storage
    "x_CostStatus": "text",  # estimated | reconciled
    "x_EstimatedCost": "cost",  # a task line's estimate (= ListCost); a reconciled line is billed its share
    "x_CostMethod": "text",  # list_price, runtime_rate, metered, allocated; billing for storage
    "x_PriceSource": "text",
    "x_Source": "text",
    "x_Metric": "text",
    "x_DagId": "text",
    "x_TaskId": "text",
    "x_RunId": "text",
    "x_MapIndex": "integer",
    "x_TryNumber": "integer",
    "x_Team": "text",
    "x_Owner": "text",
    "x_ExternalId": "text",
    "x_CaptureId": "text",
    focus.X_PROVIDER: "text",
    "x_UsageClass": "text",
    "x_CreditAmount": "cost",
}
COST_PLACES = Decimal("1e-9")  # the ledger's nano-units
NUMBER_PLACES = Decimal("1e-18")  # quantities and unit prices: below any rounding of a cost

# source -> (ServiceName, ServiceCategory, ServiceSubcategory, the company that sells it); a source
# not here keeps its own name as service and provider, in "Other".
_AWS, _GOOGLE, _MICROSOFT = "Amazon Web Services", "Google Cloud", "Microsoft"
_PROCESSING = ("Analytics", "Data Processing")
_WAREHOUSE = ("Databases", "Data Warehouses")
_RELATIONAL = ("Databases", "Relational Databases")
SERVICES: dict[str, tuple[str, str, str, str]] = {
    "airflow_worker": ("Airflow worker", "Compute", "Other (Compute)", "Airflow worker"),
    "athena": ("Amazon Athena", *_PROCESSING, _AWS),
    "redshift": ("Amazon Redshift", *_WAREHOUSE, _AWS),
    "glue": ("AWS Glue", *_PROCESSING, _AWS),
    "emr": ("Amazon EMR", *_PROCESSING, _AWS),
    "emr_serverless": ("Amazon EMR Serverless", *_PROCESSING, _AWS),
    "emr_eks": ("Amazon EMR on EKS", *_PROCESSING, _AWS),
    "bigquery": ("BigQuery", *_WAREHOUSE, _GOOGLE),
    "dataproc": ("Dataproc", *_PROCESSING, _GOOGLE),
    "dataproc_serverless": ("Dataproc Serverless", *_PROCESSING, _GOOGLE),
    "compute_engine": ("Compute Engine", "Compute", "Virtual Machines", _GOOGLE),
    "azure_data_factory": ("Azure Data Factory", "Integration", "Workflow Orchestration", _MICROSOFT),
    "synapse_pipelines": (
        "Azure Synapse Analytics Pipelines",
        "Integration",
        "Workflow Orchestration",
        _MICROSOFT,
    ),
    "synapse_serverless_sql": ("Azure Synapse Analytics", *_PROCESSING, _MICROSOFT),
    "synapse_spark": ("Azure Synapse Analytics", *_PROCESSING, _MICROSOFT),
    "azure_sql": ("Azure SQL Database", *_RELATIONAL, _MICROSOFT),
    "snowflake": ("Snowflake", *_WAREHOUSE, "Snowflake"),
    "databricks": ("Databricks", *_PROCESSING, "Databricks"),
    "trino": ("Trino", *_PROCESSING, "Trino"),
    "spark": ("Apache Spark", *_PROCESSING, "Apache Spark cluster"),
    "kubernetes": ("Kubernetes", "Compute", "Containers", "Kubernetes"),
    "postgres": ("PostgreSQL", *_RELATIONAL, "postgres"),
    "mysql": ("MySQL", *_RELATIONAL, "mysql"),
    "sqlite": ("SQLite", *_RELATIONAL, "sqlite"),
}
STORAGE_PROVIDERS = {"aws": _AWS, "gcp": _GOOGLE, "azure": _MICROSOFT}
_TIME_ALIASES = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "Seconds"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "Minutes"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "Hours"),
    **dict.fromkeys(("day", "days"), "Days"),
    **dict.fromkeys(("mo", "mon", "month", "months"), "Months"),
}
_MULTIPLES = {"K": 1000, "M": 1000**2}
_COUNT_SHORTHAND = re.compile(r"(\d+)\s*([KkMm])")
# FOCUS UnitFormat: a data size, a time, a count word (phrase), `<unit>-<Times>`, `<unit>/<Time>`,
# `<n> <unit>` (the validator's own patterns, in short)
_SIZE = "(?:[KMGTPE]i?[bB]|[bB])"
_TIME_PLURAL = "(?:Years|Months|Days|Hours|Minutes|Seconds)"
_TIME = "(?:Year|Month|Day|Hour|Minute|Second)s?"
_WORDS = "[A-Za-z][A-Za-z0-9]*(?: +[A-Za-z][A-Za-z0-9]*)*"
_FOCUS_UNIT = re.compile(
    rf"(?:{_SIZE}|{_TIME}|{_WORDS})|(?:{_SIZE}|{_WORDS})-{_TIME_PLURAL}"
    rf"|(?:{_SIZE}|{_WORDS}|{_TIME_PLURAL})/(?:Year|Month|Day|Hour|Minute|Second)|[0-9]+ (?:{_SIZE}|{_TIME}|{_WORDS})"
)


@dataclass
class FocusExport:
    since: dt.datetime
    until: dt.datetime
    rows: list[dict[str, Any]]
    task_rows: int = 0
    storage_rows: int = 0
    unpriced_lines: int = 0  # left out: FOCUS costs cannot be null, and unpriced is not zero
    totals: dict[str, Decimal] = field(default_factory=dict)  # BilledCost per currency
    task_totals: dict[str, Decimal] = field(default_factory=dict)
    storage_totals: dict[str, Decimal] = field(default_factory=dict)


def focus_unit(quantity: Decimal, unit: str) -> tuple[Decimal, str]:
    """A unit as FOCUS writes units (UnitFormat), with the quantity in it: `vCPU-second` ->
    `vCPU-Seconds`, `GB-Mo` -> `GB-Months`, `slot-ms` -> `slot-Seconds` (quantity / 1000),
    `byte-seconds` -> `B-Seconds`, `activity_run` -> `activity run`, `10K` -> `10000 Units`."""
    text = " ".join(unit.split())
    match = re.fullmatch(r"(?:(.+?)\s*[-/]\s*)?([A-Za-z]+)", text.removeprefix("1 "))
    if match and match[2].lower() in _TIME_ALIASES:
        time = _TIME_ALIASES[match[2].lower()]
        if time == "ms":
            quantity, time = EXACT.divide(quantity, Decimal(1000)), "Seconds"
        return quantity, f"{_counted(match[1])}-{time}" if match[1] else time
    if _FOCUS_UNIT.fullmatch(text):
        return quantity, text
    count = _COUNT_SHORTHAND.fullmatch(text)
    if count:
        return quantity, f"{int(count[1]) * _MULTIPLES[count[2].upper()]} Units"
    return quantity, _counted(text.removeprefix("1 "))


def _counted(text: str) -> str:
    """A data size or count unit in FOCUS form: `bytes` -> `B`, `activity_run` -> `activity run`."""
    if text.lower() in ("byte", "bytes"):
        return "B"
    words = re.sub(r"[^A-Za-z0-9]+", " ", text).split()
    while words and not words[0][0].isalpha():
        words.pop(0)  # a unit starts with a letter
    return " ".join(words) or "Units"


def _exact(value: Decimal | None, places: Decimal) -> Decimal | None:
    if value is None:
        return None
    return value.quantize(places, context=EXACT).normalize(EXACT) if value else Decimal(0)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _whole_seconds(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """FOCUS date-times have whole seconds: the start floored, the end raised, and at least a second."""
    start = _utc(start).replace(microsecond=0)
    end_utc = _utc(end)
    end = end_utc.replace(microsecond=0) + (
        dt.timedelta(seconds=1) if end_utc.microsecond else dt.timedelta()
    )
    return start, max(end, start + dt.timedelta(seconds=1))


def _month(moment: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = dt.datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _sku(price_ref: str | None, source: str, metric: str) -> tuple[str, str]:
    """(SkuId, SkuPriceId): the price book entry without, and with, its book version."""
    if not price_ref:
        return f"{source}/{metric}", f"{source}/{metric}"
    _, _, sku = price_ref.partition(":")
    return sku or price_ref, price_ref


def _pricing(
    quantity: Decimal, unit: str, price_amount: str | None, price_unit: str | None, amount: Decimal
) -> tuple[Decimal, str, Decimal]:
    """(PricingQuantity, PricingUnit, ListUnitPrice): the usage in the price's unit, so that the unit
    price times the quantity is the cost (to the nano-unit it was rounded to)."""
    if price_amount is not None and price_unit:
        try:
            get_unit(price_unit)
            in_price_unit = convert(quantity, unit, price_unit)
        except (UnknownUnitError, IncompatibleUnitsError):
            in_price_unit = None
        if in_price_unit is not None:
            pricing_quantity, pricing_unit = focus_unit(in_price_unit, price_unit)
            # a `-ms` price unit became seconds: the price per second is 1000 times the price per ms
            scale = EXACT.divide(in_price_unit, pricing_quantity) if pricing_quantity else Decimal(1)
            return pricing_quantity, pricing_unit, EXACT.multiply(Decimal(price_amount), scale)
    # no usable price unit: price the usage as it was measured
    consumed, consumed_unit = focus_unit(quantity, unit)
    return consumed, consumed_unit, EXACT.divide(amount, consumed) if consumed else Decimal(0)


def _task_tags(run: Any, labels: list[tuple[str, str, str]]) -> dict[str, Any]:
    tags: dict[str, Any] = {
        f"{PROVIDER_TAG_PREFIX}dag_id": run.dag_id,
        f"{PROVIDER_TAG_PREFIX}task_id": run.task_id,
    }
    if run.owner:
        tags[f"{PROVIDER_TAG_PREFIX}owner"] = run.owner
    if run.team:
        tags[f"{PROVIDER_TAG_PREFIX}team"] = run.team
    for kind, key, value in labels:
        if kind == "tag":
            tags[f"{DAG_TAG_PREFIX}{key}"] = True
        else:
            tags[key] = value
    return tags


def _labels_by_try(conn, where: list[sa.ColumnElement]) -> dict[int, list[tuple[str, str, str]]]:
    query = (
        sa.select(
            task_run_labels.c.task_run_id,
            task_run_labels.c.kind,
            task_run_labels.c.key,
            task_run_labels.c.value,
        )
        .select_from(task_run_labels.join(task_runs, task_run_labels.c.task_run_id == task_runs.c.id))
        .where(*where)
        .order_by(task_run_labels.c.task_run_id, task_run_labels.c.kind, task_run_labels.c.key)
    )
    found: dict[int, list[tuple[str, str, str]]] = {}
    for row in conn.execute(query):
        found.setdefault(row.task_run_id, []).append((row.kind, row.key, row.value))
    return found


def _task_rows(conn, since: dt.datetime, until: dt.datetime, export: FocusExport) -> None:
    where = [task_runs.c.end_time >= since, task_runs.c.end_time < until]
    labels = _labels_by_try(conn, where)
    query = (
        sa.select(
            task_runs.c.id.label("task_run_id"),
            task_runs.c.dag_id,
            task_runs.c.task_id,
            task_runs.c.run_id,
            task_runs.c.map_index,
            task_runs.c.try_number,
            task_runs.c.capture_id,
            task_runs.c.start_time.label("try_start"),
            task_runs.c.end_time.label("try_end"),
            task_runs.c.owner,
            task_runs.c.team,
            lines.c.source,
            lines.c.metric,
            lines.c.amount_nanos,
            lines.c.currency,
            lines.c.method,
            lines.c.status,
            lines.c.reconciled_nanos,
            lines.c.uncorrected_nanos,
            lines.c.price_ref,
            lines.c.price_amount,
            lines.c.price_unit,
            lines.c.price_source_url,
            usage.c.quantity,
            usage.c.unit,
            usage.c.resource,
            usage.c.external_id,
            usage.c.start_time.label("usage_start"),
            usage.c.end_time.label("usage_end"),
        )
        .select_from(
            lines.join(task_runs, lines.c.task_run_id == task_runs.c.id).join(
                usage, lines.c.usage_id == usage.c.id
            )
        )
        .where(*where)
        .order_by(task_runs.c.end_time, task_runs.c.id, lines.c.id)
    )
    for row in conn.execute(query):
        if row.amount_nanos is None:
            export.unpriced_lines += 1
            continue
        amount = from_nanos(row.amount_nanos)  # the estimate: usage at list price or rate
        # a reconciled line is billed at its share of the bill; its estimate stays the list cost
        billed = from_nanos(row.reconciled_nanos) if row.reconciled_nanos is not None else amount
        quantity = Decimal(row.quantity)
        consumed, consumed_unit = focus_unit(quantity, row.unit)
        # a corrected estimate's list cost is its amount before the correction
        list_amount = from_nanos(row.uncorrected_nanos) if row.uncorrected_nanos is not None else amount
        pricing_quantity, pricing_unit, unit_price = _pricing(
            quantity, row.unit, row.price_amount, row.price_unit, list_amount
        )
        start, end = _whole_seconds(row.usage_start or row.try_start, row.usage_end or row.try_end)
        billing_start, billing_end = _month(_utc(row.try_end))
        service, category, subcategory, vendor = SERVICES.get(
            row.source, (row.source, "Other", "Other (Other)", row.source)
        )
        sku_id, sku_price_id = _sku(row.price_ref, row.source, row.metric)
        status = row.status  # estimated | reconciled
        price_text = f"{row.price_amount} {row.currency}/{row.price_unit}" if row.price_amount else "a rate"
        export.rows.append(
            {
                focus.BILLED_COST: billed,
                focus.EFFECTIVE_COST: billed,
                # a corrected estimate's list cost is its amount before the correction
                focus.LIST_COST: from_nanos(row.uncorrected_nanos)
                if row.uncorrected_nanos is not None
                else amount,
                CONTRACTED_COST: billed,
                focus.BILLING_CURRENCY: row.currency,
                focus.BILLING_ACCOUNT_ID: TASK_BILLING_ACCOUNT,
                BILLING_ACCOUNT_NAME: TASK_BILLING_ACCOUNT_NAME,
                BILLING_PERIOD_START: billing_start,
                BILLING_PERIOD_END: billing_end,
                focus.CHARGE_PERIOD_START: start,
                focus.CHARGE_PERIOD_END: end,
                focus.CHARGE_CATEGORY: focus.USAGE,
                focus.CHARGE_CLASS: None,
                CHARGE_DESCRIPTION: (
                    f"{row.source} {row.metric} of Airflow task {row.dag_id}.{row.task_id}: "
                    f"{quantity} {row.unit} at {price_text} ({status})"
                ),
                CHARGE_FREQUENCY: "Usage-Based",
                focus.CONSUMED_QUANTITY: consumed,
                focus.CONSUMED_UNIT: consumed_unit,
                PRICING_QUANTITY: pricing_quantity,
                PRICING_UNIT: pricing_unit,
                LIST_UNIT_PRICE: unit_price,
                focus.SERVICE_NAME: service,
                focus.SERVICE_CATEGORY: category,
                SERVICE_SUBCATEGORY: subcategory,
                focus.PROVIDER_NAME: vendor,
                PUBLISHER_NAME: vendor,
                INVOICE_ISSUER_NAME: vendor,
                focus.REGION_ID: None,
                focus.RESOURCE_ID: row.resource,
                RESOURCE_NAME: row.resource,
                focus.SKU_ID: sku_id,
                SKU_PRICE_ID: sku_price_id,
                focus.TAGS: _task_tags(row, labels.get(row.task_run_id, [])),
                "x_RowKind": "task",
                "x_CostStatus": status,
                "x_EstimatedCost": amount,
                "x_CostMethod": row.method,
                "x_PriceSource": row.price_source_url,
                "x_Source": row.source,
                "x_Metric": row.metric,
                "x_DagId": row.dag_id,
                "x_TaskId": row.task_id,
                "x_RunId": row.run_id,
                "x_MapIndex": row.map_index,
                "x_TryNumber": row.try_number,
                "x_Team": row.team,
                "x_Owner": row.owner,
                "x_ExternalId": row.external_id,
                "x_CaptureId": row.capture_id,
            }
        )
        export.task_rows += 1
        export.task_totals[row.currency] = export.task_totals.get(row.currency, Decimal(0)) + billed


def _storage_rows(conn, since: dt.datetime, until: dt.datetime, export: FocusExport) -> None:
    # the billing days that start in [since, until)
    first = since.astimezone(UTC).date() + (
        dt.timedelta(days=1) if _utc(since).time() != dt.time(0) else dt.timedelta()
    )
    last = (_utc(until) - dt.timedelta(microseconds=1)).date()
    query = (
        sa.select(storage_costs)
        .where(storage_costs.c.day >= first, storage_costs.c.day <= last)
        .order_by(
            storage_costs.c.day, storage_costs.c.provider, storage_costs.c.resource_id, storage_costs.c.sku
        )
    )
    for row in conn.execute(query):
        day = row.day if isinstance(row.day, dt.date) else dt.date.fromisoformat(str(row.day))
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        billing_start, billing_end = _month(start)
        billed = from_nanos(row.amount_nanos)
        effective = from_nanos(row.effective_nanos) if row.effective_nanos is not None else billed
        listed = from_nanos(row.list_nanos) if row.list_nanos is not None else billed
        quantity = Decimal(row.quantity) if row.quantity not in (None, "") else None
        unit = row.unit or None
        tax = row.usage_class == focus.TAX_CLASS
        category = focus.TAX if tax else focus.USAGE
        if quantity is not None and unit:
            consumed, consumed_unit = focus_unit(quantity, unit)
        else:
            consumed, consumed_unit = None, None
        pricing_quantity = pricing_unit = unit_price = None
        if not tax and consumed is not None:
            pricing_quantity, pricing_unit = consumed, consumed_unit
            unit_price = EXACT.divide(listed, consumed) if consumed else Decimal(0)
        vendor = STORAGE_PROVIDERS.get(row.provider, row.provider)
        resource = row.resource_id or None
        export.rows.append(
            {
                focus.BILLED_COST: billed,
                focus.EFFECTIVE_COST: effective,
                focus.LIST_COST: listed,
                CONTRACTED_COST: billed,
                focus.BILLING_CURRENCY: row.currency,
                focus.BILLING_ACCOUNT_ID: row.billing_account,
                BILLING_ACCOUNT_NAME: None,
                BILLING_PERIOD_START: billing_start,
                BILLING_PERIOD_END: billing_end,
                focus.CHARGE_PERIOD_START: start,
                focus.CHARGE_PERIOD_END: start + dt.timedelta(days=1),
                focus.CHARGE_CATEGORY: category,
                focus.CHARGE_CLASS: None,
                CHARGE_DESCRIPTION: (
                    f"{row.usage_class} of {resource or 'no resource'} on {day} "
                    f"({row.usage_type or row.sku}), imported from {row.source} billing data"
                ),
                CHARGE_FREQUENCY: "Usage-Based",
                focus.CONSUMED_QUANTITY: None if tax else consumed,
                focus.CONSUMED_UNIT: None if tax else consumed_unit,
                PRICING_QUANTITY: pricing_quantity,
                PRICING_UNIT: pricing_unit,
                LIST_UNIT_PRICE: unit_price,
                focus.SERVICE_NAME: row.service or "Storage",
                focus.SERVICE_CATEGORY: "Storage",
                SERVICE_SUBCATEGORY: "Object Storage",
                focus.PROVIDER_NAME: vendor,
                PUBLISHER_NAME: vendor,
                INVOICE_ISSUER_NAME: vendor,
                focus.REGION_ID: row.region or None,
                focus.RESOURCE_ID: resource,
                RESOURCE_NAME: resource,
                focus.SKU_ID: None if tax else row.sku,
                SKU_PRICE_ID: None if tax else row.sku,
                focus.TAGS: None,
                "x_RowKind": "storage",
                "x_CostStatus": "reconciled",  # billing data itself
                "x_CostMethod": "billing",
                "x_Source": row.source,
                focus.X_PROVIDER: row.provider,
                "x_UsageClass": row.usage_class,
                "x_CreditAmount": from_nanos(row.credit_nanos),
            }
        )
        export.storage_rows += 1
        export.storage_totals[row.currency] = export.storage_totals.get(row.currency, Decimal(0)) + billed


def focus_export(engine: Engine, since: dt.datetime, until: dt.datetime) -> FocusExport:
    """The FOCUS rows of [since, until): task tries that ended in it, storage billing days that start in it."""
    export = FocusExport(since=since, until=until, rows=[])
    with engine.connect() as conn:
        _task_rows(conn, since, until, export)
        _storage_rows(conn, since, until, export)
    for part in (export.task_totals, export.storage_totals):
        for currency, amount in part.items():
            export.totals[currency] = export.totals.get(currency, Decimal(0)) + amount
    export.totals = dict(sorted(export.totals.items()))
    return export


# ---------------------------------------------------------------- writing


def _iso(moment: dt.datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv_value(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "cost":
        return format(_exact(value, COST_PLACES), "f")
    if kind == "number":
        text = format(_exact(Decimal(value), NUMBER_PLACES), "f")
        # a decimal point even on a whole number: a reader that infers types from a CSV (the FOCUS
        # validator does) would otherwise take a column of whole quantities for integers
        return text if "." in text else f"{text}.0"
    if kind == "integer":
        return str(value)
    if kind == "time":
        return _iso(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _write_csv(export: FocusExport, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in export.rows:
            writer.writerow([_csv_value(kind, row.get(name)) for name, kind in COLUMNS.items()])


def _write_parquet(export: FocusExport, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "cost": pa.decimal128(38, 9),
        "number": pa.decimal128(38, 18),
        "integer": pa.int64(),
        "time": pa.timestamp("s", tz="UTC"),
        "text": pa.string(),
    }
    converters: dict[str, Callable[[Any], Any]] = {
        "cost": lambda v: _exact(v, COST_PLACES).quantize(COST_PLACES),
        "number": lambda v: _exact(Decimal(v), NUMBER_PLACES).quantize(NUMBER_PLACES, context=EXACT),
        "integer": int,
        "time": _utc,
        "text": lambda v: (
            json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, dict) else str(v)
        ),
    }
    arrays = []
    for name, kind in COLUMNS.items():
        convert_value = converters[kind]
        values = [None if row.get(name) is None else convert_value(row[name]) for row in export.rows]
        arrays.append(pa.array(values, type=types[kind]))
    pq.write_table(pa.Table.from_arrays(arrays, names=list(COLUMNS)), path)


def write(export: FocusExport, path: Path, file_format: str) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    writer = {"csv": _write_csv, "parquet": _write_parquet}[file_format]
    # a name of its own (not mkstemp's, which would make the file private to its owner)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        writer(export, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def format_of(path: Path) -> str | None:
    """csv or parquet from the file's extension, None for anything else."""
    return {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
