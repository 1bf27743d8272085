"""Databricks billable usage: `system.billing.usage` priced by `system.billing.list_prices`.

One statement through the SQL Statement Execution API (POST /api/2.0/sql/statements) on a SQL
warehouse, with the Databricks provider's connection (host and token, as the instrumentation's REST
calls use them). The usage is summed per day (and UTC hour, for the records within one clock hour, as
the table's hourly records are), account, workspace, SKU, unit, job run, warehouse, cluster, pipeline
update and custom tags, and joined to the list price in effect when the usage ended.
Each sum is one FOCUS row: ResourceId = the warehouse id, else the pipeline id, else the cluster id,
else the job id; Tags = the custom tags (where this project's `openlineage_run_id` travels), the
`job_run_id`, and a pipeline's `dlt_pipeline_id` and `dlt_update_id`; BilledCost =
ListCost = quantity x list price. Negotiated discounts are not in `list_prices`: the list price is
what the rows say.

Reading the tables needs `USE CATALOG` on `system`, `USE SCHEMA` on `system.billing` and `SELECT` on
both tables for the connection's principal (an account admin enables the billing system schema).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError, provider_required
from airflow_cost_provider.billing.importer import CollectedCosts, read_rows
from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)

SOURCE = "databricks-usage"
PROVIDER = "databricks"
SERVICE_NAME = "Databricks"
SERVICE_CATEGORY = "Compute"
USAGE_TABLE = "system.billing.usage"
PRICES_TABLE = "system.billing.list_prices"
STATEMENTS_PATH = "/api/2.0/sql/statements"
JOB_RUN_TAG = "job_run_id"
PIPELINE_TAG = "dlt_pipeline_id"
UPDATE_TAG = "dlt_update_id"
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 600.0
# how long the API holds the first answer; a longer statement is polled
WAIT_SECONDS = 30
POLL_SECONDS = 2.0
MAX_CHUNKS = 10_000
UNFINISHED = ("PENDING", "RUNNING")

# the UTC hour of a record within one clock hour, from epoch seconds: whatever the session's time zone
_USAGE_HOUR = """CASE WHEN u.usage_end_time > u.usage_start_time
    AND floor(unix_seconds(u.usage_start_time) / 3600) = floor((unix_seconds(u.usage_end_time) - 1) / 3600)
    THEN CAST(floor(unix_seconds(u.usage_start_time) / 3600) % 24 AS INT) END"""

USAGE_SQL = f"""SELECT u.usage_date, {_USAGE_HOUR} AS usage_hour,
  u.account_id, u.workspace_id, u.sku_name, u.usage_unit,
  u.usage_metadata.job_id AS job_id, u.usage_metadata.job_run_id AS job_run_id,
  u.usage_metadata.warehouse_id AS warehouse_id, u.usage_metadata.cluster_id AS cluster_id,
  u.usage_metadata.dlt_pipeline_id AS dlt_pipeline_id, u.usage_metadata.dlt_update_id AS dlt_update_id,
  to_json(u.custom_tags) AS custom_tags, lp.currency_code, lp.pricing.`default` AS list_price,
  SUM(u.usage_quantity) AS usage_quantity
FROM {USAGE_TABLE} AS u
LEFT JOIN {PRICES_TABLE} AS lp
  ON lp.sku_name = u.sku_name AND lp.cloud = u.cloud AND lp.usage_unit = u.usage_unit
  AND u.usage_end_time >= lp.price_start_time
  AND (lp.price_end_time IS NULL OR u.usage_end_time < lp.price_end_time)
WHERE u.usage_date >= :since AND u.usage_date < :until
GROUP BY ALL
ORDER BY usage_date, usage_hour, account_id, workspace_id, sku_name, warehouse_id, dlt_pipeline_id,
  dlt_update_id, cluster_id, job_id, job_run_id, custom_tags"""


# --------------------------------------------------------------------------- request and rows (pure)


def usage_statement(window: DateWindow, warehouse_id: str) -> dict[str, Any]:
    """The Statement Execution API request for the window's usage (the window as DATE parameters)."""
    return {
        "statement": USAGE_SQL,
        "warehouse_id": warehouse_id,
        "parameters": [
            {"name": "since", "value": window.start.isoformat(), "type": "DATE"},
            {"name": "until", "value": window.end.isoformat(), "type": "DATE"},
        ],
        "wait_timeout": f"{WAIT_SECONDS}s",
        "on_wait_timeout": "CONTINUE",
        "disposition": "INLINE",
        "format": "JSON_ARRAY",
    }


def records(manifest: Mapping[str, Any], data_arrays: Iterable[list[list[Any]]]) -> list[dict[str, Any]]:
    """Rows of the result's chunks as dicts by the manifest's column names (values are JSON text)."""
    names = [column["name"] for column in manifest["schema"]["columns"]]
    return [dict(zip(names, row, strict=True)) for data in data_arrays for row in data]


def _tags(custom_tags: str | None, record: Mapping[str, Any]) -> str | None:
    """The custom tags, the job run id and the pipeline and update ids as FocusRow.Tags takes them: a
    JSON object's text."""
    parsed = json.loads(custom_tags) if custom_tags else None
    tags = {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    for key, column in (
        (JOB_RUN_TAG, "job_run_id"),
        (PIPELINE_TAG, "dlt_pipeline_id"),
        (UPDATE_TAG, "dlt_update_id"),
    ):
        if record.get(column):
            tags[key] = str(record[column])
    return json.dumps(tags, sort_keys=True) if tags else None


def usage_rows(usage: Iterable[Mapping[str, Any]]) -> list[focus.FocusRow]:
    """One FOCUS row per summed usage; a row without a list price is an error naming its SKU and day
    (its cost would be missing from the bill)."""
    rows = []
    for index, record in enumerate(usage, start=1):
        quantity = Decimal(str(record["usage_quantity"] or 0))
        if not quantity:
            continue
        day = dt.date.fromisoformat(str(record["usage_date"])[:10])
        if record.get("list_price") is None or not record.get("currency_code"):
            raise BillingDataError(
                PRICES_TABLE,
                f"no list price for SKU {record['sku_name']} in {record['usage_unit']} on {day}: "
                f"{quantity} {record['usage_unit']} of {USAGE_TABLE} could not be priced; nothing was imported",
                row=index,
                column="pricing.default",
            )
        cost = quantity * Decimal(str(record["list_price"]))
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        period = dt.timedelta(days=1)
        if record.get("usage_hour") is not None:  # an hourly record: the import keeps its hour
            start, period = start + dt.timedelta(hours=int(record["usage_hour"])), dt.timedelta(hours=1)
        rows.append(
            focus.FocusRow(
                BillingAccountId=str(record["account_id"]),
                BilledCost=cost,
                BillingCurrency=str(record["currency_code"]),
                ChargePeriodStart=start,
                ChargePeriodEnd=start + period,
                ServiceName=SERVICE_NAME,
                ServiceCategory=SERVICE_CATEGORY,
                # a pipeline's usage is the pipeline's, whichever update cluster ran it
                ResourceId=record.get("warehouse_id")
                or record.get("dlt_pipeline_id")
                or record.get("cluster_id")
                or record.get("job_id"),
                SkuId=str(record["sku_name"]),
                ConsumedQuantity=quantity,
                ConsumedUnit=str(record["usage_unit"]),
                ListCost=cost,
                x_Provider=PROVIDER,
                x_UsageType=str(record["sku_name"]),
                Tags=_tags(record.get("custom_tags"), record),
            )
        )
    return rows


def failure_message(status: Mapping[str, Any], warehouse_id: str) -> str:
    error = status.get("error") or {}
    message = str(error.get("message") or "no message")
    text = (
        f"Databricks statement on SQL warehouse {warehouse_id} {str(status.get('state')).lower()}: {message}"
    )
    if any(
        mark in message
        for mark in ("TABLE_OR_VIEW_NOT_FOUND", "INSUFFICIENT_PERMISSIONS", "PERMISSION_DENIED")
    ):
        text += (
            f". Reading {USAGE_TABLE} and {PRICES_TABLE} needs USE CATALOG on system, USE SCHEMA on "
            "system.billing and SELECT on both tables for the connection's principal, and the billing system "
            "schema enabled by an account admin"
        )
    return text


# --------------------------------------------------------------------------- the API


class StatementClient:
    """The SQL Statement Execution API of one workspace, every request with a timeout and the whole
    statement bounded by `timeout` seconds (then cancelled)."""

    def __init__(
        self,
        databricks_conn_id: str = "databricks_default",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        with provider_required("databricks", "the Databricks usage source"):
            import requests
            from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook

        from airflow_cost_provider.instrumentation.databricks_sql import (
            api_base_of,
            warehouse_id_from_http_path,
        )

        hook = DatabricksSqlHook(databricks_conn_id=databricks_conn_id)
        self.conn_id = databricks_conn_id
        self.api_base = api_base_of(hook)
        self.http_path_warehouse_id = warehouse_id_from_http_path(
            hook.databricks_conn.extra_dejson.get("http_path")
        )
        self.timeout = timeout
        self.sleep = sleep
        self.session = requests.Session()
        try:
            token = hook._get_token(raise_error=True)
        except Exception as error:
            raise BillingSourceError(
                f"Databricks connection {databricks_conn_id!r}: no token: {type(error).__name__}: {error}"
            ) from None
        self.session.headers.update({"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        try:
            response = self.session.request(
                method,
                f"{self.api_base}{path}",
                json=body,
                timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS + WAIT_SECONDS),
            )
        except requests.RequestException as error:
            raise BillingSourceError(
                f"Databricks SQL Statement Execution API ({self.conn_id!r}): {type(error).__name__}: {error}"
            ) from None
        if response.status_code >= 400:
            try:
                answer = response.json()
            except ValueError:
                answer = {"message": response.text[:300]}
            raise BillingSourceError(
                f"Databricks SQL Statement Execution API answered HTTP {response.status_code} "
                f"{answer.get('error_code') or ''}: {answer.get('message') or 'no message'}"
            )
        return response.json()

    def run(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Run the statement, wait for it within the budget, and read every chunk of its result."""
        deadline = time.monotonic() + self.timeout
        answer = self._call("POST", STATEMENTS_PATH, request)
        statement_id = quote(str(answer.get("statement_id") or ""), safe="")
        while (answer.get("status") or {}).get("state") in UNFINISHED:
            if time.monotonic() + POLL_SECONDS > deadline:
                self._call("POST", f"{STATEMENTS_PATH}/{statement_id}/cancel")
                raise BillingSourceError(
                    f"Databricks statement {statement_id} on SQL warehouse {request['warehouse_id']} did not finish "
                    f"within {self.timeout:g} s and was cancelled; start the warehouse first or raise the timeout"
                )
            self.sleep(POLL_SECONDS)
            answer = self._call("GET", f"{STATEMENTS_PATH}/{statement_id}")
        status = answer.get("status") or {}
        if status.get("state") != "SUCCEEDED":
            raise BillingSourceError(failure_message(status, request["warehouse_id"]))
        manifest = answer.get("manifest") or {}
        if manifest.get("truncated"):
            raise BillingSourceError(
                f"Databricks truncated the result of statement {statement_id}: import a shorter window"
            )
        result = answer.get("result") or {}
        chunks = [result.get("data_array") or []]
        for _ in range(MAX_CHUNKS):
            next_index = result.get("next_chunk_index")
            if next_index is None:
                return records(manifest, chunks)
            result = self._call("GET", f"{STATEMENTS_PATH}/{statement_id}/result/chunks/{int(next_index)}")
            chunks.append(result.get("data_array") or [])
        raise BillingSourceError(f"Databricks statement {statement_id}: more than {MAX_CHUNKS} result chunks")


def fetch_rows(
    window: DateWindow,
    *,
    databricks_conn_id: str = "databricks_default",
    warehouse_id: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    client: StatementClient | None = None,
) -> list[focus.FocusRow]:
    """The window's billable usage at list price. The SQL warehouse is `warehouse_id`, else the one
    the connection's `http_path` names. Raises BillingSourceError or BillingDataError."""
    client = client or StatementClient(databricks_conn_id, timeout)
    warehouse_id = warehouse_id or client.http_path_warehouse_id
    if not warehouse_id:
        raise BillingSourceError(
            f"Databricks connection {databricks_conn_id!r} names no SQL warehouse: pass warehouse_id or set "
            "http_path (/sql/1.0/warehouses/<id>) in its extra"
        )
    usage = client.run(usage_statement(window, warehouse_id))
    rows = usage_rows(usage)
    log.info("Databricks usage: %d sums read, %d rows", len(usage), len(rows))
    return rows


def fetch(
    window: DateWindow,
    *,
    databricks_conn_id: str = "databricks_default",
    warehouse_id: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    client: StatementClient | None = None,
) -> CollectedCosts:
    """`fetch_rows`, read into an import's costs (see `importer.save`)."""
    rows = fetch_rows(
        window,
        databricks_conn_id=databricks_conn_id,
        warehouse_id=warehouse_id,
        timeout=timeout,
        client=client,
    )
    return read_rows(rows, SOURCE, f"databricks-usage:{databricks_conn_id}", window, all_services=True)
