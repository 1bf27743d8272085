"""The Azure Cost Management Query API: a managed identity token, the query's shape, nextLink
paging, and the throttling headers followed with bounded waits."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import azure_cost_management, samples
from airflow_cost_provider.billing.azure_cost_management import CostManagementClient, fetch
from airflow_cost_provider.billing.errors import BillingSourceError
from airflow_cost_provider.billing.scan import DateWindow
from tests.support.fake_cost_management import (
    TOKEN,
    UsageRecord,
    azure_connection,
    fake_cost_management,
    identity_environment,
    records_of,
)

START = dt.date(2026, 5, 1)
CHARGES = samples.sample_charges(START, 6, providers=("azure",))
SCOPE = f"/subscriptions/{samples.AZURE_SUBSCRIPTION}"
WINDOW = DateWindow(START + dt.timedelta(days=1), START + dt.timedelta(days=5))


@pytest.fixture
def azure(monkeypatch):
    with fake_cost_management(page_size=7) as server:
        server.records.extend(records_of(CHARGES))
        monkeypatch.setenv("AIRFLOW_CONN_AZURE_DEFAULT", azure_connection(server))
        for name, value in identity_environment(server).items():
            monkeypatch.setenv(name, value)
        yield server


def model(key):
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in CHARGES:
        if c.is_storage and c.day in WINDOW:
            totals[(c.resource_id.lower(), c.day, key(c))] += c.billed()
    return totals


def totals(collected):
    got: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in collected.costs:
        got[(cost.resource_id, cost.day, cost.usage_class)] += cost.amount
    return got


def test_daily_cost_per_storage_account_and_meter_category(azure):
    waits: list[float] = []
    azure.throttle_next = 2
    client = CostManagementClient(sleep=waits.append)
    collected = fetch(WINDOW, scope=SCOPE, client=client)
    # Storage meters are all "storage" at this grain; Bandwidth is data transfer out
    expected = model(lambda c: "transfer_egress" if c.meter_category == "Bandwidth" else "storage")
    got = totals(collected)
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-9") * 4, key
    assert {c.currency for c in collected.costs} == {"EUR"}
    assert {c.billing_account for c in collected.costs} == {samples.AZURE_SUBSCRIPTION}
    # two 429 answers waited for as asked, then every page followed
    assert waits == [1.0, 1.0]
    queries = azure.queries()
    pages = len(expected) // 7 + 1
    assert len(queries) == 2 + pages
    assert all(q.headers["authorization"] == f"Bearer {TOKEN}" for q in queries)
    assert [q.query.get("$skiptoken") for q in queries[2:]] == [None, *(str(7 * n) for n in range(1, pages))]
    body = queries[0].body
    assert body["type"] == "ActualCost" and body["dataset"]["granularity"] == "Daily"
    assert body["timePeriod"] == {"from": "2026-05-02T00:00:00+00:00", "to": "2026-05-05T23:59:59+00:00"}
    assert body["dataset"]["grouping"] == [
        {"type": "Dimension", "name": "ResourceId"},
        {"type": "Dimension", "name": "MeterCategory"},
    ]
    assert queries[0].query["api-version"] == azure_cost_management.API_VERSION
    assert len(azure.token_requests()) == 1


def test_grouped_by_meter_the_usage_classes_come_apart(azure):
    collected = fetch(WINDOW, scope=SCOPE, meter_dimension="Meter")
    expected = model(lambda c: c.expected_class)
    got = totals(collected)
    assert set(got) == set(expected)
    assert {key[2] for key in got} >= {
        "storage",
        "requests",
        "retrieval",
        "transfer_egress",
        "transfer_cross_region",
    }


def test_a_window_over_a_month_is_asked_a_month_at_a_time(azure):
    """Daily queries cover a month at most (a longer period is cut to its last month): a 45-day
    catch-up over March and April is two queries, and every day is there."""
    account = f"{SCOPE}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/lake"
    window = DateWindow(dt.date(2026, 3, 10), dt.date(2026, 4, 24))
    azure.records[:] = [
        UsageRecord(
            day,
            account,
            "microsoft.storage/storageaccounts",
            "Storage",
            "Hot LRS Data Stored",
            Decimal("1.25"),
            "EUR",
        )
        for day in window.days()
    ]
    collected = fetch(window, scope=SCOPE)
    assert sorted(c.day for c in collected.costs) == window.days()
    assert sum(c.amount for c in collected.costs) == Decimal("1.25") * 45
    periods = [q.body["timePeriod"] for q in azure.queries() if q.query.get("$skiptoken") is None]
    assert periods == [
        {"from": "2026-03-10T00:00:00+00:00", "to": "2026-03-31T23:59:59+00:00"},
        {"from": "2026-04-01T00:00:00+00:00", "to": "2026-04-23T23:59:59+00:00"},
    ]


def test_a_throttling_wait_longer_than_allowed_fails_with_the_reason(azure):
    azure.throttle_next = 1
    azure.throttle_seconds = 3600
    waits: list[float] = []
    with pytest.raises(BillingSourceError, match="asks to wait 3600 s") as caught:
        fetch(WINDOW, scope=SCOPE, client=CostManagementClient(max_wait=60, sleep=waits.append))
    assert waits == [] and "60 s per wait" in str(caught.value)


def test_the_total_wait_is_bounded_too(azure):
    azure.throttle_next = 10
    waits: list[float] = []
    with pytest.raises(BillingSourceError, match="throttled"):
        fetch(WINDOW, scope=SCOPE, client=CostManagementClient(wait_budget=3, sleep=waits.append))
    assert waits == [1.0, 1.0, 1.0]


def test_retry_after_headers():
    headers = {
        "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "4",
        "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after": "9",
        "retry-after": "2",
    }
    assert azure_cost_management.retry_after(headers) == 9
    assert azure_cost_management.retry_after({}) is None
    assert (
        azure_cost_management.scope_account("/providers/Microsoft.Billing/billingAccounts/1234:5678")
        == "1234:5678"
    )


# ---------------------------------------------------------------- the whole bill

DATABRICKS = (
    f"/subscriptions/{samples.AZURE_SUBSCRIPTION}/resourceGroups/rg-data/providers/"
    "Microsoft.Databricks/workspaces/analytics"
)
RUN = "0193a1b2-0000-7000-8000-00000000abcd"


def databricks_records():
    """A workspace whose job clusters carry a try's run id tag on part of the days' cost."""
    for offset in range(6):
        day = START + dt.timedelta(days=offset)
        for amount, tags in (("12.5", (("openlineage_run_id", RUN), ("team", "data"))), ("30.25", ())):
            yield UsageRecord(
                day,
                DATABRICKS,
                "microsoft.databricks/workspaces",
                "Azure Databricks",
                "Premium Jobs Compute DBU",
                Decimal(amount),
                "EUR",
                tags=tags,
            )


def test_the_whole_bill_per_resource_and_service_with_the_run_id_apart(azure):
    azure.records.extend(databricks_records())
    collected = fetch(WINDOW, scope=SCOPE, all_services=True)
    billing = collected.billing_costs
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for record in azure.records:
        if record.day in WINDOW:
            expected[(record.day, record.resource_id.lower())] += record.cost
    got: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in billing:
        got[(cost.day, cost.resource_id)] += cost.amount
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-9") * 8, key
    # the tagged part of the workspace is its try's; the rest of it is untagged
    workspace = [b for b in billing if b.resource_id == DATABRICKS.lower()]
    assert {(b.tagged_run_id, b.amount) for b in workspace} == {
        (RUN, Decimal("12.5")),
        (None, Decimal("30.25")),
    }
    assert {b.service for b in workspace} == {"Azure Databricks"} and len(workspace) == 2 * len(WINDOW.days())
    # the storage accounts' costs are the storage costs, as a storage import has them per account
    storage = fetch(WINDOW, scope=SCOPE)
    by_account = lambda costs: {  # noqa: E731
        key: sum((c.amount for c in costs if (c.day, c.resource_id) == key), Decimal(0))
        for key in {(c.day, c.resource_id) for c in costs}
    }
    assert by_account(collected.costs) == by_account(storage.costs)
    # two unfiltered queries, two groupings each
    bodies = [q.body for q in azure.queries() if q.query.get("$skiptoken") is None][:2]
    assert [b["dataset"]["grouping"] for b in bodies] == [
        [{"type": "Dimension", "name": "ResourceId"}, {"type": "Dimension", "name": "ServiceName"}],
        [{"type": "Dimension", "name": "ResourceId"}, {"type": "TagKey", "name": "openlineage_run_id"}],
    ]
    assert all("filter" not in b["dataset"] for b in bodies)


def test_a_resources_tagged_cost_is_taken_from_its_largest_service():
    day = 20260502
    by_service = [
        {
            "UsageDate": day,
            "ResourceId": "/x/vm",
            "ServiceName": "Virtual Machines",
            "Cost": 10,
            "Currency": "EUR",
        },
        {"UsageDate": day, "ResourceId": "/x/vm", "ServiceName": "Bandwidth", "Cost": 1, "Currency": "EUR"},
    ]
    by_tag = [
        {
            "UsageDate": day,
            "ResourceId": "/x/vm",
            "TagKey": "openlineage_run_id",
            "TagValue": RUN,
            "Cost": 4,
            "Currency": "EUR",
        },
        {"UsageDate": day, "ResourceId": "/x/vm", "TagKey": "", "TagValue": "", "Cost": 7, "Currency": "EUR"},
        # costs without the tag may come with null key and value too
        {
            "UsageDate": day,
            "ResourceId": "/x/vm",
            "TagKey": None,
            "TagValue": None,
            "Cost": 0,
            "Currency": "EUR",
        },
    ]
    rows = azure_cost_management.whole_bill_rows(by_service, by_tag, "sub")
    got = sorted((r.ServiceName, r.BilledCost, r.Tags) for r in rows)
    assert got == [
        ("Bandwidth", Decimal(1), None),
        ("Virtual Machines", Decimal(4), '{"openlineage_run_id": "0193a1b2-0000-7000-8000-00000000abcd"}'),
        ("Virtual Machines", Decimal(6), None),
    ]
