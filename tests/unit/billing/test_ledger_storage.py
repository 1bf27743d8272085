"""Storage costs in the ledger, on SQLite and on a real PostgreSQL server: idempotent imports,
restated and late data, credits, currencies kept apart, watermarks."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.billing import samples
from airflow_cost_provider.billing.files import fetched
from airflow_cost_provider.billing.importer import read_files, save
from airflow_cost_provider.billing.registry import file_format
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import SCHEMA_REVISION
from tests.support.airflow_env import ledger_rows
from tests.support.storage_billing import assert_matches_model, ledger_totals, model_totals

START = dt.date(2026, 3, 1)
KEY = ("day", "provider", "billing_account", "resource_id", "sku", "usage_class", "currency")
VALUES = ("amount_nanos", "credit_nanos", "correction_nanos", "quantity", "unit", "storage_bytes")


def collect(tmp_path, charges, name="v.csv", window=None):
    path = samples.write_focus(charges, tmp_path / name)
    fmt = file_format("focus")
    with fetched([str(path)], fmt.accepts) as files:
        return read_files(fmt, files, window=window)


def table(url) -> dict[tuple, tuple]:
    rows = ledger_rows(url, f"SELECT {', '.join(KEY + VALUES)} FROM cost_storage_costs")
    return {tuple(str(r[k]) for k in KEY): tuple(r[v] for v in VALUES) for r in rows}


def test_the_schema_is_at_the_storage_revision(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.schema_revision(engine) == SCHEMA_REVISION == "0011"  # storage tables came with 0003
    names = set(sa.inspect(engine).get_table_names())
    assert {
        "cost_storage_costs",
        "cost_storage_imports",
        "cost_storage_watermarks",
        "cost_storage_allocations",
        "cost_billing_api_cache",
    } <= names
    unique = sa.inspect(engine).get_unique_constraints("cost_storage_costs")
    assert [tuple(u["column_names"]) for u in unique] == [KEY]


def test_importing_the_same_data_twice_changes_nothing(ledger_url, tmp_path):
    engine = store.get_engine(ledger_url)
    charges = samples.sample_charges(START, 3)
    save(engine, collect(tmp_path, charges))
    first = table(ledger_url)
    save(engine, collect(tmp_path, charges))
    save(engine, collect(tmp_path, charges), replace_days=True)
    assert table(ledger_url) == first
    assert len(first) == len(ledger_rows(ledger_url, "SELECT id FROM cost_storage_costs"))
    got, counts = ledger_totals(ledger_url)
    assert_matches_model(got, counts, model_totals(charges))
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_storage_imports")) == 3


def test_restated_rows_replace_the_earlier_ones(ledger_url, tmp_path):
    engine = store.get_engine(ledger_url)
    save(engine, collect(tmp_path, samples.sample_charges(START, 3)), replace_days=True)
    restated = samples.sample_charges(START, 3, version=2)
    save(engine, collect(tmp_path, restated, "v2.csv"), replace_days=True)
    got, counts = ledger_totals(ledger_url)
    assert_matches_model(got, counts, model_totals(restated))
    # the charge the restated export withdrew is gone
    withdrawn = ledger_rows(
        ledger_url,
        "SELECT * FROM cost_storage_costs WHERE resource_id = 'acme-curated' AND usage_type = 'Requests-Tier2' "
        f"AND day = '{START + dt.timedelta(days=1)}'",
    )
    assert withdrawn == []


def test_without_replacing_days_only_the_same_keys_are_replaced(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = store.get_engine(url)
    save(engine, collect(tmp_path, samples.sample_charges(START, 3)))
    save(engine, collect(tmp_path, samples.sample_charges(START, 3, version=2), "v2.csv"))
    # the withdrawn charge stays: an upsert by key cannot know it was withdrawn
    kept = ledger_rows(
        url,
        "SELECT amount_nanos FROM cost_storage_costs WHERE resource_id = 'acme-curated' "
        f"AND usage_type = 'Requests-Tier2' AND day = '{START + dt.timedelta(days=1)}'",
    )
    assert len(kept) == 1


def test_late_data_is_added_and_a_day_without_data_is_never_zero(ledger_url, tmp_path):
    engine = store.get_engine(ledger_url)
    window = DateWindow(START, START + dt.timedelta(days=6))  # a run reads six days
    early = samples.sample_charges(START, 3)  # ... the provider has delivered three
    save(engine, collect(tmp_path, early, window=window), replace_days=True, watermark_key="focus:x")
    days = {r["day"] for r in ledger_rows(ledger_url, "SELECT DISTINCT day FROM cost_storage_costs")}
    assert len(days) == 3
    assert store.storage_watermark(engine, "focus:x") == START + dt.timedelta(days=2)

    later = samples.sample_charges(START, 5)  # the next delivery has two more days
    save(
        engine,
        collect(tmp_path, later, "later.csv", window=window),
        replace_days=True,
        watermark_key="focus:x",
    )
    got, counts = ledger_totals(ledger_url)
    assert_matches_model(got, counts, model_totals(later))
    assert store.storage_watermark(engine, "focus:x") == START + dt.timedelta(days=4)

    # an import of older data never moves the watermark back
    save(engine, collect(tmp_path, early, window=window), replace_days=True, watermark_key="focus:x")
    assert store.storage_watermark(engine, "focus:x") == START + dt.timedelta(days=4)


def test_credits_are_part_of_the_amount_and_kept_apart_too(ledger_url, tmp_path):
    engine = store.get_engine(ledger_url)
    charges = samples.sample_charges(START, 2)
    save(engine, collect(tmp_path, charges))
    rows = ledger_rows(
        ledger_url,
        "SELECT provider, sum(credit_nanos) AS credits, sum(amount_nanos) AS amount FROM cost_storage_costs "
        "GROUP BY provider",
    )
    credits = {r["provider"]: Decimal(int(r["credits"])).scaleb(-9) for r in rows}
    for provider in ("aws", "gcp", "azure"):
        expected = sum(
            (c.cost if c.category == "Credit" else sum((a for _, a in c.credits), Decimal(0)))
            for c in charges
            if c.provider == provider
        )
        assert expected < 0 and abs(credits[provider] - expected) < Decimal("1e-8")


def test_currencies_stay_apart_in_the_ledger_and_the_report(ledger_url, tmp_path):
    from airflow_cost_provider.report import storage_report

    engine = store.get_engine(ledger_url)
    save(engine, collect(tmp_path, samples.sample_charges(START, 2)))
    report = storage_report(engine, "resource,usage-class", START, START + dt.timedelta(days=2))
    currencies = Counter((r.keys["provider"], r.currency) for r in report.rows)
    assert set(currencies) == {("aws", "USD"), ("gcp", "USD"), ("azure", "EUR")}


def test_ids_longer_than_their_column_stay_distinct(ledger_url, tmp_path):
    engine = store.get_engine(ledger_url)
    charges = samples.sample_charges(START, 1, providers=("aws",))
    long_a = "a" * 450 + "-one"
    long_b = "a" * 450 + "-two"
    renamed = [
        c.__class__(**{**c.__dict__, "resource_id": long_a if c.resource_id == "acme-curated" else long_b})
        if c.resource_id in ("acme-curated", "acme-logs-eu")
        else c
        for c in charges
    ]
    save(engine, collect(tmp_path, renamed))
    stored = {
        r["resource_id"]
        for r in ledger_rows(ledger_url, "SELECT DISTINCT resource_id FROM cost_storage_costs")
    }
    long_ones = [r for r in stored if r.startswith("aaaa")]
    assert len(long_ones) == 2 and all(len(r) == 400 for r in long_ones)


def test_the_portable_write_path_gives_the_same_ledger(tmp_path, monkeypatch):
    charges = samples.sample_charges(START, 3)
    bulk = f"sqlite:///{tmp_path / 'bulk.db'}"
    save(store.get_engine(bulk), collect(tmp_path, charges))
    save(store.get_engine(bulk), collect(tmp_path, samples.sample_charges(START, 3, version=2), "v2.csv"))
    monkeypatch.setattr(store, "_BULK_DIALECTS", ())  # as on a database without INSERT .. ON CONFLICT
    portable = f"sqlite:///{tmp_path / 'portable.db'}"
    save(store.get_engine(portable), collect(tmp_path, charges))
    save(store.get_engine(portable), collect(tmp_path, samples.sample_charges(START, 3, version=2), "v2.csv"))
    assert table(portable) == table(bulk)
    stamps = ledger_rows(portable, "SELECT updated_at FROM cost_storage_costs LIMIT 1")
    assert stamps[0]["updated_at"]
