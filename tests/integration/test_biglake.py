"""BigLake: BigQuery query jobs reading BigLake tables are captured and priced like any other BigQuery
job, under `airflow dags test` with the Google provider's own operator against the fake BigQuery. The
fake reports the statistics BigQuery gives such a job: the BigLake table in `referencedTables`, its
metadata cache use in `metadataCacheStatistics`, and `externalServiceCosts`, which BigQuery documents
as a part of the job's cost already in `totalBytesBilled` / `totalSlotMs`, never to be added to it."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_biglake import (
    EDITION_PROJECT,
    EVENTS_SQL,
    IMAGES_SQL,
    ON_DEMAND_PROJECT,
    ORDERS_SQL,
)
from tests.support.airflow_env import ledger_rows
from tests.support.fake_bigquery import JobPlan, fake_bigquery
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TIB = Decimal(2**40)


def table(project: str, table_id: str) -> dict:
    return {"projectId": project, "datasetId": "lake_ds", "tableId": table_id}


def cache_usage(project: str, table_id: str, **fields) -> dict:
    return {
        "tableMetadataCacheUsage": [
            {"tableReference": table(project, table_id), "tableType": "EXTERNAL", **fields}
        ]
    }


# task id -> (the text its query contains, how the fake runs it)
PLANS = {
    "biglake_orders": (
        "orders_biglake",
        JobPlan(
            bytes_billed=52_428_800_000,
            bytes_processed=52_428_774_144,  # billed is rounded up per table (10 MB minimum)
            slot_ms=734_120,
            query_statistics={
                "referencedTables": [table(ON_DEMAND_PROJECT, "orders_biglake")],
                "metadataCacheStatistics": cache_usage(
                    ON_DEMAND_PROJECT, "orders_biglake", staleness="1800s"
                ),
            },
        ),
    ),
    "biglake_object_table": (
        "product_images_objects",
        JobPlan(
            bytes_billed=10_485_760,  # a BigLake object table: only its metadata is read, 10 MB minimum
            bytes_processed=1_048_576,
            slot_ms=2_000,
            query_statistics={
                "referencedTables": [table(ON_DEMAND_PROJECT, "product_images_objects")],
                "metadataCacheStatistics": cache_usage(
                    ON_DEMAND_PROJECT,
                    "product_images_objects",
                    unusedReason="METADATA_CACHING_NOT_ENABLED",
                    explanation="Metadata caching is not enabled for the table.",
                ),
                # part of the job's cost, expressed in BigQuery's own units: not additive
                "externalServiceCosts": [
                    {
                        "externalService": "an external service",
                        "bytesProcessed": "1048576",
                        "bytesBilled": "10485760",
                        "slotMs": "2000",
                        "reservedSlotCount": "0",
                        "billingMethod": "SERVICES_SKU",
                    }
                ],
            },
        ),
    ),
    "biglake_on_edition": (
        "events_iceberg",
        JobPlan(
            bytes_billed=0,  # on an edition nothing is billed per byte
            bytes_processed=8_589_934_592,
            slot_ms=3_600_000,
            query_statistics={"referencedTables": [table(EDITION_PROJECT, "events_iceberg")]},
        ),
    ),
}
SQL = {"biglake_orders": ORDERS_SQL, "biglake_object_table": IMAGES_SQL, "biglake_on_edition": EVENTS_SQL}


def shipped_price(metric: str, match: dict) -> Decimal:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == "bigquery" and p["metric"] == metric and p["match"] == match
    ]
    return Decimal(entry["amount"])


@pytest.fixture(scope="module")
def bigquery():
    with fake_bigquery() as server:
        for text, plan in PLANS.values():
            server.plan(text, plan)
        yield server


@pytest.fixture(scope="module")
def biglake_run(airflow_env, bigquery):
    run = airflow_env.dags_test(
        "cost_biglake",
        env={
            "BIGQUERY_EMULATOR_HOST": bigquery.url,
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                {
                    "conn_type": "google_cloud_platform",
                    "extra": {"is_anonymous": True, "project": ON_DEMAND_PROJECT, "use_legacy_sql": False},
                }
            ),
            "AIRFLOW__COST_PROVIDER__BIGQUERY_PRICING": json.dumps({EDITION_PROJECT: "enterprise"}),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output
    return run


@pytest.fixture(scope="module")
def facets(biglake_run) -> dict[str, dict]:
    events = biglake_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e["run"]["facets"][FACET]
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def job_of(server, task_id: str) -> tuple[str, dict]:
    (body,) = server.inserted_where(PLANS[task_id][0])
    assert body["configuration"]["query"]["query"].startswith(SQL[task_id])  # then the task's comment
    assert body["configuration"]["labels"]["airflow_task_id"] == task_id
    reference = body["jobReference"]
    return reference["jobId"], server.resource(reference["projectId"], reference["jobId"])


def test_biglake_queries_are_priced_by_bytes_billed_only(biglake_run, bigquery, facets):
    per_tib = shipped_price("bytes_billed", {"pricing_model": "on_demand"})
    for task_id in ("biglake_orders", "biglake_object_table"):
        job_id, resource = job_of(bigquery, task_id)
        statistics = resource["statistics"]["query"]
        assert statistics["referencedTables"][0]["tableId"] == PLANS[task_id][0]
        (line,) = [line for line in facets[task_id]["lines"] if line["source"] == "bigquery"]
        billed = Decimal(statistics["totalBytesBilled"])
        assert billed == PLANS[task_id][1].bytes_billed
        assert line["externalId"] == job_id
        assert (line["metric"], line["unit"], line["method"]) == ("bytes_billed", "byte", "list_price")
        assert Decimal(str(line["quantity"])) == billed
        # externalServiceCosts is not added: one line, bytes billed x the on-demand price
        assert Decimal(str(line["amount"])) == quantize_amount(billed * per_tib / TIB)
        assert not [u for u in facets[task_id]["unpriced"] if u["source"] == "bigquery"]
    # 52,428,800,000 bytes at $6.25 per TiB
    assert quantize_amount(Decimal(52_428_800_000) * per_tib / TIB) == Decimal("0.298023224")


def test_a_biglake_query_on_an_edition_is_priced_by_slot_time(biglake_run, bigquery, facets):
    job_id, _resource = job_of(bigquery, "biglake_on_edition")
    (line,) = [line for line in facets["biglake_on_edition"]["lines"] if line["source"] == "bigquery"]
    per_slot_hour = shipped_price("slot_time", {"edition": "enterprise"})
    assert line["externalId"] == job_id and line["metric"] == "slot_time"
    assert Decimal(str(line["quantity"])) == 3_600_000
    assert Decimal(str(line["amount"])) == quantize_amount(per_slot_hour)  # one slot-hour


def test_ledger_rows_hold_one_line_per_biglake_job(biglake_run, bigquery):
    rows = ledger_rows(
        biglake_run.ledger_url,
        "SELECT r.task_id, u.metric, u.quantity, u.external_id, u.attributes, l.amount_nanos "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'bigquery'",
    )
    assert sorted(row["task_id"] for row in rows) == sorted(PLANS)
    for row in rows:
        job_id, resource = job_of(bigquery, row["task_id"])
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert row["external_id"] == job_id and row["amount_nanos"] > 0
        assert attributes["total_bytes_processed"] == PLANS[row["task_id"]][1].bytes_processed
        assert attributes["statement_type"] == "SELECT" and attributes["job_type"] == "QUERY"
