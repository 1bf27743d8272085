"""Cost Explorer through the Amazon provider's connection: moto answers GetCostAndUsage (grouped by a
bucket tag), a server in front of it GetCostAndUsageWithResources (per bucket, last 14 days).
Pages are followed, and every page is cached so that the same import asks (and pays) once."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import aws_cost_explorer, samples
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from tests.support import fake_aws
from tests.support.fake_cost_explorer import (
    CostRecord,
    cost_explorer_front,
    queue_cost_and_usage,
    records_of,
    reset_moto,
)

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


# ---------------------------------------------------------------- the whole bill

ALL = [c for c in samples.sample_charges(WINDOW.start, 20, providers=("aws",)) if c.category == "Usage"]
OTHERS = [c for c in ALL if not c.is_storage]
GLUE = "arn:aws:glue:us-east-1:123456789012:job/orders_etl"


@pytest.fixture
def whole_bill(monkeypatch):
    """Cost Explorer answering both operations from the sample month's records, with their tags."""
    with fake_aws.moto_server() as moto, cost_explorer_front(moto, days_per_page=7) as front:
        front.answer_cost_and_usage = True
        front.today = TODAY
        front.estimated_from = TODAY - dt.timedelta(days=2)
        front.records += records_of(ALL)
        for name, value in fake_aws.airflow_env(moto, {"ce": front.url}).items():
            monkeypatch.setenv(name, value)
        yield front


def per_day_and_service(costs) -> dict[tuple, Decimal]:
    sums: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in costs:
        sums[(cost.day, cost.service)] += cost.amount
    return sums


def test_the_whole_bill_adds_up_per_service_and_day_with_run_ids_and_resources(whole_bill, tmp_path):
    engine = store.get_engine(f"sqlite:///{tmp_path / 'l.db'}")
    collected = aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY, all_services=True)
    billing = collected.billing_costs
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in ALL:
        expected[(c.day, S3 if c.is_storage else c.service_name)] += c.billed()
    got = per_day_and_service(billing)
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-7"), key
    # the Glue job's cost is its run's, every day; nothing else carries a run id
    tagged = {(b.day, b.tagged_run_id) for b in billing if b.tagged_run_id}
    assert tagged == {(day, samples.sample_run_id("glue", day)) for day in WINDOW.days()}
    assert all(b.service == "AWS Glue" and b.resource_id == "" for b in billing if b.tagged_run_id)
    # untagged costs: by resource for the last 14 days, by usage type before them
    recent = TODAY - dt.timedelta(days=14)
    ec2 = [b for b in billing if b.service == "Amazon Elastic Compute Cloud"]
    assert {b.resource_id for b in ec2 if b.day >= recent} == {"i-0a1b2c3d4e5f60718", "i-0f9e8d7c6b5a49382"}
    assert {b.resource_id for b in ec2 if b.day < recent} == {""}
    assert {b.sku for b in ec2 if b.day < recent} == {"BoxUsage:m5.large"}
    # the storage part is what a storage import gives
    storage = aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY)
    assert sorted(collected.costs) == sorted(storage.costs)
    assert collected.estimated_days == {TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)}


def test_whole_bill_requests_filter_tags_and_services_as_documented(whole_bill, tmp_path):
    engine = store.get_engine(f"sqlite:///{tmp_path / 'l.db'}")
    aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY, all_services=True)
    not_s3 = {"Not": {"Dimensions": {"Key": "SERVICE", "Values": [S3]}}}
    absent = {"Tags": {"Key": "openlineage_run_id", "MatchOptions": ["ABSENT"]}}
    plain = [c for c in whole_bill.calls("GetCostAndUsage") if "NextPageToken" not in c]
    tagged = [c for c in plain if c["Filter"] == not_s3]
    assert len(tagged) == 1 and tagged[0]["GroupBy"][1] == {"Type": "TAG", "Key": "openlineage_run_id"}
    assert tagged[0]["TimePeriod"] == {"Start": "2026-02-28", "End": "2026-03-20"}
    (by_usage,) = [c for c in plain if c["Filter"] == {"And": [not_s3, absent]}]
    assert [g["Key"] for g in by_usage["GroupBy"]] == ["SERVICE", "USAGE_TYPE"]
    resources = [
        c
        for c in whole_bill.calls("GetCostAndUsageWithResources")
        if "NextPageToken" not in c and "And" in c["Filter"]
    ]
    assert len(resources) == 1
    services, untagged = resources[0]["Filter"]["And"]
    assert untagged == absent and S3 not in services["Dimensions"]["Values"]
    # the services with an untagged cost in those days: the Glue job's is all tagged
    assert "Amazon Elastic Compute Cloud" in services["Dimensions"]["Values"]
    assert "AWS Glue" not in services["Dimensions"]["Values"]
    assert resources[0]["TimePeriod"] == {"Start": "2026-03-06", "End": "2026-03-20"}


def test_a_whole_bill_from_cost_explorer_reconciles_to_the_nano_unit(whole_bill, tmp_path, monkeypatch):
    from airflow_cost_provider.billing.importer import save
    from tests.support.billing_rows import priced_line, store_try
    from tests.unit.reconcile.test_month import check_every_dollar
    from tests.unit.reconcile.test_reconcile import cli

    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    for day in WINDOW.days():
        at = dt.datetime.combine(day, dt.time(6), dt.timezone.utc)
        line = priced_line("glue", "23400", "DPU-second", "2.86", "orders_etl", at)
        run_id = samples.sample_run_id("glue", day)
        store_try(engine, "etl", "glue_job", [line], ol_run_id=run_id, run_id=f"r{day}", start=at)
    collected = aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY, all_services=True)
    save(engine, collected, replace_days=True)
    period = ("--since", str(WINDOW.start), "--until", str(WINDOW.end))
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", raising=False)
    code, out, err = cli("reconcile", "--ledger", url, *period, "-o", "json")
    assert code == 0, err
    check_every_dollar(url)
    (aws,) = [row for row in json.loads(out)["rows"] if row["provider"] == "aws"]
    # each day's Glue bill is its try's: all of it attributed
    glue_billed = sum((c.billed() for c in OTHERS if c.resource_id == GLUE), Decimal(0))
    assert Decimal(aws["attributed"]) == glue_billed.quantize(Decimal("1e-9"))
    assert Decimal(aws["unattributed"]) == 0
    # a second import and reconcile change nothing
    save(
        engine,
        aws_cost_explorer.fetch(WINDOW, engine=engine, today=TODAY, all_services=True),
        replace_days=True,
    )
    code, again, _ = cli("reconcile", "--ledger", url, *period, "-o", "json")
    assert json.loads(again)["rows"] == json.loads(out)["rows"]
