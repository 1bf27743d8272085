"""Usage classes, bytes stored and provider names: the rules every billing source shares."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import focus, samples

CATALOGUE = [*samples.AWS_KINDS, *samples.GCP_KINDS, *samples.AZURE_KINDS]


@pytest.mark.parametrize("kind", CATALOGUE, ids=lambda k: k.usage_type)
def test_every_sample_usage_type_gets_its_usage_class(kind):
    assert focus.usage_class(kind.usage_type, kind.unit, focus.USAGE) == kind.usage_class


@pytest.mark.parametrize(
    ("usage_type", "unit", "expected"),
    [
        ("EUW1-TimedStorage-ByteHrs", "GB-Mo", "storage"),
        ("USW2-TimedStorage-GlacierByteHrs", "GB-Mo", "storage"),
        ("EarlyDelete-SIA", "GB-Mo", "storage"),
        ("APN1-Requests-Tier1", "Requests", "requests"),
        ("Requests-GLACIER-Tier2", "Requests", "requests"),
        ("EUC1-Retrieval-SIA", "GB", "retrieval"),
        ("EUW1-DataTransfer-Out-Bytes", "GB", "transfer_egress"),
        ("EU-DataTransfer-Out-Bytes", "GB", "transfer_egress"),
        ("EUW1-USE1-AWS-Out-Bytes", "GB", "transfer_cross_region"),
        ("USE1-S3RTC-Out-Bytes", "GB", "transfer_cross_region"),
        ("USE1-CloudFront-Out-Bytes", "GB", "transfer_inter_service"),
        ("DataTransfer-In-Bytes", "GB", "other"),
        ("Network Inter Region Data Transfer Out from Americas to EMEA", "gibibyte", "transfer_cross_region"),
        ("Download China (excluding Hong Kong)", "gibibyte", "transfer_egress"),
        ("Regional Standard Class A Operations", "count", "requests"),
        ("Archive Storage Belgium", "gibibyte month", "storage"),
        ("Intra Continent Data Transfer Out", "1 GB", "transfer_cross_region"),
        ("Data Transfer In", "1 GB", "other"),
        ("Storage", None, "storage"),  # Azure's Query API grouped by meter category
        ("Bandwidth", None, "transfer_egress"),
        ("Monitoring-Automation-INT", "Objects", "other"),
        (None, None, "other"),
    ],
)
def test_usage_classes_of_real_usage_types(usage_type, unit, expected):
    assert focus.usage_class(usage_type, unit, focus.USAGE) == expected


def test_tax_and_purchases_are_classes_of_their_own_whatever_the_usage_type():
    assert focus.usage_class("TimedStorage-ByteHrs", "GB-Mo", focus.TAX) == "tax"
    assert focus.usage_class("Hot LRS Data Stored", "1 GB/Month", focus.PURCHASE) == "commitment"
    # a credit keeps the class of what it is a credit on
    assert focus.usage_class("TimedStorage-ByteHrs", None, focus.CREDIT) == "storage"


def test_a_gb_month_on_one_day_is_the_average_bytes_of_that_day():
    # 100 GiB stored all of January: each day bills 100 / 31 GB-Mo
    per_day = Decimal(100) / 31
    assert focus.bytes_stored(per_day, "GB-Mo", dt.date(2026, 1, 5)) == pytest.approx(Decimal(100 * 2**30))
    # the same GB-month quantity on a February day stands for more bytes (28 days)
    february = focus.bytes_stored(Decimal(1), "GB-Mo", dt.date(2026, 2, 5))
    january = focus.bytes_stored(Decimal(1), "GB-Mo", dt.date(2026, 1, 5))
    assert february == 2**30 * 28 and january == 2**30 * 31


def test_hourly_rows_add_up_to_the_daily_average():
    hourly = Decimal(100) / 31 / 24
    total = sum(focus.bytes_stored(hourly, "GB-Mo", dt.date(2026, 1, 5)) for _ in range(24))
    assert total == pytest.approx(Decimal(100 * 2**30))


@pytest.mark.parametrize(
    ("quantity", "unit", "expected"),
    [
        (Decimal(5 * 2**30 * 86400), "byte-seconds", 5 * 2**30),  # GCP
        (Decimal(30) / 31, "1 GB/Month", 30 * 2**30),  # Azure
        (Decimal(24 * 7), "gibibyte hour", 7 * 2**30),
        (Decimal(1), "Requests", None),
        (Decimal(1), None, None),
    ],
)
def test_bytes_stored_in_each_cloud_unit(quantity, unit, expected):
    result = focus.bytes_stored(quantity, unit, dt.date(2026, 1, 10))
    assert (result is None) if expected is None else result == pytest.approx(Decimal(expected))


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("AWS", "aws"),
        ("Amazon Web Services", "aws"),
        ("Google Cloud", "gcp"),
        ("Microsoft", "azure"),
        ("Oracle", None),
    ],
)
def test_provider_names(name, provider):
    assert focus.provider_of(name) == provider
