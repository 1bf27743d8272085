"""Snowflake warehouse metering read through a real SnowflakeHook from fakesnow's server, whose
SNOWFLAKE.ACCOUNT_USAGE views are tables of synthetic rows: credits per warehouse-hour priced at the
edition's list price, the 10 % cloud services rule per UTC day, per-query attribution with the run id
from the QUERY_TAG, and the errors for a missing grant, a row without a warehouse and no edition."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider import conf
from airflow_cost_provider.billing import focus, importer, registry, snowflake_metering
from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from airflow_cost_provider.tagging import snowflake_query_tag
from tests.support.fake_snowflake import FakesnowServer, self_signed_certificate

CONN_ID = "snowflake_billing"
ACCOUNT = "acme_locator"
WINDOW = DateWindow(dt.date(2026, 11, 2), dt.date(2026, 11, 5))
RUN_ID = "01890e3c-1c4e-7a55-9a0e-5a1f0c2d3e4f"
UTC = dt.timezone.utc

# (start, warehouse, compute credits, cloud services credits); an hour is one hour long
HOURS = [
    ("2026-11-01 23:00:00+00", "WH_ETL", "7", "7"),  # the day before the window
    # 2026-11-02: compute 4.0, cloud services 0.9: 0.5 above the free 10 %
    ("2026-11-02 04:00:00+00", "WH_ETL", "1.5", "0.3"),
    ("2026-11-02 05:00:00+00", "WH_ETL", "2.0", "0.5"),
    ("2026-11-02 10:00:00+00", "WH_BI", "0.5", "0.1"),
    # 2026-11-03 (UTC; the evening before in Los Angeles): cloud services 0.1 of compute 3.0, all free
    ("2026-11-02 20:00:00-08", "WH_ETL", "3.0", "0.1"),
    # 2026-11-04: METERING_DAILY_HISTORY has no row yet: the rule's own adjustment, -0.1
    ("2026-11-04 01:00:00+00", "WH_ETL", "1.0", "0.25"),
    ("2026-11-05 00:00:00+00", "WH_ETL", "9", "9"),  # the day after
]
# USAGE_DATE -> CREDITS_ADJUSTMENT_CLOUD_SERVICES as Snowflake reports it (WAREHOUSE_METERING rows)
DAILY = {"2026-11-01": "-0.7", "2026-11-02": "-0.4", "2026-11-03": "-0.1", "2026-11-05": "-0.9"}


def edition_price(edition: str) -> Decimal:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == "snowflake" and p["metric"] == "credits" and p.get("match") == {"edition": edition}
    ]
    return Decimal(entry["amount"])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def server(certificate):
    running = FakesnowServer(certificate).start()
    yield running
    running.stop()


@pytest.fixture
def snowflake(server, certificate, monkeypatch):
    """The connection, the edition, and the ACCOUNT_USAGE views filled with HOURS and DAILY."""
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate.cert_file))
    monkeypatch.setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
    connection = {
        "conn_type": "snowflake",
        "login": "billing_reader",
        "password": "s3cret-password",
        "extra": server.connection_extra(account=ACCOUNT, role="BILLING_READER"),
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", json.dumps({CONN_ID: {"edition": "enterprise"}})
    )
    conf.clear_cache()
    hook = SnowflakeHook(snowflake_conn_id=CONN_ID)
    view = snowflake_metering.ACCOUNT_USAGE
    hook.run(
        [
            "CREATE DATABASE IF NOT EXISTS SNOWFLAKE",
            f"CREATE SCHEMA IF NOT EXISTS {view}",
            f"CREATE OR REPLACE TABLE {view}.WAREHOUSE_METERING_HISTORY (START_TIME TIMESTAMP_LTZ, "
            "END_TIME TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, CREDITS_USED NUMBER(38,9), "
            "CREDITS_USED_COMPUTE NUMBER(38,9), CREDITS_USED_CLOUD_SERVICES NUMBER(38,9))",
            f"CREATE OR REPLACE TABLE {view}.METERING_DAILY_HISTORY (SERVICE_TYPE VARCHAR, USAGE_DATE DATE, "
            "CREDITS_USED_COMPUTE NUMBER(38,9), CREDITS_USED_CLOUD_SERVICES NUMBER(38,9), "
            "CREDITS_ADJUSTMENT_CLOUD_SERVICES NUMBER(38,9), CREDITS_BILLED NUMBER(38,9))",
            f"CREATE OR REPLACE TABLE {view}.QUERY_ATTRIBUTION_HISTORY (QUERY_ID VARCHAR, QUERY_TAG VARCHAR, "
            "WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, CREDITS_ATTRIBUTED_COMPUTE NUMBER(38,9), "
            "START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ)",
        ]
    )
    values = ", ".join(
        f"('{start}', TIMESTAMPADD(hour, 1, '{start}'::TIMESTAMP_TZ), {len(name)}, '{name}', "
        f"{compute} + {services}, {compute}, {services})"
        for start, name, compute, services in HOURS
    )
    hook.run(f"INSERT INTO {view}.WAREHOUSE_METERING_HISTORY VALUES {values}")
    # other services' rows are not warehouse metering: their adjustment is not ours
    daily = [f"('WAREHOUSE_METERING', '{day}', 0, 0, {adjustment}, 0)" for day, adjustment in DAILY.items()]
    daily.append("('AUTO_CLUSTERING', '2026-11-02', 1, 1, -5, 0)")
    hook.run(f"INSERT INTO {view}.METERING_DAILY_HISTORY VALUES {', '.join(daily)}")
    yield hook


def fetch_rows():
    return snowflake_metering.fetch_rows(WINDOW, snowflake_conn_id=CONN_ID, timeout=30)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def test_each_warehouse_hour_and_sku_is_a_row_priced_at_the_editions_credit_price(snowflake):
    price = edition_price("enterprise")
    rows = fetch_rows()
    usage = [r for r in rows if r.ChargeCategory == focus.USAGE]
    expected = []
    for start, name, compute, services in HOURS[1:-1]:
        for sku, credits in (("compute", compute), ("cloud_services", services)):
            expected.append((name, at(start), at(start) + dt.timedelta(hours=1), sku, Decimal(credits)))
    assert [
        (r.ResourceId, r.ChargePeriodStart, r.ChargePeriodEnd, r.SkuId, r.ConsumedQuantity) for r in usage
    ] == expected
    for row in usage:
        assert row.BilledCost == row.ListCost == row.ConsumedQuantity * price
        assert (row.BillingAccountId, row.BillingCurrency, row.x_Provider) == (ACCOUNT, "USD", "snowflake")
        assert (row.ServiceName, row.ConsumedUnit, row.Tags) == ("Snowflake Warehouse", "Credits", None)
    # the row is the bill's: exact to the credit's last decimal
    assert usage[0].BilledCost == Decimal("4.500000000")


def test_cloud_services_are_billed_only_above_ten_percent_of_the_days_compute(snowflake):
    price = edition_price("enterprise")
    rows = fetch_rows()
    credits = [r for r in rows if r.ChargeCategory == focus.CREDIT]
    assert [(r.ChargePeriodStart.date(), r.ResourceId, r.SkuId, r.ConsumedQuantity) for r in credits] == [
        (dt.date(2026, 11, 2), None, "cloud_services", Decimal("-0.4")),  # reported
        (dt.date(2026, 11, 3), None, "cloud_services", Decimal("-0.1")),  # reported
        (dt.date(2026, 11, 4), None, "cloud_services", Decimal("-0.1")),  # by the rule: 10 % of 1.0
    ]
    billed: dict[tuple[dt.date, str], Decimal] = {}
    for row in rows:
        if row.SkuId == "cloud_services":
            key = (row.ChargePeriodStart.date(), row.BillingCurrency)
            billed[key] = billed.get(key, Decimal(0)) + row.BilledCost
    assert billed == {
        (dt.date(2026, 11, 2), "USD"): Decimal("0.5") * price,  # 0.9 used, 0.4 free
        (dt.date(2026, 11, 3), "USD"): Decimal(0),  # 0.1 used, below 10 % of 3.0
        (dt.date(2026, 11, 4), "USD"): Decimal("0.15") * price,  # 0.25 used, 0.1 free
    }


def test_the_rule_without_the_daily_view():
    adjustment = snowflake_metering.cloud_services_adjustment
    assert adjustment(Decimal("4.0"), Decimal("0.9")) == Decimal("-0.40")
    assert adjustment(Decimal("3.0"), Decimal("0.1")) == Decimal("-0.1")
    assert adjustment(Decimal(0), Decimal("0.2")) == Decimal(0)


def test_query_attribution_keeps_the_run_id_of_the_json_query_tag(snowflake):
    view = snowflake_metering.ATTRIBUTION_VIEW
    ours = snowflake_query_tag({"openlineage_run_id": RUN_ID, "airflow_dag_id": "etl"}, "team=finance")
    snowflake.run(
        f"INSERT INTO {view} VALUES "
        f"('01b0-q1', '{ours}', 1, 'WH_ETL', 0.012345678, '2026-11-02 04:10:00+00', '2026-11-02 04:12:00+00'), "
        "('01b0-q2', 'team=finance', 1, 'WH_ETL', 0.5, '2026-11-02 04:20:00+00', '2026-11-02 04:40:00+00'), "
        "('01b0-q3', NULL, 2, 'WH_BI', 0.25, '2026-11-03 08:00:00+00', '2026-11-03 08:01:00+00'), "
        "('01b0-q4', NULL, 2, 'WH_BI', 1, '2026-11-06 08:00:00+00', '2026-11-06 08:01:00+00')"
    )
    queries = snowflake_metering.fetch_query_attribution(WINDOW, snowflake_conn_id=CONN_ID, timeout=30)
    assert [(q.query_id, q.warehouse, q.credits, q.openlineage_run_id, q.start_time) for q in queries] == [
        ("01b0-q1", "WH_ETL", Decimal("0.012345678"), RUN_ID, at("2026-11-02 04:10:00+00")),
        ("01b0-q2", "WH_ETL", Decimal("0.5"), None, at("2026-11-02 04:20:00+00")),
        ("01b0-q3", "WH_BI", Decimal("0.25"), None, at("2026-11-03 08:00:00+00")),
    ]


def test_a_missing_view_names_it_and_the_grant(snowflake):
    snowflake.run(f"DROP TABLE {snowflake_metering.DAILY_VIEW}")
    with pytest.raises(BillingSourceError) as raised:
        fetch_rows()
    message = str(raised.value)
    assert "cannot read SNOWFLAKE.ACCOUNT_USAGE.METERING_DAILY_HISTORY" in message
    assert "GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE BILLING_READER" in message
    assert "s3cret" not in message


def test_an_hour_without_a_warehouse_name_is_refused_with_the_row(snowflake):
    snowflake.run(
        f"INSERT INTO {snowflake_metering.METERING_VIEW} VALUES "
        "('2026-11-03 07:00:00+00', '2026-11-03 08:00:00+00', 17, NULL, 1, 1, 0)"
    )
    with pytest.raises(BillingDataError) as raised:
        fetch_rows()
    assert raised.value.column == "WAREHOUSE_NAME"
    assert str(raised.value).startswith("SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY, row 5")
    assert "2026-11-03 07:00 UTC of warehouse id 17 has no warehouse name" in str(raised.value)


def test_without_an_edition_the_message_names_the_setting(snowflake, server, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", "{}")
    conf.clear_cache()
    logins = len(server.logins())
    with pytest.raises(BillingSourceError, match=r"set its edition in \[cost_provider\] connection_pricing"):
        fetch_rows()
    assert len(server.logins()) == logins  # refused before connecting


def test_the_rows_import_and_save_into_a_sqlite_ledger(snowflake, tmp_path):
    assert registry.source_provider("snowflake-metering") == "snowflake"
    collected = snowflake_metering.fetch(WINDOW, snowflake_conn_id=CONN_ID, timeout=30)
    assert (collected.source, collected.window, collected.rows_read) == ("snowflake-metering", WINDOW, 13)
    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    summary = importer.save(engine, collected, replace_days=True)
    assert summary.source == "snowflake-metering"
    assert summary.rows_read == 13


def test_the_metered_bill_reconciles_to_the_warehouse_queries_of_the_ledger(snowflake, tmp_path):
    """Metering imported, then reconciled against two tries' queries on WH_ETL at 04:10 on 2026-11-02:
    the bill is per hour, so they share the 04:00 hour (1.8 credits metered, less its piece of the
    cloud services credit), all of it, as they claim 2 credits; 05:00 (2.5 credits) stays idle. Every
    billed row of the window is in a pool, attributed + unattributed = billed for each."""
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.schema import billing_costs, lines, reconciliations
    from tests.support.billing_rows import priced_line, reconcile_window, store_try

    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    importer.save(
        engine, snowflake_metering.fetch(WINDOW, snowflake_conn_id=CONN_ID, timeout=30), replace_days=True
    )
    price = edition_price("enterprise")
    started = at("2026-11-02 04:10:00+00")
    for task, credits in (("load", "1.5"), ("merge", "0.5")):
        line = priced_line(
            "snowflake", credits, "credit", Decimal(credits) * price, "WH_ETL", started, "credits"
        )
        store_try(engine, "warehouse", task, [line], start=started, minutes=5)
    reconcile_window(engine, WINDOW.start, WINDOW.end)
    with engine.connect() as conn:
        billed = conn.execute(sa.select(sa.func.sum(billing_costs.c.amount_nanos))).scalar()
        pools = [dict(row._mapping) for row in conn.execute(sa.select(reconciliations))]
        shares = dict(conn.execute(sa.select(lines.c.amount_nanos, lines.c.reconciled_nanos)).all())
    assert sum(pool["billed_nanos"] for pool in pools) == billed  # every dollar in a pool
    for pool in pools:
        assert pool["attributed_nanos"] + pool["unattributed_nanos"] == pool["billed_nanos"]
    hours = {p["usage_hour"]: p for p in pools if p["pool"] == "WH_ETL" and p["day"] == dt.date(2026, 11, 2)}
    assert sorted(hours) == [4, 5]
    warehouse, idle = hours[4], hours[5]
    # the day's -0.4 credits of cloud services split by cloud services credits: WH_BI's 10:00 (0.1)
    # first, then WH_ETL's 04:00 (0.3) and 05:00 (0.5), cumulatively rounded
    credit = Decimal("-0.4") * price * 10**9
    at_four = round(credit * 4 / 9) - round(credit / 9)
    assert warehouse["billed_nanos"] == Decimal("1.8") * price * 10**9 + at_four
    assert (warehouse["basis"], warehouse["used_share"]) == ("quantity", "1")
    assert warehouse["attributed_nanos"] == warehouse["billed_nanos"]
    assert (idle["basis"], idle["lines"], idle["attributed_nanos"]) == ("none", 0, 0)
    assert idle["unattributed_nanos"] == Decimal("2.5") * price * 10**9 + (credit - round(credit * 4 / 9))
    assert sum(shares.values()) == warehouse["attributed_nanos"]
    assert len(shares) == 2 and None not in shares.values()  # both lines reconciled
    assert shares[int(Decimal("1.5") * price * 10**9)] == round(
        warehouse["attributed_nanos"] * Decimal("0.75")
    )


def test_attributed_credits_weigh_the_lines_and_the_cloud_services_credit_goes_to_the_warehouses(
    snowflake, tmp_path
):
    """QUERY_ATTRIBUTION_HISTORY gives `load`'s query 1.2 credits (estimated 1.5); `merge`'s query was
    too short to be in it and keeps its estimated 0.5. The import keeps the credits on the ledger's
    usage of that query id; reconciling WH_ETL's 04:00 hour of 2026-11-02 (1.8 credits metered, both
    queries started at 04:10) gives the lines 1.7 / 1.8 of its bill, `load` 1.2 / 1.7 of that. The
    day's cloud services credit (-0.4 credits) is split over the warehouse-hours by their cloud
    services credits (WH_BI 10:00 0.1, WH_ETL 04:00 0.3 and 05:00 0.5), so no part of it stays on the
    account. Importing and reconciling again changes nothing."""
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.schema import ATTRIBUTED_CREDITS, billing_costs, lines, reconciliations
    from airflow_cost_provider.ledger.schema import usage as usage_table
    from tests.support.billing_rows import priced_line, reconcile_window, store_try

    view = snowflake_metering.ATTRIBUTION_VIEW
    snowflake.run(
        f"INSERT INTO {view} VALUES "
        "('01b0-load', NULL, 1, 'WH_ETL', 1.2, '2026-11-02 04:10:00+00', '2026-11-02 04:12:00+00'), "
        "('01b0-other', NULL, 1, 'WH_ETL', 0.3, '2026-11-02 05:10:00+00', '2026-11-02 05:12:00+00')"
    )
    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    price = edition_price("enterprise")
    started = at("2026-11-02 04:10:00+00")
    for task, credits in (("load", "1.5"), ("merge", "0.5")):
        line = priced_line(
            "snowflake",
            credits,
            "credit",
            Decimal(credits) * price,
            "WH_ETL",
            started,
            "credits",
            external_id=f"01b0-{task}",
        )
        store_try(engine, "warehouse", task, [line], start=started, minutes=5)

    def import_and_reconcile():
        importer.save(
            engine, snowflake_metering.fetch(WINDOW, snowflake_conn_id=CONN_ID, timeout=30), replace_days=True
        )
        reconcile_window(engine, WINDOW.start, WINDOW.end)
        with engine.connect() as conn:
            return (
                dict(conn.execute(sa.select(usage_table.c.external_id, usage_table.c.attributes)).all()),
                [
                    {k: v for k, v in row._mapping.items() if k not in ("id", "reconciled_at")}
                    for row in conn.execute(sa.select(reconciliations).order_by(reconciliations.c.id))
                ],
                dict(conn.execute(sa.select(lines.c.amount_nanos, lines.c.reconciled_nanos)).all()),
                conn.execute(sa.select(sa.func.sum(billing_costs.c.amount_nanos))).scalar(),
            )

    attributes, pools, shares, billed = import_and_reconcile()
    assert Decimal(attributes["01b0-load"][ATTRIBUTED_CREDITS]) == Decimal("1.2")
    assert ATTRIBUTED_CREDITS not in attributes["01b0-merge"]

    # the cloud services credit: in the warehouses' pools, none left on the account
    assert sum(pool["billed_nanos"] for pool in pools) == billed
    assert not [pool for pool in pools if pool["pool"] == ""]
    day = {(pool["pool"], pool["usage_hour"]): pool for pool in pools if pool["day"] == dt.date(2026, 11, 2)}
    assert sorted(day) == [("WH_BI", 10), ("WH_ETL", 4), ("WH_ETL", 5)]
    credit = Decimal("-0.4") * price * 10**9
    # WH_BI comes first, then WH_ETL's hours: cumulative rounding
    to_bi, to_four = (
        round(credit * Decimal("0.1") / Decimal("0.9")),
        round(credit * Decimal("0.4") / Decimal("0.9")),
    )
    assert day["WH_BI", 10]["billed_nanos"] == (Decimal("0.6") * price * 10**9) + to_bi
    assert day["WH_ETL", 4]["billed_nanos"] == (Decimal("1.8") * price * 10**9) + (to_four - to_bi)
    assert day["WH_ETL", 5]["billed_nanos"] == (Decimal("2.5") * price * 10**9) + (credit - to_four)
    # what the day shows: its compute and the cloud services above 10 % of the day's compute
    assert sum(pool["billed_nanos"] for pool in day.values()) == (Decimal("4.5") * price * 10**9)
    assert (day["WH_ETL", 5]["lines"], day["WH_ETL", 5]["attributed_nanos"]) == (0, 0)  # idle at 05:00

    warehouse = day["WH_ETL", 4]
    assert (warehouse["basis"], warehouse["lines"]) == ("attribution", 2)
    used = Decimal("1.7") / Decimal("1.8")
    assert Decimal(warehouse["used_share"]) == used.quantize(Decimal("1e-9"))
    assert abs(warehouse["attributed_nanos"] - warehouse["billed_nanos"] * used) <= 1
    assert warehouse["attributed_nanos"] + warehouse["unattributed_nanos"] == warehouse["billed_nanos"]
    load, merge = shares[int(Decimal("1.5") * price * 10**9)], shares[int(Decimal("0.5") * price * 10**9)]
    assert load + merge == warehouse["attributed_nanos"]
    assert abs(load - warehouse["attributed_nanos"] * Decimal("1.2") / Decimal("1.7")) <= 1

    assert import_and_reconcile() == (attributes, pools, shares, billed)
