"""usage x price -> cost line: exact amounts, the method, and clear reasons for what cannot be priced."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from fractions import Fraction

import pytest

from airflow_cost_provider.pricing.estimate import (
    METHOD_ATTRIBUTE,
    UNPRICED_HINT_ATTRIBUTE,
    estimate,
    estimate_all,
)
from airflow_cost_provider.pricing.model import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.pricing.price_book import PriceBook, load_shipped, parse_price_book
from airflow_cost_provider.pricing.units import get_unit

TIB = 2**40
ON = dt.datetime(2026, 11, 15, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def shipped() -> PriceBook:
    return load_shipped()


def use(source: str, metric: str, quantity, unit: str, **attributes) -> Usage:
    return Usage(source, metric, Decimal(quantity), unit, start_time=ON, attributes=attributes)


def exact_nano(value: Fraction) -> Decimal:
    """Round an exact rational amount to 1e-9, half to even, without Decimal arithmetic."""
    scaled = value * 10**9
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    return Decimal(floor).scaleb(-9)


# ------------------------------------------------------------------ amounts


def test_bytes_are_priced_per_tib_exactly(shipped):
    line = estimate(use("bigquery", "bytes_billed", 2 * TIB, "byte", pricing_model="on_demand"), shipped)
    assert isinstance(line, CostLine)
    assert line.amount == Decimal("12.5")
    assert str(line.amount) == "12.500000000"
    assert line.currency == "USD"
    assert line.price is not None and line.price.amount == Decimal("6.25") and line.price.unit == "TiB"
    assert line.status == "estimated"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # 1 TB (decimal) scanned at $5.00 per TB
        (use("athena", "data_scanned", 10**12, "byte"), "5.000000000"),
        # 1 TiB is 1.099511627776 TB: $5.49755813888 -> 5.497558139
        (use("athena", "data_scanned", TIB, "byte"), "5.497558139"),
        # 3_600_000 slot-ms = 1 slot-hour at $0.06 (enterprise)
        (use("bigquery", "slot_time", 3_600_000, "slot-ms", edition="enterprise"), "0.060000000"),
        # 90 DPU-seconds = 0.025 DPU-hour at $0.44
        (use("glue", "dpu_time", 90, "DPU-second", execution_class="standard"), "0.011000000"),
        # 7_200_000 milli-DCU-seconds = 2 DCU-hours at $0.089 (premium)
        (
            use("dataproc_serverless", "dcu_time", 7_200_000, "milli-DCU-second", tier="premium"),
            "0.178000000",
        ),
        # 2_628_000 GiB-seconds = 1 GiB-month at $0.040
        (
            use("dataproc_serverless", "shuffle_storage", 2_628_000, "GiB-second", tier="standard"),
            "0.040000000",
        ),
        # credits are priced as they are
        (use("snowflake", "credits", "1.5", "credit", edition="enterprise"), "4.500000000"),
        # 1500 activity runs at $0.001
        (use("azure_data_factory", "activity_runs", 1500, "activity_run"), "1.500000000"),
    ],
)
def test_amounts_with_the_shipped_book(shipped, usage, expected):
    line = estimate(usage, shipped)
    assert isinstance(line, CostLine), line
    assert format(line.amount, "f") == expected


def test_amount_is_quantized_to_nine_places(shipped):
    # 1 slot-ms at $0.04/slot-hour = 0.04 / 3_600_000 = 0.0000000111... -> 0.000000011
    line = estimate(use("bigquery", "slot_time", 1, "slot-ms", edition="standard"), shipped)
    assert format(line.amount, "f") == "0.000000011"
    assert line.amount.as_tuple().exponent == -9
    # a whole amount keeps nine places too
    line = estimate(use("snowflake", "credits", 3, "credit", edition="standard"), shipped)
    assert str(line.amount) == "6.000000000"


def test_exact_half_nano_rounds_to_even():
    book = parse_price_book(
        'version: "r"\nprices:\n  - {source: s, metric: m, unit: GB, amount: "0.005", currency: USD}\n',
        "r.yaml",
    )
    # 1 byte at $0.005/GB = 0.000000000005 -> 0; 100 bytes = 0.0000000005 (a tie) -> 0; 300 -> 0.0000000015 -> 2e-9
    amounts = [estimate(use("s", "m", q, "byte"), book).amount for q in (1, 100, 300, 500)]
    assert amounts == [Decimal(0), Decimal(0), Decimal("2E-9"), Decimal("2E-9")]


@pytest.mark.parametrize(
    ("source", "metric", "unit", "attributes"),
    [
        ("bigquery", "bytes_billed", "byte", {"pricing_model": "on_demand"}),
        ("athena", "data_scanned", "byte", {}),
        ("bigquery", "slot_time", "slot-ms", {"edition": "enterprise_plus"}),
        ("glue", "dpu_time", "DPU-second", {"execution_class": "flex"}),
        ("dataproc_serverless", "shuffle_storage", "GiB-second", {"tier": "premium"}),
        ("dataproc_serverless", "dcu_time", "milli-DCU-second", {"tier": "standard"}),
    ],
)
def test_random_quantities_match_exact_rational_arithmetic(shipped, source, metric, unit, attributes):
    """Each amount equals quantity x unit ratio x price computed with Fractions, rounded half-even."""
    rng = random.Random(f"{source}/{metric}")
    price = shipped.find(use(source, metric, 0, unit, **attributes))
    assert price is not None
    ratio = Fraction(get_unit(unit).factor) / Fraction(get_unit(price.unit).factor)
    for _ in range(200):
        quantity = Decimal(rng.randrange(0, 10 ** rng.randrange(1, 16)))
        line = estimate(use(source, metric, quantity, unit, **attributes), shipped)
        assert line.amount == exact_nano(Fraction(quantity) * ratio * Fraction(price.amount)), quantity


def test_an_exact_tie_after_a_non_terminating_conversion_rounds_to_even(shipped):
    usage = use("compute_engine", "instance_time", 11, "instance-second", machine_type="n1-standard-4")
    assert estimate(usage, shipped).amount == Decimal("0.000580552")


def test_an_exact_tie_rounds_to_even_upwards_too(shipped):
    usage = use("postgres", "instance_time", 7, "instance-ms", instance_type="db.r6g.large")
    assert estimate(usage, shipped).amount == Decimal("4.38E-7")


# ------------------------------------------------------------------ method


def test_method_defaults_to_list_price(shipped):
    line = estimate(use("athena", "data_scanned", 1, "byte"), shipped)
    assert line.method == "list_price"


def test_method_argument_is_used(shipped):
    line = estimate(use("athena", "data_scanned", 1, "byte"), shipped, method="runtime_rate")
    assert line.method == "runtime_rate"


def test_method_follows_the_usage_attribute(shipped):
    assert METHOD_ATTRIBUTE == "cost_method"
    usage = use("snowflake", "credits", 2, "credit", edition="standard", cost_method="metered")
    assert estimate(usage, shipped).method == "metered"
    assert estimate(usage, shipped, method="allocated").method == "metered"


# ------------------------------------------------------------------ what cannot be priced


def test_missing_price_names_source_metric_and_match_keys_with_usage_values(shipped):
    usage = use("bigquery", "slot_time", 3_600_000, "slot-ms", edition="premium_plus")
    result = estimate(usage, shipped)
    assert isinstance(result, Unpriced)
    assert result.usage is usage
    assert result.reason == "no price for bigquery/slot_time with edition='premium_plus'"


def test_missing_price_shows_missing_attributes_as_none_and_every_key_sorted(shipped):
    result = estimate(use("emr", "instance_time", 1, "instance-hour", instance_type="x9.huge"), shipped)
    assert isinstance(result, Unpriced)
    assert result.reason == "no price for emr/instance_time with component=None, instance_type='x9.huge'"


def test_missing_price_of_an_unknown_source_has_no_selector(shipped):
    result = estimate(use("clickhouse", "cpu_time", 1, "vCPU-hour", edition="x"), shipped)
    assert isinstance(result, Unpriced)
    assert result.reason == "no price for clickhouse/cpu_time"


def test_unpriced_reason_includes_the_hint(shipped):
    assert UNPRICED_HINT_ATTRIBUTE == "why_unpriced"
    hint = "reservation slots are billed by commitment"
    result = estimate(
        use("bigquery", "slot_time", 1, "slot-ms", edition="reservation", why_unpriced=hint), shipped
    )
    assert isinstance(result, Unpriced)
    assert result.reason == f"no price for bigquery/slot_time with edition='reservation': {hint}"


def test_empty_hint_is_not_appended(shipped):
    result = estimate(use("clickhouse", "cpu_time", 1, "vCPU-hour", why_unpriced=""), shipped)
    assert result.reason == "no price for clickhouse/cpu_time"


@pytest.mark.parametrize(
    ("unit", "shown"), [("hour", "'hour'"), ("slot-ms", "'slot-ms'"), ("furlong", "'furlong'")]
)
def test_price_unit_that_does_not_fit_the_usage_is_unpriced(shipped, unit, shown):
    usage = use("bigquery", "bytes_billed", 10**12, unit, pricing_model="on_demand")
    result = estimate(usage, shipped)  # never raises
    assert isinstance(result, Unpriced)
    assert not isinstance(result, CostLine) and not hasattr(result, "amount")  # never a zero amount
    assert result.reason.startswith(
        "price 2026.11.0:bigquery/bytes_billed[pricing_model=on_demand] does not fit"
    )
    assert shown in result.reason


def test_hint_does_not_hide_a_unit_mismatch(shipped):
    usage = use("athena", "data_scanned", 1, "hour", why_unpriced="irrelevant")
    result = estimate(usage, shipped)
    assert isinstance(result, Unpriced)
    assert "does not fit" in result.reason and "'hour'" in result.reason and "'TB'" in result.reason


def test_estimate_all_splits_lines_and_unpriced_in_order(shipped):
    usages = [
        use("athena", "data_scanned", 10**12, "byte"),
        use("clickhouse", "cpu_time", 1, "vCPU-hour"),
        use("snowflake", "credits", 1, "credit", edition="business_critical"),
        use("athena", "data_scanned", 1, "hour"),
        use("snowflake", "credits", 1, "credit", edition="enterprise", cost_method="metered"),
    ]
    lines, unpriced = estimate_all(usages, shipped, method="runtime_rate")
    assert [line.usage for line in lines] == [usages[0], usages[2], usages[4]]
    assert [line.amount for line in lines] == [Decimal(5), Decimal(4), Decimal(3)]
    assert [line.method for line in lines] == ["runtime_rate", "runtime_rate", "metered"]
    assert [item.usage for item in unpriced] == [usages[1], usages[3]]
    assert all(isinstance(item, Unpriced) for item in unpriced)


def test_estimate_all_of_nothing(shipped):
    assert estimate_all([], shipped) == ([], [])
    assert estimate_all(iter(()), shipped) == ([], [])


# ------------------------------------------------------------------ Price.ref


def test_price_ref_format():
    price = Price(
        "emr",
        "instance_time",
        "instance-hour",
        Decimal("0.048"),
        "USD",
        "2026.11.0",
        match=(("component", "emr"), ("instance_type", "m5.xlarge")),
    )
    assert price.ref == "2026.11.0:emr/instance_time[component=emr,instance_type=m5.xlarge]"
    single = Price(
        "bigquery",
        "bytes_billed",
        "TiB",
        Decimal("6.25"),
        "USD",
        "v1",
        match=(("pricing_model", "on_demand"),),
    )
    assert single.ref == "v1:bigquery/bytes_billed[pricing_model=on_demand]"
    bare = Price("athena", "data_scanned", "TB", Decimal(5), "USD", "v1")
    assert bare.ref == "v1:athena/data_scanned"


def test_cost_line_refers_to_the_price_it_used(shipped):
    usage = use("emr", "instance_time", 2, "instance-hour", instance_type="m5.xlarge", component="emr")
    line = estimate(usage, shipped)
    assert line.price.ref == "2026.11.0:emr/instance_time[component=emr,instance_type=m5.xlarge]"
    assert line.amount == Decimal("0.096")
