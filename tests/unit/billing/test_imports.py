"""Each file format, written from the sample model and read back: the right charges, classes and
amounts per bucket and day, credits and corrections kept, other services skipped and counted."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import focus, samples
from airflow_cost_provider.billing.files import fetched
from airflow_cost_provider.billing.importer import read_files
from airflow_cost_provider.billing.registry import file_format
from airflow_cost_provider.billing.scan import DateWindow

START = dt.date(2026, 1, 30)  # across a month end: days-in-month matters for bytes stored
DAYS = 4
CHARGES = samples.sample_charges(START, DAYS)

# format, file type, writer, providers the file holds
CASES = [
    ("focus", "csv", samples.write_focus, {"aws", "gcp", "azure"}),
    ("focus", "csv.gz", samples.write_focus, {"aws", "gcp", "azure"}),
    ("focus", "parquet", samples.write_focus, {"aws", "gcp", "azure"}),
    ("aws-cur", "parquet", samples.write_cur, {"aws"}),
    ("aws-cur", "csv.gz", samples.write_cur, {"aws"}),
    ("azure-export", "csv", samples.write_azure_focus, {"azure"}),
    ("azure-export", "parquet", samples.write_azure_focus, {"azure"}),
    ("gcp-billing-export", "jsonl", samples.write_gcp_export, {"gcp"}),
    ("gcp-billing-export", "parquet", samples.write_gcp_export, {"gcp"}),
]


def read(path, name, window=None):
    fmt = file_format(name)
    with fetched([str(path)], fmt.accepts) as files:
        return read_files(fmt, files, window=window)


def by_class(costs) -> tuple[dict[tuple, Decimal], Counter]:
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    rows: Counter = Counter()
    for cost in costs:
        key = (cost.provider, cost.resource_id, cost.day, cost.usage_class, cost.currency)
        totals[key] += cost.amount
        rows[key] += 1
    return dict(totals), rows


def model(providers, days=None):
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in CHARGES:
        if c.is_storage and c.provider in providers and (days is None or c.day in days):
            resource = c.resource_id.lower() if c.provider == "azure" else c.resource_id
            totals[(c.provider, resource, c.day, c.expected_class, c.currency)] += c.billed()
    return dict(totals)


@pytest.mark.parametrize(
    ("name", "kind", "writer", "providers"), CASES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_amounts_per_bucket_day_and_usage_class_match_the_model(tmp_path, name, kind, writer, providers):
    path = writer(CHARGES, tmp_path / f"export.{kind}", kind)
    collected = read(path, name)
    got, rows = by_class(collected.costs)
    expected = model(providers)
    assert set(got) == set(expected)
    for key, amount in expected.items():
        # each ledger row is rounded once to the nano-unit, half to even
        assert abs(got[key] - amount) <= Decimal("0.5e-9") * rows[key], key
    # every usage class of the issue is there, for every cloud in the file
    classes = {key[3] for key in got}
    assert {"storage", "requests", "retrieval", "transfer_egress", "transfer_cross_region"} <= classes
    # what is not object storage is skipped, and counted
    others = [c for c in CHARGES if not c.is_storage and c.provider in providers]
    assert collected.skipped == Counter({"not_storage": len(others)})
    assert collected.rows_read == collected.rows_imported + len(others)
    assert collected.days_with_data == {START + dt.timedelta(days=n) for n in range(DAYS)}


def test_currencies_are_never_added_together(tmp_path):
    collected = read(samples.write_focus(CHARGES, tmp_path / "f.csv"), "focus")
    by_provider = {(c.provider, c.currency) for c in collected.costs}
    assert by_provider == {("aws", "USD"), ("gcp", "USD"), ("azure", "EUR")}


def test_credits_and_corrections_are_kept_and_summed(tmp_path):
    collected = read(samples.write_focus(CHARGES, tmp_path / "f.parquet", "parquet"), "focus")
    credits: dict[tuple, Decimal] = defaultdict(Decimal)
    corrections: dict[tuple, Decimal] = defaultdict(Decimal)
    for cost in collected.costs:
        credits[(cost.provider, cost.day)] += cost.credits
        corrections[(cost.provider, cost.day)] += Decimal(cost.correction_nanos).scaleb(-9)
    for provider in ("aws", "gcp", "azure"):
        for day in (START + dt.timedelta(days=n) for n in range(DAYS)):
            expected = sum(
                (
                    c.cost if c.category == focus.CREDIT else sum((a for _, a in c.credits), Decimal(0))
                    for c in CHARGES
                    if c.provider == provider and c.day == day
                ),
                Decimal(0),
            )
            assert expected < 0
            assert abs(credits[(provider, day)] - expected) < Decimal("1e-8")
        # the third day corrects the first: the correction is booked on the day it corrects
        correction = [c for c in CHARGES if c.provider == provider and c.charge_class == focus.CORRECTION]
        assert len(correction) == 1 and correction[0].day == START
        assert abs(corrections[(provider, START)] - correction[0].cost) < Decimal("1e-9")
        assert corrections[(provider, START + dt.timedelta(days=1))] == 0


def test_bytes_stored_per_bucket_and_day(tmp_path):
    collected = read(samples.write_cur(CHARGES, tmp_path / "c.parquet"), "aws-cur")
    stored: dict[tuple, int] = defaultdict(int)
    for cost in collected.costs:
        if cost.storage_bytes is not None:
            stored[(cost.resource_id, cost.day)] += cost.storage_bytes
    for (bucket, day), value in stored.items():
        # GB-months billed on the day x 2^30 x days in the month (in a CUR a refund is a credit: its
        # negative quantity is not usage)
        expected = sum(
            c.quantity * 2**30 * focus.days_in_month(day)
            for c in CHARGES
            if c.provider == "aws"
            and c.resource_id == bucket
            and c.day == day
            and c.unit == "GB-Mo"
            and c.category == focus.USAGE
            and c.charge_class is None
        )
        assert abs(value - expected) <= 2, (bucket, day)
    assert stored[("acme-raw-events", dt.date(2026, 1, 31))] > 2 * 10**12


def test_a_window_keeps_its_days_and_counts_the_others(tmp_path):
    path = samples.write_focus(CHARGES, tmp_path / "f.csv")
    window = DateWindow(dt.date(2026, 1, 31), dt.date(2026, 2, 2))
    collected = read(path, "focus", window)
    assert {c.day for c in collected.costs} == {dt.date(2026, 1, 31), dt.date(2026, 2, 1)}
    outside = [c for c in CHARGES if c.is_storage and c.day not in window]
    # FOCUS writes a GCP credit as a row of its own
    outside_rows = len(outside) + sum(1 for c in outside if c.credits)
    assert collected.skipped["outside_window"] == outside_rows
    got, rows = by_class(collected.costs)
    for key, amount in model({"aws", "gcp", "azure"}, days=set(window.days())).items():
        assert abs(got[key] - amount) <= Decimal("0.5e-9") * rows[key]


def test_a_directory_is_read_as_one_import_and_its_manifest_skipped(tmp_path):
    first = [c for c in CHARGES if c.day == START]
    rest = [c for c in CHARGES if c.day != START]
    samples.write_focus(first, tmp_path / "export" / "part-1.csv")
    samples.write_focus(rest, tmp_path / "export" / "part-2.csv.gz", "csv.gz")
    (tmp_path / "export" / "manifest.json").write_text("{}")
    collected = read(tmp_path / "export", "focus")
    assert len(collected.files) == 2
    got, rows = by_class(collected.costs)
    for key, amount in model({"aws", "gcp", "azure"}).items():
        assert abs(got[key] - amount) <= Decimal("0.5e-9") * rows[key]
