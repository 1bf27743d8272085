"""Money as Decimal with a currency; sums never mix currencies."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import NamedTuple

# Line amounts are kept to the nano-unit: far below any billed amount, and exact in an integer column.
AMOUNT_QUANTUM = Decimal("1e-9")
_CURRENCY = re.compile(r"[A-Z]{3}")


class CurrencyMismatchError(ValueError):
    """An attempt to add amounts of different currencies."""


class Money(NamedTuple):
    amount: Decimal
    currency: str

    def __add__(self, other: object) -> Money:  # type: ignore[override]
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot add {self.currency} and {other.currency} amounts")
        return Money(self.amount + other.amount, self.currency)


def is_currency(code: object) -> bool:
    return isinstance(code, str) and bool(_CURRENCY.fullmatch(code))


def to_decimal(value: object) -> Decimal:
    """Parse a number exactly; floats go through their shortest repr so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    elif isinstance(value, float):
        result = Decimal(repr(value))
    else:
        raise ValueError(f"not a number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


# Enough digits that unit conversion and pricing never round before the final quantize.
EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN, Emax=10**6, Emin=-(10**6))


def quantize_amount(amount: Decimal) -> Decimal:
    return amount.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_EVEN, context=EXACT)


def money_text(amount: Decimal) -> str:
    """1,012.40 or 0.000125: two decimals, more when the amount has them (to the nano-unit)."""
    amount = quantize_amount(amount)
    exponent = amount.normalize().as_tuple().exponent
    decimals = min(9, max(2, -exponent)) if isinstance(exponent, int) else 2
    return f"{amount:,.{decimals}f}"


def sum_money(items: Iterable[Money]) -> Money | None:
    """Sum amounts of one currency; None for no items. Raises CurrencyMismatchError on mixed input."""
    total: Money | None = None
    for item in items:
        total = item if total is None else total + item
    return total


def totals_by_currency(items: Iterable[Money]) -> dict[str, Decimal]:
    """One total per currency, for reporting several currencies side by side without mixing them."""
    totals: dict[str, Decimal] = {}
    for item in items:
        totals[item.currency] = totals.get(item.currency, Decimal(0)) + item.amount
    return dict(sorted(totals.items()))
