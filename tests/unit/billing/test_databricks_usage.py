"""Databricks billable usage through the SQL Statement Execution API of a fake workspace on 127.0.0.1
that runs the statement on synthetic `system.billing.usage` and `list_prices` tables: sums per hour,
SKU and resource priced at the list price in effect, custom tags and the job run id kept, the result
read over polls and chunks, and each failure one message."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import databricks_usage, importer, registry
from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from tests.support.fake_databricks_statements import SYSTEM_CATALOG, fake_statement_api

TOKEN = "dapi-0123456789abcdef"
CONN_ID = "databricks_billing"
WAREHOUSE = "4b9b953939869799"
ACCOUNT = "a1b2c3d4-0000-4000-8000-000000000001"
WORKSPACE = "6051921418418893"
RUN_ID = "01890e3c-1c4e-7a55-9a0e-5a1f0c2d3e4f"
WINDOW = DateWindow(dt.date(2026, 11, 2), dt.date(2026, 11, 4))

# sku, cloud, unit, price, from, until (None: still in effect)
PRICES = [
    ("PREMIUM_JOBS_COMPUTE", "AWS", "DBU", "0.15", "2020-01-01", "2026-11-03"),
    ("PREMIUM_JOBS_COMPUTE", "AWS", "DBU", "0.20", "2026-11-03", None),
    ("PREMIUM_JOBS_COMPUTE", "AZURE", "DBU", "0.30", "2020-01-01", None),  # another cloud's price
    ("PREMIUM_SQL_PRO_COMPUTE", "AWS", "DBU", "0.55", "2020-01-01", None),
    ("PREMIUM_ALL_PURPOSE_COMPUTE", "AWS", "DBU", "0.55", "2020-01-01", None),
]
OURS = {"openlineage_run_id": RUN_ID, "airflow_dag_id": "etl", "airflow_task_id": "transform"}
# day, hour, sku, quantity, cluster, job, warehouse, job run, custom tags, record type
USAGE = [
    ("2026-11-01", 23, "PREMIUM_SQL_PRO_COMPUTE", "9", None, None, WAREHOUSE, None, {}, "ORIGINAL"),
    ("2026-11-02", 4, "PREMIUM_JOBS_COMPUTE", "1.25", "0412-cl1", "771", None, "9001", OURS, "ORIGINAL"),
    ("2026-11-02", 5, "PREMIUM_JOBS_COMPUTE", "0.75", "0412-cl1", "771", None, "9001", OURS, "ORIGINAL"),
    ("2026-11-02", 9, "PREMIUM_SQL_PRO_COMPUTE", "3.5", None, None, WAREHOUSE, None, {}, "ORIGINAL"),
    (
        "2026-11-03",
        2,
        "PREMIUM_JOBS_COMPUTE",
        "1.000000000000000001",
        None,
        "772",
        None,
        "9002",
        {"team": "bi"},
        "ORIGINAL",
    ),
    ("2026-11-03", 6, "PREMIUM_ALL_PURPOSE_COMPUTE", "0.5", "0101-ap", None, None, None, {}, "ORIGINAL"),
    ("2026-11-03", 6, "PREMIUM_ALL_PURPOSE_COMPUTE", "-0.5", "0101-ap", None, None, None, {}, "RETRACTION"),
    ("2026-11-04", 1, "PREMIUM_JOBS_COMPUTE", "7", "0412-cl1", "771", None, "9003", OURS, "ORIGINAL"),
]


def fill(api, usage=USAGE, prices=PRICES) -> None:
    api.insert(ACCOUNT, WORKSPACE, usage, prices)


@pytest.fixture
def api(monkeypatch):
    with fake_statement_api(TOKEN, {WAREHOUSE}, rows_per_chunk=2, pending_polls=1) as server:
        fill(server)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(server.connection(WAREHOUSE)))
        yield server


def client(timeout: float = 30) -> databricks_usage.StatementClient:
    return databricks_usage.StatementClient(CONN_ID, timeout, sleep=lambda seconds: None)


def fetch_rows(**kwargs):
    return databricks_usage.fetch_rows(WINDOW, databricks_conn_id=CONN_ID, client=client(), **kwargs)


def test_usage_is_summed_per_hour_sku_and_resource_at_the_list_price_in_effect(api):
    rows = fetch_rows()
    hour = lambda text: dt.datetime.fromisoformat(f"{text}:00:00+00:00")  # noqa: E731
    got = [
        (
            r.ChargePeriodStart,
            r.ChargePeriodEnd - r.ChargePeriodStart,
            r.ResourceId,
            r.SkuId,
            r.ConsumedQuantity,
        )
        + (r.BilledCost, r.ListCost, r.BillingCurrency, None if r.Tags is None else json.loads(r.Tags))
        for r in rows
    ]
    # the table's records are hourly: each keeps its UTC hour
    one_hour = dt.timedelta(hours=1)
    assert got == [
        (hour("2026-11-02T04"), one_hour, "0412-cl1", "PREMIUM_JOBS_COMPUTE", Decimal("1.25"))
        + (Decimal("0.1875"), Decimal("0.1875"), "USD", {**OURS, "job_run_id": "9001"}),
        (hour("2026-11-02T05"), one_hour, "0412-cl1", "PREMIUM_JOBS_COMPUTE", Decimal("0.75"))
        + (Decimal("0.1125"), Decimal("0.1125"), "USD", {**OURS, "job_run_id": "9001"}),
        (hour("2026-11-02T09"), one_hour, WAREHOUSE, "PREMIUM_SQL_PRO_COMPUTE", Decimal("3.5"))
        + (Decimal("1.925"), Decimal("1.925"), "USD", None),
        # a serverless job: no cluster, no warehouse; the new price; every decimal kept
        (hour("2026-11-03T02"), one_hour, "772", "PREMIUM_JOBS_COMPUTE", Decimal("1.000000000000000001"))
        + (
            Decimal("0.2000000000000000002"),
            Decimal("0.2000000000000000002"),
            "USD",
            {"team": "bi", "job_run_id": "9002"},
        ),
    ]  # the retracted all-purpose usage nets to nothing and is left out
    for row in rows:
        assert (row.BillingAccountId, row.x_Provider, row.ConsumedUnit) == (ACCOUNT, "databricks", "DBU")


def test_the_request_is_one_parameterised_statement_polled_and_read_in_chunks(api):
    fetch_rows()
    posted = [r for r in api.requests if r.method == "POST"]
    assert len(posted) == 1
    assert posted[0].authorization == f"Bearer {TOKEN}"
    body = posted[0].body
    assert body["warehouse_id"] == WAREHOUSE  # from the connection's http_path
    assert body["parameters"] == [
        {"name": "since", "value": "2026-11-02", "type": "DATE"},
        {"name": "until", "value": "2026-11-04", "type": "DATE"},
    ]
    assert "2026" not in body["statement"]
    statement_id = next(iter(api.statements))
    assert [r.path for r in api.requests if r.method == "GET"] == [
        f"/api/2.0/sql/statements/{statement_id}",
        f"/api/2.0/sql/statements/{statement_id}/result/chunks/1",
        f"/api/2.0/sql/statements/{statement_id}/result/chunks/2",
    ]


def test_a_failed_statement_says_what_the_warehouse_said_and_which_grants_are_needed(api):
    api.execute(f"DROP TABLE {SYSTEM_CATALOG}.billing.list_prices")
    with pytest.raises(BillingSourceError) as raised:
        fetch_rows()
    message = str(raised.value)
    assert f"Databricks statement on SQL warehouse {WAREHOUSE} failed: [TABLE_OR_VIEW_NOT_FOUND]" in message
    assert "SELECT on both tables" in message
    assert TOKEN not in message


def test_an_unknown_warehouse_and_a_bad_token_are_http_errors_with_the_apis_words(api, monkeypatch):
    with pytest.raises(
        BillingSourceError, match="HTTP 404 RESOURCE_DOES_NOT_EXIST: SQL warehouse nope does not"
    ):
        fetch_rows(warehouse_id="nope")
    connection = api.connection(WAREHOUSE) | {"password": "dapi-wrong"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    with pytest.raises(BillingSourceError, match="HTTP 403 403: Invalid access token"):
        fetch_rows()


def test_usage_without_a_list_price_is_refused_with_its_sku_and_day(api):
    fill(
        api,
        usage=[("2026-11-02", 3, "ENTERPRISE_DLT_CORE", "2", "c9", None, None, None, {}, "ORIGINAL")],
        prices=[],
    )
    with pytest.raises(BillingDataError) as raised:
        fetch_rows()
    assert "no list price for SKU ENTERPRISE_DLT_CORE in DBU on 2026-11-02" in str(raised.value)


def test_a_statement_still_running_at_the_timeout_is_cancelled(monkeypatch):
    with fake_statement_api(TOKEN, {WAREHOUSE}, pending_polls=10**6) as server:
        fill(server)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(server.connection(WAREHOUSE)))
        with pytest.raises(BillingSourceError, match="did not finish within 1 s and was cancelled"):
            databricks_usage.fetch_rows(WINDOW, databricks_conn_id=CONN_ID, client=client(timeout=1))
        (statement,) = server.statements.values()
        assert statement.cancelled


def test_a_connection_without_a_warehouse_needs_one(api, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(api.connection()))
    with pytest.raises(BillingSourceError, match="names no SQL warehouse: pass warehouse_id"):
        fetch_rows()
    assert len(fetch_rows(warehouse_id=WAREHOUSE)) == 4


def test_the_rows_import_and_save_into_a_sqlite_ledger(api, tmp_path):
    assert registry.source_provider("databricks-usage") == "databricks"
    collected = databricks_usage.fetch(WINDOW, databricks_conn_id=CONN_ID, client=client())
    assert (collected.source, collected.window, collected.rows_read) == ("databricks-usage", WINDOW, 4)
    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    summary = importer.save(engine, collected, replace_days=True)
    assert (summary.source, summary.rows_read) == ("databricks-usage", 4)


def test_the_usage_reconciles_to_the_job_run_by_its_tags_and_to_the_warehouse_queries(api, tmp_path):
    """The job run billed under its try's run id (at 04:00 and 05:00) is all that try's; the SQL
    warehouse's DBU of 09:00 on 2026-11-02 are shared by quantity (a query at 09:15 used 1.75 of its 3.5
    DBU); every billed dollar is in a pool."""

    import sqlalchemy as sa

    from airflow_cost_provider.ledger.schema import billing_costs, lines, reconciliations, task_runs
    from tests.support.billing_rows import priced_line, reconcile_window, store_try

    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    importer.save(
        engine, databricks_usage.fetch(WINDOW, databricks_conn_id=CONN_ID, client=client()), replace_days=True
    )
    used = {
        "transform": ("databricks", "2", "DBU", "0.30", "0412-cl1", RUN_ID, 4, 30),
        "query": ("databricks", "1.75", "DBU", "0.9625", WAREHOUSE, None, 9, 15),
    }
    for task, (source, quantity, unit, amount, resource, run_id, *time) in used.items():
        at = dt.datetime(2026, 11, 2, *time, tzinfo=dt.timezone.utc)
        line = priced_line(source, quantity, unit, amount, resource, at, "dbu")
        store_try(engine, "etl", task, [line], ol_run_id=run_id, start=at, minutes=30)
    reconcile_window(engine, WINDOW.start, WINDOW.end)
    with engine.connect() as conn:
        billed = conn.execute(sa.select(sa.func.sum(billing_costs.c.amount_nanos))).scalar()
        pools = {row.pool: row for row in conn.execute(sa.select(reconciliations))}
        hours = {(row.pool, row.usage_hour) for row in conn.execute(sa.select(reconciliations))}
        found = dict(
            conn.execute(
                sa.select(task_runs.c.task_id, lines.c.reconciled_nanos).join(
                    task_runs, task_runs.c.id == lines.c.task_run_id
                )
            ).all()
        )
    assert sum(pool.billed_nanos for pool in pools.values()) == billed
    assert all(
        pool.attributed_nanos + pool.unattributed_nanos == pool.billed_nanos for pool in pools.values()
    )
    assert (pools[RUN_ID].basis, pools[WAREHOUSE].basis) == ("tags", "quantity")
    # the try's pool is its day's (the bill names the try); the warehouse's is its hour's
    assert {(RUN_ID, None), (WAREHOUSE, 9)} <= hours
    assert found == {"transform": 300_000_000, "query": 962_500_000}
    assert pools[WAREHOUSE].unattributed_nanos == 962_500_000


CLASSIC = "a3b1c2d4-1111-4000-8000-000000000001"
SERVERLESS = "b4c2d3e5-2222-4000-8000-000000000002"
OUR_UPDATE, SCHEDULED_UPDATE, SERVERLESS_UPDATE = (f"u-{n}-0000-4000-8000-000000000000" for n in (1, 2, 3))
# a pipeline update's usage names the pipeline and the update; a job run started with run-now carries
# no tags of ours, only its job_run_id
PIPELINE_PRICES = [
    ("PREMIUM_DLT_PRO_COMPUTE", "AWS", "DBU", "0.36", "2020-01-01", None),
    ("PREMIUM_JOBS_SERVERLESS_COMPUTE", "AWS", "DBU", "0.35", "2020-01-01", None),
]


def dlt_usage(hour: int, sku: str, quantity: str, cluster: str | None, pipeline: str, update: str) -> tuple:
    """A pipeline update's usage on 2026-11-03, as USAGE's rows with the pipeline and the update."""
    return ("2026-11-03", hour, sku, quantity, cluster, None, None, None, {}, "ORIGINAL", pipeline, update)


PIPELINE_USAGE = [
    dlt_usage(4, "PREMIUM_DLT_PRO_COMPUTE", "2", "dlt-cl1", CLASSIC, OUR_UPDATE),
    dlt_usage(5, "PREMIUM_DLT_PRO_COMPUTE", "1", "dlt-cl1", CLASSIC, OUR_UPDATE),
    dlt_usage(1, "PREMIUM_DLT_PRO_COMPUTE", "4", "dlt-cl0", CLASSIC, SCHEDULED_UPDATE),
    dlt_usage(5, "PREMIUM_JOBS_SERVERLESS_COMPUTE", "2.5", None, SERVERLESS, SERVERLESS_UPDATE),
    ("2026-11-03", 6, "PREMIUM_JOBS_COMPUTE", "1.6", "job-cl9", "773", None, "9100", {}, "ORIGINAL"),
]


def test_pipeline_updates_and_job_runs_reconcile_by_their_ids(api, tmp_path):
    """Lines as the Databricks jobs instrumentation writes them: a classic pipeline update (its DBUs
    and VMs, with the pipeline and update ids), a serverless update kept unpriced, and a run-now job
    run's DBUs and VMs. The usage rows of our update go to our update's line, the serverless update's
    to its unpriced line, the job run's to its DBU line; the scheduled update of the same pipeline
    is the pipeline's, idle; the VMs are the cloud's bill, not Databricks'."""
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.schema import billing_costs, lines, reconciliations, task_runs
    from airflow_cost_provider.pricing import Unpriced, Usage
    from tests.support.billing_rows import nanos, priced_line, reconcile_window, store_try

    fill(api, usage=PIPELINE_USAGE, prices=PIPELINE_PRICES)
    engine = store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    at = dt.datetime(2026, 11, 3, 4, 0, tzinfo=dt.timezone.utc)
    ours = {"pipeline_id": CLASSIC, "update_id": OUR_UPDATE}
    store_try(
        engine,
        "dlt",
        "orders",
        [
            priced_line(
                "databricks", "1.5", "DBU", "0.54", CLASSIC, at, "dbu", external_id="8801", attributes=ours
            ),
            priced_line(
                "databricks",
                "5400",
                "instance-second",
                "0.468",
                CLASSIC,
                at,
                "instance_time",
                external_id="8801",
                attributes=ours,
            ),
        ],
        start=at,
        minutes=90,
    )
    serverless = Usage(
        "databricks",
        "run_time",
        Decimal(600_000),
        "ms",
        SERVERLESS,
        "8802",
        at,
        attributes={"pipeline_id": SERVERLESS, "update_id": SERVERLESS_UPDATE},
    )
    store_try(engine, "dlt", "events", [], start=at, unpriced=(Unpriced(serverless, "serverless"),))
    store_try(
        engine,
        "dlt",
        "publish",
        [
            priced_line("databricks", "1.2", "DBU", "0.24", "job-cl9", at, "dbu", external_id="9100"),
            priced_line(
                "databricks",
                "3600",
                "instance-second",
                "0.192",
                "job-cl9",
                at,
                "instance_time",
                external_id="9100",
            ),
        ],
        start=at,
    )

    def reconcile():
        importer.save(
            engine,
            databricks_usage.fetch(WINDOW, databricks_conn_id=CONN_ID, client=client()),
            replace_days=True,
        )
        reconcile_window(engine, WINDOW.start, WINDOW.end)
        with engine.connect() as conn:
            return (
                {row.pool: row for row in conn.execute(sa.select(reconciliations))},
                {
                    (row.task_id, row.metric): (row.status, row.reconciled_nanos)
                    for row in conn.execute(
                        sa.select(
                            task_runs.c.task_id, lines.c.metric, lines.c.status, lines.c.reconciled_nanos
                        ).join(task_runs, task_runs.c.id == lines.c.task_run_id)
                    )
                },
                conn.execute(sa.select(sa.func.sum(billing_costs.c.amount_nanos))).scalar(),
            )

    pools, found, billed = reconcile()
    assert found == {
        ("orders", "dbu"): ("reconciled", nanos("1.08")),  # 3 DBU of our update at 0.36
        ("orders", "instance_time"): ("estimated", None),
        ("events", "run_time"): ("reconciled", nanos("0.875")),  # unpriced until now: 2.5 DBU at 0.35
        ("publish", "dbu"): ("reconciled", nanos("0.32")),  # the run's 1.6 DBU at 0.20
        ("publish", "instance_time"): ("estimated", None),
    }
    update, job_run = pools[f"dlt_update:{OUR_UPDATE}"], pools["job_run:9100"]
    assert (update.pool_kind, update.basis, update.lines, update.day) == (
        "run",
        "run",
        1,
        dt.date(2026, 11, 3),
    )
    assert (job_run.pool_kind, job_run.unattributed_nanos) == ("run", 0)
    assert pools[f"dlt_update:{SERVERLESS_UPDATE}"].attributed_nanos == nanos("0.875")
    # the pipeline's scheduled update: its bill, no line of ours
    scheduled = pools[CLASSIC]
    assert (scheduled.pool_kind, scheduled.lines, scheduled.billed_nanos) == ("resource", 0, nanos("1.44"))
    assert scheduled.unattributed_nanos == nanos("1.44")
    assert sum(pool.billed_nanos for pool in pools.values()) == billed
    assert all(p.attributed_nanos + p.unattributed_nanos == p.billed_nanos for p in pools.values())
    again = reconcile()
    assert (again[1], again[2]) == (found, billed)
    assert {k: v.attributed_nanos for k, v in again[0].items()} == {
        k: v.attributed_nanos for k, v in pools.items()
    }
