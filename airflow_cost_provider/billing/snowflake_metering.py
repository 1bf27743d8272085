"""Snowflake warehouse metering: what each warehouse was billed, per hour, from ACCOUNT_USAGE.

Read through the Snowflake provider's `SnowflakeHook` (its connection names the account and the role):

- `WAREHOUSE_METERING_HISTORY`: credits per warehouse and hour, compute and cloud services apart.
  One FOCUS row per warehouse, hour and SKU (`compute`, `cloud_services`), ResourceId = the warehouse
  name, the credits priced at the list price of the connection's edition (the price book's
  `snowflake/credits` price chosen by `[cost_provider] connection_pricing`, as for the queries the
  instrumentation costs).
- `METERING_DAILY_HISTORY`: cloud services are billed only for what exceeds 10 % of the day's
  warehouse compute credits (UTC days). Snowflake books the difference as a negative
  `CREDITS_ADJUSTMENT_CLOUD_SERVICES`; it becomes one Credit row per day on the account (no resource).
  The daily view lags the hourly one by a few hours: a day it does not have yet gets the adjustment
  the same rule gives from the hourly rows.
- `QUERY_ATTRIBUTION_HISTORY`: the compute credits of each query, with the OpenLineage run id from
  the JSON `QUERY_TAG` this project sets. `fetch` reads it in the same session and the import keeps
  each query's credits on the ledger's usage of that query id (`attributed_credits`), so
  reconciliation weighs a warehouse's lines by what Snowflake attributed to them. It leaves out
  queries of about 100 ms or less and the warehouse's idle time, so its credits add up to less than
  the warehouse's metered compute.

Reading ACCOUNT_USAGE needs `IMPORTED PRIVILEGES` on the `SNOWFLAKE` database (or its database role
`SNOWFLAKE.USAGE_VIEWER`) for the connection's role; a missing grant is one error naming the view.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from decimal import Decimal
from typing import Any

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError, provider_required
from airflow_cost_provider.billing.importer import CollectedCosts, read_rows
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.pricing.model import Price, Usage

log = logging.getLogger(__name__)

SOURCE = "snowflake-metering"
PROVIDER = "snowflake"
SERVICE_NAME = "Snowflake Warehouse"
SERVICE_CATEGORY = "Compute"
CREDITS_UNIT = "Credits"
COMPUTE = "compute"
CLOUD_SERVICES = "cloud_services"
# cloud services are free up to this share of the day's warehouse compute credits
CLOUD_SERVICES_FREE_SHARE = Decimal("0.1")
ACCOUNT_USAGE = "SNOWFLAKE.ACCOUNT_USAGE"
METERING_VIEW = f"{ACCOUNT_USAGE}.WAREHOUSE_METERING_HISTORY"
DAILY_VIEW = f"{ACCOUNT_USAGE}.METERING_DAILY_HISTORY"
ATTRIBUTION_VIEW = f"{ACCOUNT_USAGE}.QUERY_ATTRIBUTION_HISTORY"
# the provider's own sessions are tagged so that they can be told apart from the tasks' queries
IMPORT_QUERY_TAG = json.dumps({"airflow_cost_provider": "billing_import"}, separators=(",", ":"))
DEFAULT_TIMEOUT_SECONDS = 300.0
# Snowflake's error for an object that does not exist *or* that the role may not see
OBJECT_NOT_AUTHORIZED = 2003
RUN_ID_TAG = "openlineage_run_id"
LEDGER_SOURCE = "snowflake"  # the ledger source of the queries the instrumentation costs


# --------------------------------------------------------------------------- SQL (pure)


def _timestamp(day: dt.date) -> str:
    return f"TO_TIMESTAMP_TZ('{day.isoformat()}T00:00:00+00:00')"


def metering_sql(window: DateWindow) -> str:
    return (
        "SELECT START_TIME, END_TIME, WAREHOUSE_ID, WAREHOUSE_NAME, CREDITS_USED_COMPUTE, "
        f"CREDITS_USED_CLOUD_SERVICES FROM {METERING_VIEW} "
        f"WHERE START_TIME >= {_timestamp(window.start)} AND START_TIME < {_timestamp(window.end)} "
        "ORDER BY START_TIME, WAREHOUSE_NAME"
    )


def daily_adjustment_sql(window: DateWindow) -> str:
    return (
        "SELECT USAGE_DATE, SUM(CREDITS_ADJUSTMENT_CLOUD_SERVICES) AS CREDITS_ADJUSTMENT_CLOUD_SERVICES "
        f"FROM {DAILY_VIEW} WHERE SERVICE_TYPE = 'WAREHOUSE_METERING' "
        f"AND USAGE_DATE >= '{window.start.isoformat()}' AND USAGE_DATE < '{window.end.isoformat()}' "
        "GROUP BY USAGE_DATE ORDER BY USAGE_DATE"
    )


def attribution_sql(window: DateWindow) -> str:
    return (
        "SELECT QUERY_ID, QUERY_TAG, WAREHOUSE_NAME, CREDITS_ATTRIBUTED_COMPUTE, START_TIME "
        f"FROM {ATTRIBUTION_VIEW} "
        f"WHERE START_TIME >= {_timestamp(window.start)} AND START_TIME < {_timestamp(window.end)} "
        "ORDER BY START_TIME, QUERY_ID"
    )


# --------------------------------------------------------------------------- rows (pure)


def _upper_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).upper(): value for key, value in row.items()}


def _utc(value: Any) -> dt.datetime:
    """A TIMESTAMP_LTZ/TZ as the connector returns it (aware) or an NTZ one (read as UTC)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return (
        value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    )


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return _utc(value).date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _credits(value: Any, view: str, row: int, column: str) -> Decimal:
    if value is None:
        raise BillingDataError(view, "no credits (NULL)", row=row, column=column)
    return Decimal(str(value))


@dataclasses.dataclass(frozen=True)
class WarehouseHour:
    start: dt.datetime
    end: dt.datetime
    warehouse: str
    compute: Decimal
    cloud_services: Decimal


def parse_metering(records: Iterable[Mapping[str, Any]]) -> list[WarehouseHour]:
    """WAREHOUSE_METERING_HISTORY rows; a row without a warehouse name or credits is an error that
    names it (its credits cannot be billed to anything)."""
    hours = []
    for index, raw in enumerate(records, start=1):
        row = _upper_keys(raw)
        start = _utc(row["START_TIME"])
        name = row.get("WAREHOUSE_NAME")
        if name is None or not str(name).strip():
            raise BillingDataError(
                METERING_VIEW,
                f"the hour starting {start:%Y-%m-%d %H:%M} UTC of warehouse id {row.get('WAREHOUSE_ID')} has no "
                "warehouse name: its credits could not be billed to a warehouse; nothing was imported",
                row=index,
                column="WAREHOUSE_NAME",
            )
        hours.append(
            WarehouseHour(
                start=start,
                end=_utc(row["END_TIME"]),
                warehouse=str(name),
                compute=_credits(
                    row.get("CREDITS_USED_COMPUTE"), METERING_VIEW, index, "CREDITS_USED_COMPUTE"
                ),
                cloud_services=_credits(
                    row.get("CREDITS_USED_CLOUD_SERVICES"),
                    METERING_VIEW,
                    index,
                    "CREDITS_USED_CLOUD_SERVICES",
                ),
            )
        )
    return hours


def parse_daily_adjustments(records: Iterable[Mapping[str, Any]]) -> dict[dt.date, Decimal]:
    """CREDITS_ADJUSTMENT_CLOUD_SERVICES (zero or negative) per UTC day."""
    adjustments: dict[dt.date, Decimal] = {}
    for index, raw in enumerate(records, start=1):
        row = _upper_keys(raw)
        value = row.get("CREDITS_ADJUSTMENT_CLOUD_SERVICES")
        adjustments[_day(row["USAGE_DATE"])] = (
            Decimal(0)
            if value is None
            else _credits(value, DAILY_VIEW, index, "CREDITS_ADJUSTMENT_CLOUD_SERVICES")
        )
    return adjustments


def cloud_services_adjustment(compute: Decimal, cloud_services: Decimal) -> Decimal:
    """The day's adjustment by the 10 % rule: minus the cloud services credits that are free."""
    return -min(cloud_services, compute * CLOUD_SERVICES_FREE_SHARE)


def daily_adjustments(
    hours: list[WarehouseHour], reported: Mapping[dt.date, Decimal]
) -> dict[dt.date, Decimal]:
    """Each day's adjustment: as METERING_DAILY_HISTORY reports it, else by the 10 % rule."""
    compute: dict[dt.date, Decimal] = defaultdict(Decimal)
    cloud_services: dict[dt.date, Decimal] = defaultdict(Decimal)
    for hour in hours:
        compute[hour.start.date()] += hour.compute
        cloud_services[hour.start.date()] += hour.cloud_services
    days = sorted(set(compute) | set(reported))
    return {
        day: reported[day]
        if day in reported
        else cloud_services_adjustment(compute[day], cloud_services[day])
        for day in days
    }


PriceOf = Callable[[dt.date], Price]


def metering_rows(
    hours: list[WarehouseHour], adjustments: Mapping[dt.date, Decimal], price_of: PriceOf, account: str
) -> list[focus.FocusRow]:
    """FOCUS rows: per warehouse, hour and SKU the credits x the day's credit price; per day the cloud
    services adjustment as a Credit on the account. Rows of zero credits are left out."""
    rows = []
    for hour in hours:
        price = price_of(hour.start.date())
        for sku, credits in ((COMPUTE, hour.compute), (CLOUD_SERVICES, hour.cloud_services)):
            if credits:
                rows.append(_row(account, price, credits, hour.start, hour.end, sku, hour.warehouse))
    for day, credits in sorted(adjustments.items()):
        if credits:
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            rows.append(
                _row(
                    account,
                    price_of(day),
                    credits,
                    start,
                    start + dt.timedelta(days=1),
                    CLOUD_SERVICES,
                    None,
                    focus.CREDIT,
                )
            )
    return rows


def _row(
    account: str,
    price: Price,
    credits: Decimal,
    start: dt.datetime,
    end: dt.datetime,
    sku: str,
    warehouse: str | None,
    category: str = focus.USAGE,
) -> focus.FocusRow:
    cost = credits * price.amount
    return focus.FocusRow(
        BillingAccountId=account,
        BilledCost=cost,
        BillingCurrency=price.currency,
        ChargePeriodStart=start,
        ChargePeriodEnd=end,
        ChargeCategory=category,
        ServiceName=SERVICE_NAME,
        ServiceCategory=SERVICE_CATEGORY,
        ResourceId=warehouse,
        SkuId=sku,
        ConsumedQuantity=credits,
        ConsumedUnit=CREDITS_UNIT,
        ListCost=cost,
        x_Provider=PROVIDER,
        x_UsageType=sku,
    )


@dataclasses.dataclass(frozen=True)
class AttributedQuery:
    """One query's compute credits as QUERY_ATTRIBUTION_HISTORY attributes them (no idle time)."""

    query_id: str
    warehouse: str | None
    credits: Decimal
    openlineage_run_id: str | None
    start_time: dt.datetime


def run_id_of(query_tag: str | None) -> str | None:
    """The OpenLineage run id in the JSON QUERY_TAG this project sets (see tagging.labels); None
    for a query without it or with a tag of its own that is not JSON."""
    if not query_tag:
        return None
    try:
        parsed = json.loads(query_tag)
    except ValueError:
        return None
    value = parsed.get(RUN_ID_TAG) if isinstance(parsed, dict) else None
    return str(value) if value else None


def parse_attribution(records: Iterable[Mapping[str, Any]]) -> list[AttributedQuery]:
    queries = []
    for index, raw in enumerate(records, start=1):
        row = _upper_keys(raw)
        warehouse = row.get("WAREHOUSE_NAME")
        queries.append(
            AttributedQuery(
                query_id=str(row["QUERY_ID"]),
                warehouse=str(warehouse) if warehouse else None,
                credits=_credits(
                    row.get("CREDITS_ATTRIBUTED_COMPUTE"),
                    ATTRIBUTION_VIEW,
                    index,
                    "CREDITS_ATTRIBUTED_COMPUTE",
                ),
                openlineage_run_id=run_id_of(row.get("QUERY_TAG")),
                start_time=_utc(row["START_TIME"]),
            )
        )
    return queries


# --------------------------------------------------------------------------- prices


def credit_prices(conn_id: str, book: Any = None) -> PriceOf:
    """The list price of a credit on a day at the connection's edition: the price book entry the
    instrumentation's estimates use. Raises BillingSourceError naming the setting to add."""
    from airflow_cost_provider import conf

    if book is None:
        from airflow_cost_provider.tracker import price_book

        book = price_book()
    attributes = conf.pricing_for_connection(conn_id)
    found: dict[dt.date, Price] = {}

    def price_of(day: dt.date) -> Price:
        if day not in found:
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            usage = Usage(PROVIDER, "credits", Decimal(1), "credit", start_time=start, attributes=attributes)
            price = book.find(usage)
            if price is None:
                raise BillingSourceError(
                    f"no Snowflake credit price for connection {conn_id!r} (attributes {attributes or 'none'}): "
                    "set its edition in [cost_provider] connection_pricing, e.g. "
                    f'{{"{conn_id}": {{"edition": "enterprise"}}}}, or add a snowflake/credits price to '
                    "your price book"
                )
            if price.unit != "credit":
                raise BillingSourceError(
                    f"the Snowflake price {price.ref} is per {price.unit}, not per credit: metering is in credits"
                )
            found[day] = price
        return found[day]

    return price_of


# --------------------------------------------------------------------------- the connection


class MeteringSession:
    """One connector session of the hook's connection, every call bounded by `timeout` seconds."""

    def __init__(self, conn_id: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        with provider_required("snowflake", "the Snowflake metering source"):
            from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook
            from snowflake.connector import connect

        self.conn_id = conn_id
        self.timeout = max(1, int(timeout))
        params = dict(SnowflakeHook(snowflake_conn_id=conn_id)._get_conn_params())
        self.account = str(params.get("account") or "")
        self.role = params.get("role") or None
        if not self.account:
            raise BillingSourceError(f"Snowflake connection {conn_id!r} names no account")
        session_parameters = {
            key: value
            for key, value in (params.get("session_parameters") or {}).items()
            if str(key).upper() != "QUERY_TAG"
        }
        session_parameters["QUERY_TAG"] = IMPORT_QUERY_TAG
        params.update(
            session_parameters=session_parameters,
            login_timeout=self.timeout,
            network_timeout=self.timeout,
            socket_timeout=self.timeout,
        )
        try:
            self.connection = connect(**params)
        except Exception as error:
            raise BillingSourceError(
                f"Snowflake connection {conn_id!r}: could not connect: {type(error).__name__}: {error}"
            ) from None

    def rows(self, sql: str, view: str) -> list[dict[str, Any]]:
        from snowflake.connector.errors import ProgrammingError

        try:
            with closing(self.connection.cursor()) as cursor:
                cursor.execute(sql, timeout=self.timeout)
                columns = [column[0] for column in cursor.description or ()]
                return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        except ProgrammingError as error:
            if getattr(error, "errno", None) == OBJECT_NOT_AUTHORIZED:
                role = f"role {self.role}" if self.role else "the connection's role"
                raise BillingSourceError(
                    f"Snowflake connection {self.conn_id!r} cannot read {view}: it does not exist or {role} "
                    "may not see it. Grant it: GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE "
                    f"{self.role or '<role>'} (or the database role SNOWFLAKE.USAGE_VIEWER)"
                ) from None
            raise BillingSourceError(f"Snowflake: reading {view} failed: {error.msg or error}") from None
        except Exception as error:
            raise BillingSourceError(
                f"Snowflake: reading {view} failed: {type(error).__name__}: {error}"
            ) from None

    def close(self) -> None:
        self.connection.close()


# --------------------------------------------------------------------------- fetches


def _read(
    window: DateWindow, snowflake_conn_id: str, timeout: float, book: Any, attribution: bool
) -> tuple[list[focus.FocusRow], list[AttributedQuery] | None]:
    price_of = credit_prices(snowflake_conn_id, book)
    price_of(window.start)  # a connection without an edition fails before any query is run
    session = MeteringSession(snowflake_conn_id, timeout)
    queries = None
    try:
        hours = parse_metering(session.rows(metering_sql(window), METERING_VIEW))
        reported = parse_daily_adjustments(session.rows(daily_adjustment_sql(window), DAILY_VIEW))
        if attribution:
            try:
                queries = parse_attribution(session.rows(attribution_sql(window), ATTRIBUTION_VIEW))
            except BillingSourceError as error:
                # the bill stands without it: reconciliation weighs the lines by their estimates
                log.warning("Snowflake metering imported without per-query credits: %s", error)
    finally:
        session.close()
    rows = metering_rows(hours, daily_adjustments(hours, reported), price_of, session.account)
    log.info("Snowflake metering: %d warehouse-hours, %d rows", len(hours), len(rows))
    return rows, queries


def fetch_rows(
    window: DateWindow,
    *,
    snowflake_conn_id: str = "snowflake_default",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    book: Any = None,
) -> list[focus.FocusRow]:
    """The warehouses' metered credits of the window, priced, with the cloud services adjustment.
    Raises BillingSourceError (connection, grant, price) or BillingDataError (a row)."""
    return _read(window, snowflake_conn_id, timeout, book, attribution=False)[0]


def query_credits(queries: Iterable[AttributedQuery]) -> dict[str, Decimal]:
    """Compute credits per query id (a query's rows summed)."""
    credits: dict[str, Decimal] = defaultdict(Decimal)
    for query in queries:
        credits[query.query_id] += query.credits
    return dict(credits)


def fetch(
    window: DateWindow,
    *,
    snowflake_conn_id: str = "snowflake_default",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    book: Any = None,
    attribution: bool = True,
) -> CollectedCosts:
    """`fetch_rows`, read into an import's costs (see `importer.save`), with each query's attributed
    credits (`attribution`), which the import keeps on the ledger's lines of those queries. A role
    that may not read QUERY_ATTRIBUTION_HISTORY imports the bill without them (a warning says so)."""
    rows, queries = _read(window, snowflake_conn_id, timeout, book, attribution)
    collected = read_rows(rows, SOURCE, f"snowflake-metering:{snowflake_conn_id}", window, all_services=True)
    if queries is not None:
        collected.query_credits = query_credits(queries)
        collected.query_credits_source = LEDGER_SOURCE
    return collected


def fetch_query_attribution(
    window: DateWindow,
    *,
    snowflake_conn_id: str = "snowflake_default",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[AttributedQuery]:
    """Each query's attributed compute credits in the window (queries of ~100 ms or less and idle
    time are not in the view)."""
    session = MeteringSession(snowflake_conn_id, timeout)
    try:
        return parse_attribution(session.rows(attribution_sql(window), ATTRIBUTION_VIEW))
    finally:
        session.close()
