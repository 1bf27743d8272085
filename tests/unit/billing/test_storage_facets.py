"""The costProvider_storageCost dataset facet: its schema, its content, its dataset names."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from jsonschema import ValidationError
from openlineage.client.serde import Serde

from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.openlineage.storage_facets import (
    STORAGE_FACET_KEY,
    bucket_dataset,
    storage_datasets,
    storage_facets,
)
from tests.support.storage_billing import validate_storage_event, validate_storage_facet

DAY = dt.date(2026, 3, 2)
PERIOD = DateWindow(DAY, DAY + dt.timedelta(days=1))


def row(
    resource,
    usage_class,
    amount,
    provider="aws",
    currency="USD",
    credit="0",
    quantity=None,
    unit=None,
    stored=None,
):
    return {
        "provider": provider,
        "billing_account": "123456789012",
        "day": DAY,
        "resource_id": resource,
        "sku": usage_class,
        "usage_class": usage_class,
        "currency": currency,
        "amount": Decimal(amount),
        "credit": Decimal(credit),
        "quantity": None if quantity is None else Decimal(quantity),
        "unit": unit,
        "storage_bytes": stored,
    }


ROWS = [
    row("acme-raw", "storage", "1.25", quantity="50", unit="GB-Mo", stored=50 * 31 * 2**30),
    row("acme-raw", "storage", "-0.05", credit="-0.05"),
    row("acme-raw", "requests", "0.42", quantity="84000", unit="Requests"),
    row("acme-raw", "transfer_egress", "0.9", quantity="10", unit="GB"),
    row("projects/_/buckets/lake-eu", "storage", "2", provider="gcp"),
    row("projects/acme-data", "storage", "3", provider="gcp"),  # standard export: a project, no bucket
    row(
        "/subscriptions/s/resourcegroups/r/providers/microsoft.storage/storageaccounts/acct",
        "storage",
        "4",
        provider="azure",
        currency="EUR",
    ),
]


def event(datasets) -> dict:
    return {
        "eventType": "COMPLETE",
        "eventTime": "2026-03-03T06:00:00Z",
        "producer": "https://example.com/tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4())},
        "job": {"namespace": "default", "name": "storage.import"},
        "inputs": [],
        "outputs": [Serde.to_dict(d) for d in datasets],
    }


def test_buckets_are_datasets_named_as_openlineage_names_them():
    assert bucket_dataset("aws", "acme-raw") == ("s3://acme-raw", "/")
    assert bucket_dataset("aws", "arn:aws:s3:::acme-raw") == ("s3://acme-raw", "/")
    assert bucket_dataset("gcp", "projects/_/buckets/lake-eu") == ("gs://lake-eu", "/")
    assert bucket_dataset("gcp", "//storage.googleapis.com/projects/_/buckets/lake-eu") == (
        "gs://lake-eu",
        "/",
    )
    assert bucket_dataset("gcp", "projects/acme-data") is None
    assert bucket_dataset("azure", ROWS[-1]["resource_id"]) is None  # an account is not a container
    assert bucket_dataset("aws", "") is None


def test_the_facet_sums_usage_classes_per_currency_and_validates():
    facets = storage_facets(ROWS, [], PERIOD, "aws-cur", "preliminary")
    assert set(facets) == {("s3://acme-raw", "/"), ("gs://lake-eu", "/")}
    facet = Serde.to_dict(facets[("s3://acme-raw", "/")])
    assert facet["period"] == {"start": "2026-03-02", "end": "2026-03-03"}
    assert facet["totals"] == [{"amount": 2.52, "currency": "USD"}]
    assert facet["credits"] == [{"amount": -0.05, "currency": "USD"}]
    classes = {c["usageClass"]: c for c in facet["usageClasses"]}
    assert (
        classes["storage"]["amount"] == 1.2 and "quantity" not in classes["storage"]
    )  # the credit has no unit
    assert classes["requests"] == {
        "usageClass": "requests",
        "amount": 0.42,
        "currency": "USD",
        "quantity": 84000,
        "unit": "Requests",
    }
    assert facet["bytesStored"] == 50 * 31 * 2**30 and facet["method"] == "metered"
    assert facet["_schemaURL"].endswith(
        "CostProviderStorageCostDatasetFacet.json#/$defs/CostProviderStorageCostDatasetFacet"
    )
    validate_storage_facet(facet)
    validate_storage_event(event(storage_datasets(facets)))


def test_allocated_datasets_carry_their_share():
    allocations = [
        {
            "provider": "aws",
            "billing_account": "123456789012",
            "day": DAY,
            "resource_id": "acme-raw",
            "usage_class": "storage",
            "currency": "USD",
            "dataset_namespace": "s3://acme-raw",
            "dataset_name": "events/clicks",
            "bytes": 600,
            "share": Decimal("0.5"),
            "amount": Decimal("0.6"),
            "method": "allocated",
        }
    ]
    facets = storage_facets(ROWS, allocations, PERIOD, "focus", "final")
    facet = Serde.to_dict(facets[("s3://acme-raw", "events/clicks")])
    assert facet["method"] == "allocated" and facet["status"] == "final"
    assert facet["share"] == 0.5 and facet["totals"] == [{"amount": 0.6, "currency": "USD"}]
    assert facet["allocatedFrom"] == {"namespace": "s3://acme-raw", "name": "/"}
    outputs = storage_datasets(facets)
    assert [(d.namespace, d.name) for d in outputs][:2] == [("gs://lake-eu", "/"), ("s3://acme-raw", "/")]
    assert all(STORAGE_FACET_KEY in d.facets for d in outputs)
    validate_storage_event(event(outputs))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.update(status="estimated"),
        lambda f: f.update(method="list_price"),
        lambda f: f["totals"][0].update(currency="usd"),
        lambda f: f["usageClasses"][0].update(usageClass="hot_storage"),
        lambda f: f["period"].update(start="yesterday"),
        lambda f: f.pop("period"),
    ],
)
def test_the_schema_rejects_what_the_facet_never_says(change):
    facet = Serde.to_dict(storage_facets(ROWS, [], PERIOD, "aws-cur", "preliminary")[("s3://acme-raw", "/")])
    broken = copy.deepcopy(facet)
    change(broken)
    with pytest.raises(ValidationError):
        validate_storage_facet(broken)
