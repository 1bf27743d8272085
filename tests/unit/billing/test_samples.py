"""The sample exports are valid FOCUS 1.0 (columns, types, allowed values), deterministic, and
restated the way a provider restates.

The files were also checked with the FinOps Foundation's focus-validator (see
docs/sources/storage.md); these tests keep the same guarantees offline."""

from __future__ import annotations

import csv
import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from airflow_cost_provider.billing import samples

FOCUS_1_0_COLUMNS = {
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
    "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
}  # fmt: skip
DECIMALS = {"BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity", "PricingQuantity",
            "ListUnitPrice", "ContractedUnitPrice"}  # fmt: skip
DATETIMES = {"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"}
UTC_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def rows(path):
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_the_focus_export_has_every_focus_1_0_column_with_its_type(tmp_path):
    charges = samples.sample_charges(dt.date(2026, 7, 30), 4, version=2)
    for path in (
        samples.write_focus(charges, tmp_path / "focus.csv"),
        samples.write_azure_focus(charges, tmp_path / "azure.csv"),
    ):
        header, records = rows(path)
        assert FOCUS_1_0_COLUMNS <= set(header)
        assert all(name in FOCUS_1_0_COLUMNS or name.startswith("x_") for name in header)
        for record in records:
            for name in DECIMALS:
                if record[name]:
                    try:
                        Decimal(record[name])
                    except InvalidOperation as error:
                        raise AssertionError((name, record[name])) from error
            assert all(UTC_DATETIME.fullmatch(record[name]) for name in DATETIMES)
            assert record["ChargePeriodStart"] < record["ChargePeriodEnd"]
            assert record["ChargeCategory"] in {"Adjustment", "Credit", "Purchase", "Tax", "Usage"}
            assert record["ChargeClass"] in ("", "Correction")
            assert record["ChargeFrequency"] in {"One-Time", "Recurring", "Usage-Based"}
            assert re.fullmatch(r"[A-Z]{3}", record["BillingCurrency"])
            if record["ChargeCategory"] != "Usage":
                assert record["ConsumedQuantity"] == "" and record["ConsumedUnit"] == ""
            if record["ChargeCategory"] == "Tax":
                assert record["SkuId"] == ""


def test_the_samples_are_deterministic_and_cover_every_case():
    first = samples.sample_charges(dt.date(2026, 7, 1), 5)
    assert first == samples.sample_charges(dt.date(2026, 7, 1), 5)
    assert {c.provider for c in first} == {"aws", "gcp", "azure"}
    assert len({c.resource_id for c in first if c.is_storage}) == len(samples.BUCKETS)
    assert any(c.category == "Credit" for c in first) and any(c.credits for c in first)
    assert any(c.charge_class == "Correction" for c in first)
    assert any(c.category == "Tax" for c in first)
    assert any(not c.is_storage for c in first)


def test_the_restated_delivery_revises_egress_and_withdraws_one_charge():
    v1 = samples.sample_charges(dt.date(2026, 7, 1), 9)
    v2 = samples.sample_charges(dt.date(2026, 7, 1), 9, version=2)
    key = lambda c: (c.resource_id, c.day, c.usage_type, c.category, c.charge_class)  # noqa: E731
    one, two = {key(c): c for c in v1}, {key(c): c for c in v2}
    assert set(one) - set(two) == {("acme-curated", dt.date(2026, 7, 2), "Requests-Tier2", "Usage", None)}
    changed = {k for k in two if one[k].cost != two[k].cost}
    assert changed and all(one[k].expected_class == "transfer_egress" for k in changed)
