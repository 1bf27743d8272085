"""Google Cloud: the Cloud Billing export to BigQuery (standard, detailed resource and FOCUS tables).

The import runs one query through the Google provider's BigQueryHook, filtered in SQL to Cloud
Storage (an import of the whole bill: every service, per service and resource labels too) and to the window (and to the partitions that can hold it), summed per day, project, bucket,
SKU, cost type and currency, with the credits of each row added up. Only these sums leave BigQuery.
The query itself is billed like any other; on the detailed table it scans the few columns it names.

The standard table has no resource: its costs are per project, and no bucket dataset gets them.
Files that `bq extract` wrote from the export table (newline-delimited JSON or Parquet) are read by
`GcpBillingExportFormat`, with the same mapping.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingSourceError, provider_required
from airflow_cost_provider.billing.formats import JSON_SUFFIXES, PARQUET_SUFFIXES, FileFormat, tags_sql
from airflow_cost_provider.billing.importer import CollectedCosts, read_rows
from airflow_cost_provider.billing.scan import DECIMAL, IS_STORAGE, ROW, TAGS, DateWindow, Normalised, quote

log = logging.getLogger(__name__)

STORAGE_SERVICE = "Cloud Storage"
STANDARD = "standard"
DETAILED = "detailed"
FOCUS = "focus"
TABLE_KINDS = (STANDARD, DETAILED, FOCUS)
QUERY_TIMEOUT_SECONDS = 300


def table_kind(table: str) -> str:
    """standard, detailed or focus, from the export's table naming."""
    name = table.rsplit(".", 1)[-1].lower()
    if "focus" in name:
        return FOCUS
    if name.startswith("gcp_billing_export_resource_v1"):
        return DETAILED
    return STANDARD


# cost_type -> (ChargeCategory, ChargeClass)
_COST_TYPES = {
    "regular": (focus.USAGE, None),
    "tax": (focus.TAX, None),
    "adjustment": (focus.USAGE, focus.CORRECTION),
    "rounding_error": (focus.ADJUSTMENT, None),
}


class GcpBillingExportFormat(FileFormat):
    name = "gcp-billing-export"
    provider = "gcp"
    suffixes = (*PARQUET_SUFFIXES, *JSON_SUFFIXES)
    description = "Cloud Billing export rows extracted from BigQuery (JSON lines or Parquet)"

    def normalise(self, columns: dict[str, str], label: str) -> Normalised:
        self.require(
            columns,
            label,
            "billing_account_id",
            "cost",
            "currency",
            "usage_start_time",
            "usage_end_time",
            "service",
        )
        field = lambda column, name: f"{quote(column)}.{quote(name)}" if column in columns else "NULL"  # noqa: E731
        cost_type = quote("cost_type") if "cost_type" in columns else "'regular'"
        resource = field("resource", "name") if "resource" in columns else "NULL"
        project = field("project", "id")
        category = " ".join(f"WHEN '{k}' THEN '{v[0]}'" for k, v in _COST_TYPES.items())
        corrections = " ".join(f"WHEN '{k}' THEN '{v[1]}'" for k, v in _COST_TYPES.items() if v[1])
        credits = "0"
        if "credits" in columns and "amount" in columns["credits"]:
            credits = (
                f"COALESCE(list_sum(list_transform({quote('credits')}, "
                f"lambda c: TRY_CAST(c.amount AS {DECIMAL}))), 0)"
            )
        common = {
            ROW: ROW,
            focus.BILLING_ACCOUNT_ID: quote("billing_account_id"),
            focus.BILLING_CURRENCY: quote("currency"),
            focus.CHARGE_PERIOD_START: quote("usage_start_time"),
            focus.CHARGE_PERIOD_END: quote("usage_end_time"),
            focus.SERVICE_NAME: field("service", "description"),
            focus.RESOURCE_ID: f"COALESCE({resource}, 'projects/' || {project})",
            focus.REGION_ID: field("location", "region") if "location" in columns else "NULL",
            focus.SKU_ID: field("sku", "id"),
            focus.X_PROVIDER: "'gcp'",
            focus.X_USAGE_TYPE: field("sku", "description"),
            IS_STORAGE: f"{field('service', 'description')} = {focus.sql_text(STORAGE_SERVICE)}",
            # the resource's labels (a list of key and value); project labels are not the job's
            TAGS: tags_sql(columns, "labels" if "labels" in columns else None),
        }
        usage = {
            **common,
            focus.BILLED_COST: quote("cost"),
            focus.EFFECTIVE_COST: quote("cost"),
            focus.LIST_COST: quote("cost_at_list") if "cost_at_list" in columns else "NULL",
            focus.CHARGE_CATEGORY: f"CASE {cost_type} {category} ELSE 'Usage' END",
            focus.CHARGE_CLASS: f"CASE {cost_type} {corrections} END",
            focus.CONSUMED_QUANTITY: field("usage", "amount"),
            focus.CONSUMED_UNIT: field("usage", "unit"),
        }
        credit = {
            **common,
            focus.BILLED_COST: credits,
            focus.EFFECTIVE_COST: credits,
            focus.LIST_COST: "NULL",
            focus.CHARGE_CATEGORY: f"'{focus.CREDIT}'",
            focus.CHARGE_CLASS: "NULL",
            focus.CONSUMED_QUANTITY: "NULL",
            focus.CONSUMED_UNIT: "NULL",
        }
        order = list(usage)

        def select(values: dict[str, str]) -> str:
            return "SELECT " + ", ".join(f"{values[name]} AS {quote(name)}" for name in order)

        sql = f"{select(usage)} FROM billing_input"
        if credits != "0":
            sql += f" UNION ALL {select(credit)} FROM billing_input WHERE len({quote('credits')}) > 0"
        origin = {
            focus.BILLED_COST: "cost",
            focus.EFFECTIVE_COST: "cost",
            focus.BILLING_CURRENCY: "currency",
            focus.CHARGE_PERIOD_START: "usage_start_time",
            focus.CHARGE_PERIOD_END: "usage_end_time",
            focus.CONSUMED_QUANTITY: "usage.amount",
        }
        return Normalised(sql, origin, tags_column="labels" if "labels" in columns else None)


# ---------------------------------------------------------------- the BigQuery export itself

_EXPORT_QUERY = """
SELECT
  billing_account_id,
  DATE(usage_start_time) AS usage_day,
  project.id AS project_id,
  {resource} AS resource_name,
  sku.id AS sku_id,
  sku.description AS sku_description,
  location.region AS region,
  currency,
  cost_type,
  usage.unit AS usage_unit,{whole_bill_columns}
  SUM(CAST(cost AS NUMERIC)) AS cost,
  SUM(IFNULL((SELECT SUM(CAST(c.amount AS NUMERIC)) FROM UNNEST(credits) AS c), 0)) AS credits,
  SUM(CAST(usage.amount AS NUMERIC)) AS usage_amount,
  COUNT(*) AS export_rows
FROM `{table}`
WHERE {service_filter}
  AND usage_start_time >= @window_start
  AND usage_start_time < @window_end{partition_filter}
GROUP BY billing_account_id, usage_day, project_id, resource_name, sku_id, sku_description, region,
  currency, cost_type, usage_unit{whole_bill_groups}
"""

_FOCUS_QUERY = """
SELECT
  BillingAccountId AS billing_account_id,
  DATE(ChargePeriodStart) AS usage_day,
  ResourceId AS resource_name,
  SkuId AS sku_id,
  ChargeDescription AS sku_description,
  RegionId AS region,
  BillingCurrency AS currency,
  ChargeCategory AS charge_category,
  ChargeClass AS charge_class,
  ConsumedUnit AS usage_unit,{whole_bill_columns}
  SUM(CAST(BilledCost AS NUMERIC)) AS cost,
  SUM(CAST(EffectiveCost AS NUMERIC)) AS effective_cost,
  SUM(CAST(ListCost AS NUMERIC)) AS list_cost,
  SUM(CAST(ConsumedQuantity AS NUMERIC)) AS usage_amount,
  COUNT(*) AS export_rows
FROM `{table}`
WHERE {service_filter}
  AND ChargePeriodStart >= @window_start
  AND ChargePeriodStart < @window_end
GROUP BY billing_account_id, usage_day, resource_name, sku_id, sku_description, region, currency,
  charge_category, charge_class, usage_unit{whole_bill_groups}
"""


def _hour_sql(start: str, end: str) -> str:
    """GoogleSQL: the UTC hour of a usage period within one clock hour (the export's hourly rows), else
    NULL."""
    return (
        f"IF({end} > {start} AND TIMESTAMP_TRUNC({start}, HOUR) = "
        f"TIMESTAMP_TRUNC(TIMESTAMP_SUB({end}, INTERVAL 1 MICROSECOND), HOUR), EXTRACT(HOUR FROM {start}), NULL)"
    )


def export_query(table: str, kind: str, partition_filter: bool = True, all_services: bool = False) -> str:
    """The import query; `all_services`: every service, per service, UTC hour (of the rows within one
    hour) and (export tables) the resource's labels, as JSON text of their list of key and value."""
    if kind not in TABLE_KINDS:
        raise ValueError(f"table_kind {kind!r} must be one of {', '.join(TABLE_KINDS)}")
    whole_bill: dict[str, str] = {
        "service_filter": "ServiceName = @service" if kind == FOCUS else "service.description = @service",
        "whole_bill_columns": "",
        "whole_bill_groups": "",
    }
    if all_services:
        service = "ServiceName" if kind == FOCUS else "service.description"
        labels = "" if kind == FOCUS else "\n  TO_JSON_STRING(labels) AS labels,"
        hour = (
            _hour_sql("ChargePeriodStart", "ChargePeriodEnd")
            if kind == FOCUS
            else _hour_sql("usage_start_time", "usage_end_time")
        )
        whole_bill = {
            "service_filter": "TRUE",
            "whole_bill_columns": f"\n  {service} AS service_name,{labels}\n  {hour} AS usage_hour,",
            "whole_bill_groups": ", service_name" + ("" if kind == FOCUS else ", labels") + ", usage_hour",
        }
    if kind == FOCUS:
        return _FOCUS_QUERY.format(table=table, **whole_bill)
    return _EXPORT_QUERY.format(
        table=table,
        **whole_bill,
        resource="resource.name" if kind == DETAILED else "CAST(NULL AS STRING)",
        # the export tables are partitioned by the time rows were written: data for a day is
        # written on that day or later, so older partitions are never read
        partition_filter="\n  AND _PARTITIONTIME >= TIMESTAMP_SUB(@window_start, INTERVAL 1 DAY)"
        if partition_filter
        else "",
    )


def _parameter(name: str, type_: str, value: str) -> dict[str, Any]:
    return {"name": name, "parameterType": {"type": type_}, "parameterValue": {"value": value}}


def query_configuration(
    table: str,
    kind: str,
    window: DateWindow,
    partition_filter: bool = True,
    maximum_bytes_billed: int | None = None,
    all_services: bool = False,
) -> dict[str, Any]:
    """The jobs.insert configuration of the import query."""
    start = f"{window.start.isoformat()} 00:00:00+00:00"
    end = f"{window.end.isoformat()} 00:00:00+00:00"
    query: dict[str, Any] = {
        "query": export_query(table, kind, partition_filter, all_services),
        "useLegacySql": False,
        "parameterMode": "NAMED",
        "queryParameters": [
            *([] if all_services else [_parameter("service", "STRING", STORAGE_SERVICE)]),
            _parameter("window_start", "TIMESTAMP", start),
            _parameter("window_end", "TIMESTAMP", end),
        ],
    }
    if maximum_bytes_billed:
        query["maximumBytesBilled"] = str(int(maximum_bytes_billed))
    return {"query": query}


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def rows_to_focus(rows: list[dict[str, Any]], kind: str) -> list[focus.FocusRow]:
    """FOCUS rows from the query's sums; a row's credits become a row of their own, as in FOCUS."""
    result = []
    for row in rows:
        day = row["usage_day"]
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        period = dt.timedelta(days=1)
        if row.get("usage_hour") is not None:  # an hourly row of the whole bill keeps its hour
            start, period = start + dt.timedelta(hours=int(row["usage_hour"])), dt.timedelta(hours=1)
        resource = row.get("resource_name") or (
            f"projects/{row['project_id']}" if row.get("project_id") else None
        )
        if kind == FOCUS:
            category, charge_class = row.get("charge_category") or focus.USAGE, row.get("charge_class")
        else:
            category, charge_class = _COST_TYPES.get(row.get("cost_type") or "regular", (focus.USAGE, None))
        common = {
            "BillingAccountId": row["billing_account_id"],
            "BillingCurrency": row["currency"],
            "ChargePeriodStart": start,
            "ChargePeriodEnd": start + period,
            "ServiceName": row.get("service_name") or STORAGE_SERVICE,
            "Tags": row.get("labels"),
            "ResourceId": resource,
            "RegionId": row.get("region"),
            "SkuId": row.get("sku_id"),
            "x_Provider": "gcp",
            "x_UsageType": row.get("sku_description"),
        }
        cost = _decimal(row["cost"])
        result.append(
            focus.FocusRow(
                **common,
                BilledCost=cost,
                EffectiveCost=_decimal(row.get("effective_cost", cost)),
                ListCost=_decimal(row.get("list_cost")),
                ChargeCategory=category,
                ChargeClass=charge_class,
                ConsumedQuantity=_decimal(row.get("usage_amount")),
                ConsumedUnit=row.get("usage_unit"),
            )
        )
        credits = _decimal(row.get("credits")) or Decimal(0)
        if credits:
            result.append(
                focus.FocusRow(
                    **common, BilledCost=credits, EffectiveCost=credits, ChargeCategory=focus.CREDIT
                )
            )
    return result


def run_query(
    configuration: dict[str, Any],
    what: str,
    *,
    gcp_conn_id: str,
    project_id: str | None,
    location: str | None,
    timeout: float,
) -> tuple[list[dict[str, Any]], Any]:
    """Run a query job through the Google provider's BigQueryHook and read all of its rows (and the
    job); a failure is a BillingSourceError naming `what`."""
    with provider_required("google", what):
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    hook = BigQueryHook(gcp_conn_id=gcp_conn_id, location=location, use_legacy_sql=False)
    try:
        job = hook.insert_job(
            configuration=configuration,
            project_id=project_id or hook.project_id,
            location=location,
            nowait=False,
            timeout=timeout,
        )
        rows = [dict(row.items()) for row in job.result(page_size=10_000, timeout=timeout)]
    except Exception as error:
        raise BillingSourceError(f"{what} failed: {type(error).__name__}: {error}") from error
    return rows, job


def query_export(
    table: str,
    window: DateWindow,
    *,
    gcp_conn_id: str = "google_cloud_default",
    project_id: str | None = None,
    location: str | None = None,
    kind: str | None = None,
    partition_filter: bool = True,
    maximum_bytes_billed: int | None = None,
    timeout: float = QUERY_TIMEOUT_SECONDS,
    all_services: bool = False,
) -> CollectedCosts:
    """Run the import query on the export table (`project.dataset.table`) and read its sums;
    `all_services`: the whole bill, not only Cloud Storage."""
    kind = kind or table_kind(table)
    configuration = query_configuration(
        table, kind, window, partition_filter, maximum_bytes_billed, all_services=all_services
    )
    rows, job = run_query(
        configuration,
        f"the Cloud Billing export query on {table}",
        gcp_conn_id=gcp_conn_id,
        project_id=project_id,
        location=location,
        timeout=timeout,
    )
    log.info("Cloud Billing export %s: %d sums for %s (job %s)", table, len(rows), window, job.job_id)
    collected = read_rows(
        rows_to_focus(rows, kind),
        "gcp-billing-export",
        f"bigquery:{table}",
        window,
        all_services=all_services,
    )
    export_rows = sum(int(row.get("export_rows") or 0) for row in rows)
    collected.rows_read = collected.rows_imported = export_rows
    return collected
