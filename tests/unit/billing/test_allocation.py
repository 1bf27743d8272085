"""Allocation of a bucket's storage cost to the datasets inside it, by bytes per prefix."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from airflow_cost_provider.billing.allocation import allocate, measure, parse_target, parse_targets
from tests.support import fake_aws

DAY = dt.date(2026, 3, 2)


def cost(resource, amount, stored=None, usage_class="storage", provider="aws", currency="USD", sku="S"):
    return {
        "provider": provider,
        "billing_account": "123",
        "day": DAY,
        "resource_id": resource,
        "sku": sku,
        "usage_class": usage_class,
        "currency": currency,
        "amount": Decimal(amount),
        "storage_bytes": stored,
    }


def test_targets_name_their_bucket_and_openlineage_dataset():
    s3 = parse_target("s3://lake/raw/orders/", 10)
    assert (s3.provider, s3.resource, s3.namespace, s3.name) == ("aws", "lake", "s3://lake", "raw/orders")
    gcs = parse_target("gs://lake-eu/curated")
    assert (gcs.provider, gcs.resource, gcs.namespace, gcs.name) == (
        "gcp",
        "lake-eu",
        "gs://lake-eu",
        "curated",
    )
    adls = parse_target("abfss://raw@AcmeLake.dfs.core.windows.net")
    assert (adls.provider, adls.resource, adls.namespace, adls.name) == (
        "azure",
        "acmelake",
        "abfss://raw@AcmeLake.dfs.core.windows.net",
        "/",
    )
    with pytest.raises(ValueError, match="not an s3://bucket/prefix"):
        parse_target("https://example.com/x")
    with pytest.raises(ValueError, match="number of bytes"):
        parse_targets({"s3://lake/x/": -5})


def test_each_prefix_gets_its_share_of_the_storage_cost_and_the_rest_stays():
    costs = [
        cost("lake", "10.00", stored=1000, sku="A"),
        cost("lake", "2.00", stored=1000, sku="B"),  # another storage class of the same bucket
        cost("lake", "5.00", usage_class="requests"),  # requests are not allocated by bytes
        cost("other-bucket", "7.00", stored=50),
    ]
    targets = parse_targets({"s3://lake/raw/": 500, "s3://lake/curated/": 300})
    allocations = {a["dataset_name"]: a for a in allocate(costs, targets)}
    assert set(allocations) == {"raw", "curated"}
    assert allocations["raw"]["amount"] == Decimal("3.000000000")  # 12.00 x 500 / 2000
    assert allocations["curated"]["amount"] == Decimal("1.800000000")
    assert allocations["raw"]["share"] == Decimal("0.25") and allocations["raw"]["method"] == "allocated"
    assert allocations["raw"]["dataset_namespace"] == "s3://lake"


def test_when_the_prefixes_hold_more_than_billed_they_split_the_whole_cost():
    costs = [cost("lake", "9.00", stored=100)]
    targets = parse_targets({"s3://lake/a/": 200, "s3://lake/b/": 100})
    amounts = {a["dataset_name"]: a["amount"] for a in allocate(costs, targets)}
    assert amounts == {"a": Decimal("6.000000000"), "b": Decimal("3.000000000")}


def test_azure_accounts_are_split_to_their_containers_and_currencies_stay_apart():
    account = "/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/acmelake"
    costs = [
        cost(account, "4.00", stored=4000, provider="azure", currency="EUR"),
        cost(account, "1.00", stored=4000, provider="azure", currency="EUR", sku="cool"),
    ]
    targets = parse_targets({"abfss://raw@acmelake.dfs.core.windows.net": 3000})
    (allocation,) = allocate(costs, targets)
    assert allocation["currency"] == "EUR" and allocation["amount"] == Decimal(
        "1.875000000"
    )  # 5 x 3000 / 8000
    assert allocation["dataset_namespace"] == "abfss://raw@acmelake.dfs.core.windows.net"


def test_shares_are_rounded_once_to_the_nano_unit():
    costs = [cost("lake", "1.00", stored=3)]
    (allocation,) = allocate(costs, parse_targets({"s3://lake/x/": 1}))
    assert allocation["amount"] == Decimal("0.333333333")


def test_unmeasured_prefixes_are_listed_through_the_provider(monkeypatch):
    with fake_aws.moto_server() as endpoint:
        s3 = fake_aws.client("s3", endpoint)
        s3.create_bucket(Bucket="lake")
        for key, size in [
            ("raw/orders/a.parquet", 1000),
            ("raw/orders/b.parquet", 2500),
            ("raw/ordersx/c", 7),
        ]:
            s3.put_object(Bucket="lake", Key=key, Body=b"0" * size)
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", fake_aws.aws_connection(endpoint))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        (measured,) = measure(parse_targets({"s3://lake/raw/orders": None}))
    assert measured.bytes == 3500  # the prefix is a folder: raw/ordersx is not in it
    assert json.loads(json.dumps(measured.__dict__))["name"] == "raw/orders"
