"""Money: Decimal amounts with a currency; sums never mix currencies; numbers parsed exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_cost_provider.pricing.money import (
    AMOUNT_QUANTUM,
    CurrencyMismatchError,
    Money,
    is_currency,
    quantize_amount,
    sum_money,
    to_decimal,
    totals_by_currency,
)

# ------------------------------------------------------------------ Money arithmetic


def test_adding_money_of_one_currency_adds_the_amounts():
    total = Money(Decimal("0.10"), "USD") + Money(Decimal("0.20"), "USD")
    assert total == Money(Decimal("0.30"), "USD")
    assert isinstance(total, Money)
    assert total.amount == Decimal("0.3")  # exact, unlike 0.1 + 0.2 in float
    assert total.currency == "USD"


def test_adding_different_currencies_raises_naming_both():
    with pytest.raises(CurrencyMismatchError) as excinfo:
        Money(Decimal(1), "USD") + Money(Decimal(1), "EUR")
    message = str(excinfo.value)
    assert "USD" in message
    assert "EUR" in message
    assert isinstance(excinfo.value, ValueError)


def test_adding_a_plain_tuple_is_not_money_addition():
    # Money is a NamedTuple: its + must not fall back to tuple concatenation
    with pytest.raises(TypeError):
        Money(Decimal(1), "USD") + (Decimal(1), "USD")  # type: ignore[operator]


def test_sum_money_of_one_currency():
    items = [
        Money(Decimal("1.25"), "USD"),
        Money(Decimal("2.50"), "USD"),
        Money(Decimal("0.000000001"), "USD"),
    ]
    assert sum_money(items) == Money(Decimal("3.750000001"), "USD")


def test_sum_money_of_nothing_is_none():
    assert sum_money([]) is None
    assert sum_money(iter(())) is None


def test_sum_money_of_a_single_item_is_that_item():
    assert sum_money([Money(Decimal("4.2"), "EUR")]) == Money(Decimal("4.2"), "EUR")


def test_sum_money_of_mixed_currencies_raises():
    items = [Money(Decimal(1), "USD"), Money(Decimal(2), "USD"), Money(Decimal(3), "EUR")]
    with pytest.raises(CurrencyMismatchError, match="EUR"):
        sum_money(items)


def test_totals_by_currency_keeps_currencies_apart():
    items = [
        Money(Decimal("1.10"), "USD"),
        Money(Decimal("2.00"), "EUR"),
        Money(Decimal("0.90"), "USD"),
        Money(Decimal("0.5"), "GBP"),
        Money(Decimal(3), "EUR"),
    ]
    totals = totals_by_currency(items)
    assert totals == {"EUR": Decimal("5.00"), "GBP": Decimal("0.5"), "USD": Decimal("2.00")}
    assert list(totals) == ["EUR", "GBP", "USD"]  # sorted, for stable reports


def test_totals_by_currency_of_nothing_is_empty():
    assert totals_by_currency([]) == {}


# ------------------------------------------------------------------ parsing numbers


def test_to_decimal_of_a_string_is_exact():
    assert to_decimal("0.1") == Decimal("0.1")
    assert str(to_decimal("6.250")) == "6.250"  # trailing zeros kept: the string is taken as written
    assert to_decimal(" 2.5 ") == Decimal("2.5")


def test_to_decimal_of_a_float_uses_its_shortest_repr():
    assert to_decimal(0.1) == Decimal("0.1")
    # not the binary expansion 0.1000000000000000055511...
    assert to_decimal(0.1) != Decimal(0.1)  # noqa: RUF032
    assert to_decimal(6.25) == Decimal("6.25")
    assert to_decimal(1e-7) == Decimal("1E-7")


def test_to_decimal_of_int_and_decimal():
    assert to_decimal(3) == Decimal(3)
    assert to_decimal(10**30) == Decimal(10**30)
    value = Decimal("1.2300")
    assert to_decimal(value) is value


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        "abc",
        "",
        "  ",
        "1,5",
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "sNaN",
        "Infinity",
        "-inf",
        Decimal("NaN"),
        Decimal("Infinity"),
        None,
        [1],
        {"amount": 1},
    ],
)
def test_to_decimal_rejects_non_numbers(value):
    with pytest.raises(ValueError, match="not a"):
        to_decimal(value)


# ------------------------------------------------------------------ rounding and currencies


def test_amount_quantum_is_one_nano_unit():
    assert AMOUNT_QUANTUM == Decimal("0.000000001")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.0000000005", "0.000000000"),  # half to even: down to 0
        ("0.0000000015", "0.000000002"),  # half to even: up to 2
        ("0.0000000025", "0.000000002"),  # half to even: down to 2 (HALF_UP would give 3)
        ("0.0000000035", "0.000000004"),
        ("1.2345678905", "1.234567890"),
        ("1.2345678915", "1.234567892"),
        ("-0.0000000025", "-0.000000002"),
        ("0.00000000250000001", "0.000000003"),  # just above half: up
        ("0.00000000249999999", "0.000000002"),  # just below half: down
        ("12.5", "12.500000000"),
        ("7", "7.000000000"),
    ],
)
def test_quantize_amount_rounds_half_even_to_nine_places(amount, expected):
    result = quantize_amount(Decimal(amount))
    assert result == Decimal(expected)
    assert format(result, "f") == expected
    assert result.as_tuple().exponent == -9


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "GBP"])
def test_is_currency_accepts_iso_codes(code):
    assert is_currency(code)


@pytest.mark.parametrize("code", ["usd", "Usd", "US", "USDT", "", " USD", "USD ", "U$D", None, 840])
def test_is_currency_rejects_other_values(code):
    assert not is_currency(code)


def test_is_currency_rejects_a_trailing_newline():
    assert not is_currency("USD\n")
