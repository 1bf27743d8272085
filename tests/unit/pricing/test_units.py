"""Units: exact conversion within a dimension, clear errors across dimensions or for unknown names."""

from __future__ import annotations

import random
import subprocess
import sys
from decimal import Decimal

import pytest

from airflow_cost_provider.pricing.units import (
    IncompatibleUnitsError,
    UnknownUnitError,
    convert,
    get_unit,
    known_units,
)


@pytest.mark.parametrize(
    ("quantity", "from_unit", "to_unit", "expected"),
    [
        # data volume: binary and decimal prefixes are different units
        ("1", "TiB", "byte", "1099511627776"),
        ("1", "GiB", "byte", "1073741824"),
        ("1", "MiB", "KiB", "1024"),
        ("1", "TB", "byte", "1000000000000"),
        ("1", "TB", "GB", "1000"),
        ("1099511627776", "byte", "TiB", "1"),
        ("549755813888", "byte", "TiB", "0.5"),
        ("1", "TiB", "TB", "1.099511627776"),
        # resource time
        ("3600000", "slot-ms", "slot-hour", "1"),
        ("1", "slot-hour", "slot-ms", "3600000"),
        ("90", "DPU-second", "DPU-hour", "0.025"),
        ("1", "vCPU-minute", "vCPU-second", "60"),
        ("3600000", "milli-DCU-second", "DCU-hour", "1"),
        ("1", "DCU-second", "milli-DCU-second", "1000"),
        ("1800000", "milli-DCU-second", "DCU-hour", "0.5"),
        # memory / storage over time
        ("1", "GiB-hour", "GiB-second", "3600"),
        ("1", "GiB-month", "GiB-hour", "730"),
        ("1", "GiB-month", "GiB-second", "2628000"),
        ("365", "GiB-hour", "GiB-month", "0.5"),
        # plain time
        ("7200000", "ms", "hour", "2"),
        ("1.5", "hour", "minute", "90"),
    ],
)
def test_exact_conversions(quantity, from_unit, to_unit, expected):
    assert convert(Decimal(quantity), from_unit, to_unit) == Decimal(expected)


def test_same_unit_returns_the_quantity_unchanged():
    result = convert(Decimal("12.3400"), "TiB", "TiB")
    assert str(result) == "12.3400"


def test_units_of_one_dimension_share_it_and_dimensions_stay_apart():
    assert get_unit("byte").dimension == get_unit("TiB").dimension
    assert get_unit("slot-ms").dimension == get_unit("slot-hour").dimension
    assert get_unit("milli-DCU-second").dimension == get_unit("DCU-hour").dimension
    # counted things and platform currencies never convert into each other
    for a, b in [("query", "request"), ("credit", "DBU"), ("slot-hour", "DPU-hour"), ("GiB-hour", "hour")]:
        with pytest.raises(IncompatibleUnitsError):
            convert(Decimal(1), a, b)


def test_known_units_is_sorted_and_contains_the_priced_units():
    units = known_units()
    assert units == sorted(units)
    for name in ("byte", "TiB", "TB", "slot-ms", "slot-hour", "GiB-month", "milli-DCU-second", "DCU-hour"):
        assert name in units


def test_incompatible_units_error_names_both_units():
    with pytest.raises(IncompatibleUnitsError) as excinfo:
        convert(Decimal(5), "byte", "hour")
    message = str(excinfo.value)
    assert "'byte'" in message
    assert "'hour'" in message
    # it is a ValueError so callers catching bad input in general still catch it
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(("from_unit", "to_unit"), [("furlong", "byte"), ("byte", "furlong")])
def test_unknown_unit_error_names_the_unknown_unit(from_unit, to_unit):
    with pytest.raises(UnknownUnitError) as excinfo:
        convert(Decimal(1), from_unit, to_unit)
    assert "'furlong'" in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_get_unit_is_case_sensitive():
    # "tib" is not "TiB" and "Byte" is not "byte": a typo must not silently pick a unit
    for name in ("tib", "Byte", "HOUR", "slot-Hour"):
        with pytest.raises(UnknownUnitError, match=repr(name)):
            get_unit(name)


def _random_quantity(rng: random.Random) -> Decimal:
    """A non-negative Decimal with up to 12 significant digits and up to 6 decimal places."""
    return Decimal(rng.randrange(0, 10**12)).scaleb(-rng.randrange(0, 7))


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ("byte", "TiB"),
        ("byte", "GB"),
        ("KiB", "GiB"),
        ("slot-ms", "slot-hour"),
        ("GiB-second", "GiB-month"),
        ("milli-DCU-second", "DCU-hour"),
        ("ms", "hour"),
    ],
)
def test_large_to_small_and_back_is_exact(small, large):
    rng = random.Random(f"{small}->{large}")
    for _ in range(200):
        quantity = _random_quantity(rng)
        there = convert(quantity, large, small)
        assert convert(there, small, large) == quantity, (quantity, large, small)


@pytest.mark.parametrize(("small", "large"), [("byte", "GB"), ("ms", "second"), ("slot-ms", "slot-second")])
def test_power_of_ten_ratios_round_trip_both_ways(small, large):
    rng = random.Random(f"{small}<->{large}")
    for _ in range(200):
        quantity = _random_quantity(rng)
        assert convert(convert(quantity, small, large), large, small) == quantity
        assert convert(convert(quantity, large, small), small, large) == quantity


def test_byte_to_tib_is_exact_even_beyond_28_digits():
    # 3 / 2**40 = 3 * 5**40 / 10**40 = 2.7284841053187847137451171875E-12 (29 significant digits)
    assert convert(Decimal(3), "byte", "TiB") == Decimal("2.7284841053187847137451171875E-12")


def test_pricing_package_imports_no_airflow():
    code = (
        "import sys\n"
        "import airflow_cost_provider.pricing\n"
        "import airflow_cost_provider.pricing.price_book, airflow_cost_provider.pricing.estimate\n"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
