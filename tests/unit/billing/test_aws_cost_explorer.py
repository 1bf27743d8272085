"""Cost Explorer through the Amazon provider's connection: moto answers GetCostAndUsage (grouped by a
bucket tag), a server in front of it GetCostAndUsageWithResources (per bucket, last 14 days).
Pages are followed, and every page is cached so that the same import asks (and pays) once."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import aws_cost_explorer, samples
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from tests.support import fake_aws
from tests.support.fake_cost_explorer import CostRecord, cost_explorer_front, queue_cost_and_usage, reset_moto

TODAY = dt.date(2026, 3, 20)
WINDOW = DateWindow(dt.date(2026, 2, 28), TODAY)
CHARGES = [c for c in samples.sample_charges(WINDOW.start, 20, providers=("aws",)) if c.is_storage]
S3 = "Amazon Simple Storage Service"


def daily(charges):
    """(day, bucket, usage type) -> [cost, quantity], as Cost Explorer sums them."""
    sums: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for c in charges:
        entry = sums[(c.day, c.resource_id, c.usage_type)]
        entry[0] += c.billed()
        entry[1] += c.quantity
    return sums


def tag_results(days: list[dt.date]) -> list[dict]:
    """GetCostAndUsage answers grouped by TAG bucket and USAGE_TYPE, in two pages; one bucket untagged."""
    sums = daily([c for c in CHARGES if c.day in days])
    results = []
    for day in days:
        groups = [
            {
                "Keys": [f"bucket${bucket}" if bucket != "acme-logs-eu" else "bucket$", usage_type],
                "Metrics": {
                    "UnblendedCost": {"Amount": str(cost), "Unit": "USD"},
                    "UsageQuantity": {"Amount": str(quantity), "Unit": "N/A"},
                },
            }
            for (d, bucket, usage_type), (cost, quantity) in sorted(sums.items())
            if d == day
        ]
        results.append(
            {
                "TimePeriod": {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()},
                "Total": {},
                "Groups": groups,
                "Estimated": False,
            }
        )
    half = len(results) // 2
    return [
        {"ResultsByTime": results[:half], "NextPageToken": "page-2", "DimensionValueAttributes": []},
        {"ResultsByTime": results[half:], "DimensionValueAttributes": []},
    ]


@pytest.fixture
def explorer(monkeypatch):
    with fake_aws.moto_server() as moto, cost_explorer_front(moto, days_per_page=3) as front:
        reset_moto(moto)
        for (day, bucket, usage_type), (cost, quantity) in daily(CHARGES).items():
            front.records.append(CostRecord(day, S3, bucket, usage_type, cost, quantity, "GB"))
        front.records.append(
            CostRecord(TODAY - dt.timedelta(days=2), "Amazon EC2", "i-1", "BoxUsage", Decimal(9), 24, "Hrs")
        )
        front.estimated_from = TODAY - dt.timedelta(days=2)
        older = [WINDOW.start + dt.timedelta(days=n) for n in range(6)]  # before TODAY - 14 days
        queue_cost_and_usage(moto, tag_results(older))
        for name, value in fake_aws.airflow_env(moto, {"ce": front.url}).items():
            monkeypatch.setenv(name, value)
        yield front
        reset_moto(moto)  # moto keeps its answers per request for the whole process


def test_s3_costs_per_bucket_and_day_from_both_queries(explorer, tmp_path):
    engine = store.get_engine(f"sqlite:///{tmp_path / 'l.db'}")
    collected = aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY)
    got: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in collected.costs:
        got[(cost.day, cost.resource_id)] += cost.amount
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in CHARGES:
        recent = c.day >= TODAY - dt.timedelta(days=14)
        bucket = c.resource_id if recent or c.resource_id != "acme-logs-eu" else ""  # untagged before
        expected[(c.day, bucket)] += c.billed()
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-7"), key
    assert {c.provider for c in collected.costs} == {"aws"}
    assert {c.billing_account for c in collected.costs} == {"123456789012"}  # the connection's account
    classes = {c.usage_class for c in collected.costs}
    assert {"storage", "requests", "transfer_egress", "transfer_cross_region"} <= classes
    # the estimated days are the last two, and only S3 was asked for
    assert collected.estimated_days == {TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)}
    assert "i-1" not in {c.resource_id for c in collected.costs}


def test_requests_are_filtered_paged_and_grouped_as_documented(explorer, tmp_path):
    engine = store.get_engine(f"sqlite:///{tmp_path / 'l.db'}")
    aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY, bucket_tag_key="bucket")
    recent = explorer.calls("GetCostAndUsageWithResources")
    tagged = explorer.calls("GetCostAndUsage")
    assert len(recent) == 5  # 14 days, 3 a page
    assert [r.get("NextPageToken") for r in recent] == [None, "3", "6", "9", "12"]
    assert recent[0]["TimePeriod"] == {"Start": "2026-03-06", "End": "2026-03-20"}
    assert recent[0]["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": [S3]}}
    assert recent[0]["Granularity"] == "DAILY"
    assert len(tagged) == 2 and tagged[1]["NextPageToken"] == "page-2"
    assert tagged[0]["GroupBy"] == [
        {"Type": "TAG", "Key": "bucket"},
        {"Type": "DIMENSION", "Key": "USAGE_TYPE"},
    ]
    assert tagged[0]["TimePeriod"] == {"Start": "2026-02-28", "End": "2026-03-06"}


def test_a_second_import_within_the_cache_time_pays_nothing(explorer, tmp_path):
    engine = store.get_engine(f"sqlite:///{tmp_path / 'l.db'}")
    first = aws_cost_explorer.CostExplorer(engine=engine)
    one = aws_cost_explorer.fetch(WINDOW, today=TODAY, explorer=first)
    assert first.requests.paid == 7 and first.requests.cached == 0
    calls = len(explorer.requests)
    second = aws_cost_explorer.CostExplorer(engine=engine)
    two = aws_cost_explorer.fetch(WINDOW, today=TODAY, explorer=second)
    assert second.requests.paid == 0 and second.requests.cached == 7
    assert len(explorer.requests) == calls  # Cost Explorer was not asked again
    assert sorted(one.costs) == sorted(two.costs)
    # once the cached answers are older than cache_ttl, they are asked for again
    expired = aws_cost_explorer.CostExplorer(engine=engine, cache_ttl=dt.timedelta(0))
    aws_cost_explorer.fetch(WINDOW, today=TODAY, explorer=expired)
    assert expired.requests.paid == 7 and len(explorer.requests) == calls + 7
