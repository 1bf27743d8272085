"""Estimate correction: the factor reconciled / estimated that reconciling showed, kept per source,
resource and currency, applied to new estimates of the sources a user opts in."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import record_usage
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import estimate_factors, lines
from airflow_cost_provider.pricing import Usage
from airflow_cost_provider.reconcile import corrections
from tests.support.airflow_env import ledger_rows
from tests.support.billing_rows import priced_line, store_try
from tests.support.fake_ti import FakeTaskInstance
from tests.support.openlineage import validate_event

DAY = dt.datetime(2026, 11, 10, 8, tzinfo=dt.timezone.utc)


def engine() -> sa.Engine:
    return store.get_engine(os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])


def reconcile_lines(ledger: sa.Engine, factor_by_resource: dict[str, str], count: int = 6) -> None:
    """`count` tries per resource, each one Snowflake line of $2.00 estimated, reconciled at
    $2.00 x the resource's factor, as `airflow-cost reconcile` leaves them."""
    for resource, factor in factor_by_resource.items():
        for n in range(count):
            line = priced_line("snowflake", "1", "credit", "2.00", resource, DAY, metric="credits")
            store_try(
                ledger, "d", f"t-{resource}-{n}", [line], run_id=f"r{n}", start=DAY + dt.timedelta(days=n)
            )
        with ledger.begin() as conn:
            ids = sa.select(lines.c.id).where(
                lines.c.source == "snowflake", lines.c.reconciled_nanos.is_(None)
            )
            conn.execute(
                sa.update(lines)
                .where(lines.c.id.in_(ids))
                .values(
                    reconciled_nanos=int(Decimal("2.00") * Decimal(factor) * 10**9),
                    reconciled_currency="USD",
                    status="reconciled",
                )
            )


def test_factors_per_resource_and_per_source_over_the_window():
    ledger = engine()
    reconcile_lines(ledger, {"WH_ETL": "0.8", "WH_BI": "0.6"})
    with ledger.connect() as conn:
        found = corrections.compute(conn, dt.date(2026, 12, 1))
    by_key = {(f.source, f.resource): f for f in found}
    assert by_key[("snowflake", "WH_ETL")].factor == Decimal("0.800000")
    assert by_key[("snowflake", "WH_BI")].factor == Decimal("0.600000")
    # the source across its resources: (12 x 2.00 x 0.7) / (12 x 2.00)
    whole = by_key[("snowflake", corrections.ALL_RESOURCES)]
    assert (whole.factor, whole.lines, whole.since) == (Decimal("0.700000"), 12, dt.date(2026, 11, 1))
    # outside the 30 days before `until`, nothing is learnt
    with ledger.connect() as conn:
        assert corrections.compute(conn, dt.date(2027, 1, 30)) == []


def test_too_few_reconciled_lines_give_no_factor():
    ledger = engine()
    reconcile_lines(ledger, {"WH_ETL": "0.8"}, count=corrections.MIN_LINES - 1)
    with ledger.connect() as conn:
        assert corrections.compute(conn, dt.date(2026, 12, 1)) == []


def factors(**by_resource: str) -> corrections.Factors:
    since, until = dt.date(2026, 11, 1), dt.date(2026, 12, 1)
    return {
        ("snowflake", resource, "USD"): corrections.Factor(
            "snowflake", resource, "USD", Decimal(value), 9, since, until
        )
        for resource, value in by_resource.items()
    }


def test_a_line_takes_its_resources_factor_else_its_sources_and_is_rounded_to_the_nano_unit():
    known = factors(WH_ETL="0.812345", **{corrections.ALL_RESOURCES: "0.9"})
    line = priced_line("snowflake", "1", "credit", "1.234567891", "WH_ETL", DAY, metric="credits")
    fixed = corrections.corrected(line, known)
    # 1.234567891 x 0.812345 = 1.002895053414395 -> 1.002895053
    assert fixed.amount == Decimal("1.002895053")
    assert (fixed.correction_factor, fixed.uncorrected_amount, fixed.status) == (
        Decimal("0.812345"),
        Decimal("1.234567891"),
        "estimated",
    )
    other = priced_line("snowflake", "1", "credit", "2", "WH_NEW", DAY, metric="credits")
    assert corrections.corrected(other, known).amount == Decimal("1.8")
    # corrected once only; another currency or source has no factor
    assert corrections.corrected(fixed, known) is fixed
    euro = priced_line("snowflake", "1", "credit", "2", "WH_ETL", DAY, metric="credits", currency="EUR")
    assert corrections.corrected(euro, known) is euro


def test_reconcile_keeps_the_factors_and_a_second_reconcile_replaces_them():
    ledger = engine()
    reconcile_lines(ledger, {"WH_ETL": "0.8"})
    now = dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)
    with ledger.begin() as conn:
        corrections.replace_all(conn, corrections.compute(conn, dt.date(2026, 12, 1)), now)
    assert {
        (r["resource"], r["factor"])
        for r in ledger_rows(str(ledger.url), "SELECT * FROM cost_estimate_factors")
    } == {
        ("WH_ETL", "0.800000"),
        ("", "0.800000"),
    }
    with ledger.begin() as conn:
        corrections.replace_all(conn, [], now)
    with ledger.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(estimate_factors)).scalar() == 0


def keep_factors(ledger: sa.Engine, **by_resource: str) -> None:
    with ledger.begin() as conn:
        corrections.replace_all(conn, list(factors(**by_resource).values()), dt.datetime.now(dt.timezone.utc))


SNOWFLAKE = Usage(
    "snowflake",
    "credits",
    Decimal(2),
    "credit",
    resource="WH_ETL",
    external_id="q1",
    attributes={"edition": "standard"},
)
ATHENA = Usage("athena", "data_scanned", Decimal(10**12), "byte", external_id="a1")


def finished_try(monkeypatch, opted_in: str) -> tuple[dict, list[dict]]:
    from tests.unit.test_tracker import cost_facet, run_task

    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__CORRECT_ESTIMATES", opted_in)
    conf.clear_cache()
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: (record_usage(SNOWFLAKE), record_usage(ATHENA)))
    rows = ledger_rows(
        os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"],
        "SELECT source, amount_nanos, correction_factor, uncorrected_nanos, status FROM cost_lines "
        "WHERE source IN ('snowflake', 'athena') ORDER BY source",
    )
    return cost_facet(ti), rows


@pytest.mark.parametrize("opted_in", ["snowflake", "*"])
def test_an_opted_in_sources_new_estimate_is_corrected_in_ledger_and_facet(monkeypatch, opted_in):
    keep_factors(engine(), WH_ETL="0.75")
    facet, rows = finished_try(monkeypatch, opted_in)
    snowflake = next(line for line in facet["lines"] if line["source"] == "snowflake")
    list_price = Decimal(str(snowflake["uncorrectedAmount"]))
    assert list_price > 0 and snowflake["correctionFactor"] == 0.75
    assert Decimal(str(snowflake["amount"])) == list_price * Decimal("0.75")
    assert (snowflake["method"], snowflake["status"]) == ("list_price", "estimated")
    by_source = {row["source"]: row for row in rows}
    assert by_source["snowflake"]["correction_factor"] == "0.75"
    assert by_source["snowflake"]["uncorrected_nanos"] == int(list_price * 10**9)
    assert by_source["snowflake"]["amount_nanos"] == int(list_price * Decimal("0.75") * 10**9)
    # no Athena factor is kept: its line is as priced
    assert (
        by_source["athena"]["correction_factor"] is None and by_source["athena"]["amount_nanos"] == 5 * 10**9
    )
    validate_event(
        {
            "eventType": "COMPLETE",
            "eventTime": "2026-12-05T00:00:00Z",
            "producer": "https://example.com",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": "01936f4e-0000-7000-8000-000000000000", "facets": {"costProvider_cost": facet}},
            "job": {"namespace": "default", "name": "d.t"},
        }
    )


def test_without_opting_in_nothing_is_corrected(monkeypatch):
    keep_factors(engine(), WH_ETL="0.75")
    facet, rows = finished_try(monkeypatch, "")
    assert all("correctionFactor" not in line for line in facet["lines"])
    assert all(row["correction_factor"] is None for row in rows)


def test_airflow_cost_reconcile_learns_the_factor_new_estimates_then_take(monkeypatch):
    from tests.support.billing_rows import add_billed
    from tests.unit.reconcile.test_reconcile import reconcile

    ledger = engine()
    url = os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"]
    start = dt.datetime(2026, 11, 20, 6, tzinfo=dt.timezone.utc)
    for n in range(6):  # 6 queries of 10 credits at $3.00 list: $180 estimated
        line = priced_line("snowflake", "10", "credit", "30", "WH_ETL", start, metric="credits")
        store_try(ledger, "sales", f"q{n}", [line], start=start)
    # the warehouse billed 60 credits for $150 that day: a discount of 1/6
    add_billed(
        ledger, dt.date(2026, 11, 20), "WH_ETL", "150", provider="snowflake", quantity="60", unit="Credits"
    )
    reconcile(url)
    kept = ledger_rows(url, "SELECT source, resource, currency, factor, lines FROM cost_estimate_factors")
    assert sorted((r["resource"], r["factor"], r["lines"]) for r in kept) == [
        ("", "0.833333", 6),
        ("WH_ETL", "0.833333", 6),
    ]
    # reconciling again does not compound: the factor is learnt from the estimates before correction
    reconcile(url)
    assert ledger_rows(url, "SELECT factor FROM cost_estimate_factors WHERE resource = 'WH_ETL'") == [
        {"factor": "0.833333"}
    ]
