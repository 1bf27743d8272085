"""The Cloud Billing export in BigQuery, through the Google provider's BigQueryHook: the query is
run (translated to DuckDB) by a BigQuery REST server on 127.0.0.1 over export tables loaded from the
sample model; standard, detailed and FOCUS tables."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import gcp_billing_export, samples
from airflow_cost_provider.billing.errors import BillingSourceError
from airflow_cost_provider.billing.scan import DateWindow
from tests.support.fake_bigquery_billing import fake_bigquery_billing

START = dt.date(2026, 6, 1)
CHARGES = samples.sample_charges(START, 6, providers=("gcp",))
WINDOW = DateWindow(START + dt.timedelta(days=2), START + dt.timedelta(days=5))
PROJECT = "billing-admin"
DETAILED = f"{PROJECT}.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"
STANDARD = f"{PROJECT}.billing_export.gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"
FOCUS = f"{PROJECT}.billing_export.gcp_billing_export_focus_01A2B3_C4D5E6_F7A8B9"
TIMES = ("usage_start_time", "usage_end_time", "export_time")


def focus_records():
    numbers = ("BilledCost", "EffectiveCost", "ListCost", "ConsumedQuantity")
    records = []
    for row in samples._focus_rows(CHARGES):
        record = {k: (v or None) for k, v in row.items()}
        for name in numbers:
            record[name] = None if record[name] is None else float(record[name])
        records.append(record)
    return records


@pytest.fixture(scope="module")
def bigquery():
    with fake_bigquery_billing(page_size=9) as server:
        server.load_table(DETAILED, samples.gcp_export_records(CHARGES), TIMES)
        server.load_table(STANDARD, samples.gcp_export_records(CHARGES, detailed=False), TIMES)
        server.load_table(FOCUS, focus_records(), ("ChargePeriodStart", "ChargePeriodEnd"))
        yield server


@pytest.fixture(autouse=True)
def connection(bigquery, monkeypatch):
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
        ),
    )


def model(per_project=False):
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in CHARGES:
        if c.is_storage and c.day in WINDOW:
            resource = f"projects/{samples.GCP_PROJECT}" if per_project else c.resource_id
            totals[(resource, c.day, c.expected_class)] += c.billed()
    return totals


def assert_totals(collected, expected):
    got: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in collected.costs:
        got[(cost.resource_id, cost.day, cost.usage_class)] += cost.amount
    assert set(got) == set(expected)
    for key, amount in expected.items():
        # BigQuery NUMERIC keeps 9 decimals per row; a ledger row is rounded once more
        assert abs(got[key] - amount) < Decimal("1e-8"), key


def test_detailed_export_costs_per_bucket_with_credits(bigquery):
    collected = gcp_billing_export.query_export(DETAILED, WINDOW, location="US")
    assert_totals(collected, model())
    assert {c.provider for c in collected.costs} == {"gcp"}
    assert {c.billing_account for c in collected.costs} == {samples.GCP_BILLING_ACCOUNT}
    credits = sum(c.credits for c in collected.costs)
    expected = sum(a for c in CHARGES if c.day in WINDOW for _, a in c.credits)
    assert expected < 0 and abs(credits - expected) < Decimal("1e-8")
    # bytes stored come from the byte-seconds of the export
    stored = sum(c.storage_bytes or 0 for c in collected.costs if c.resource_id.endswith("acme-lake-us"))
    assert stored > 3 * 10**12


def test_the_query_filters_in_sql_and_pages_its_results(bigquery):
    before = len(bigquery.requests)
    gcp_billing_export.query_export(DETAILED, WINDOW)
    (job,) = bigquery.inserted()[-1:]
    query = job["configuration"]["query"]
    assert query["useLegacySql"] is False and query["parameterMode"] == "NAMED"
    assert "WHERE service.description = @service" in query["query"]
    assert "_PARTITIONTIME >= TIMESTAMP_SUB(@window_start, INTERVAL 1 DAY)" in query["query"]
    assert "UNNEST(credits)" in query["query"]
    parameters = {p["name"]: p["parameterValue"]["value"] for p in query["queryParameters"]}
    assert parameters == {
        "service": "Cloud Storage",
        "window_start": "2026-06-03 00:00:00+00:00",
        "window_end": "2026-06-06 00:00:00+00:00",
    }
    reads = [r for r in bigquery.result_reads() if bigquery.requests.index(r) >= before]
    assert len(reads) > 2 and any(r.query.get("pageToken") for r in reads)


def test_the_standard_export_has_no_buckets_only_projects(bigquery):
    collected = gcp_billing_export.query_export(STANDARD, WINDOW)
    assert_totals(collected, model(per_project=True))


def test_the_focus_export_table(bigquery):
    collected = gcp_billing_export.query_export(FOCUS, WINDOW)
    assert gcp_billing_export.table_kind(FOCUS) == "focus"
    assert_totals(collected, model())


def test_a_failing_query_names_the_table(bigquery):
    with pytest.raises(BillingSourceError, match="no_such_table"):
        gcp_billing_export.query_export(f"{PROJECT}.billing_export.no_such_table", WINDOW)


def test_the_whole_bill_of_the_export_table_with_labels(bigquery):
    collected = gcp_billing_export.query_export(DETAILED, WINDOW, all_services=True)
    (job,) = bigquery.inserted()[-1:]
    query = job["configuration"]["query"]
    assert "WHERE TRUE" in query["query"] and "TO_JSON_STRING(labels)" in query["query"]
    assert {p["name"] for p in query["queryParameters"]} == {"window_start", "window_end"}
    # every service of the window, credits included, per currency
    expected = sum(c.billed() for c in CHARGES if c.day in WINDOW)
    assert abs(sum(c.amount for c in collected.billing_costs) - expected) < Decimal("1e-8")
    assert {c.service for c in collected.billing_costs} == {c.service_name for c in CHARGES}
    bigquery_rows = [c for c in collected.billing_costs if c.service == "BigQuery"]
    assert {c.tagged_run_id for c in bigquery_rows} == {
        samples.sample_run_id("bigquery", day) for day in WINDOW.days()
    }
    assert all(json.loads(c.tags)["team"] == "data" for c in collected.billing_costs)
    # its storage rows are the storage import's
    storage = gcp_billing_export.query_export(DETAILED, WINDOW)
    assert sorted(collected.costs) == sorted(storage.costs)
