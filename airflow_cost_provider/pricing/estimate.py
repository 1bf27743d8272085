"""usage x price -> cost line. Pure: no I/O, no Airflow."""

from __future__ import annotations

from collections.abc import Iterable

from airflow_cost_provider.pricing.model import CostLine, Method, Unpriced, Usage
from airflow_cost_provider.pricing.money import EXACT, quantize_amount
from airflow_cost_provider.pricing.price_book import PriceBook
from airflow_cost_provider.pricing.units import IncompatibleUnitsError, UnknownUnitError, conversion

# Usage whose own record says how it was computed (a platform that reports money or credits itself).
METHOD_ATTRIBUTE = "cost_method"
# Why a usage has no price, when its capture knows better than "no price in the book".
UNPRICED_HINT_ATTRIBUTE = "why_unpriced"


def estimate(usage: Usage, book: PriceBook, method: Method = "list_price") -> CostLine | Unpriced:
    price = book.find(usage)
    if price is None:
        hint = usage.attributes.get(UNPRICED_HINT_ATTRIBUTE)
        reason = f"no price for {usage.source}/{usage.metric}{_selector(usage, book)}"
        return Unpriced(usage, f"{reason}: {hint}" if hint else reason)
    try:
        multiplier, divisor = conversion(usage.unit, price.unit)
    except (UnknownUnitError, IncompatibleUnitsError) as err:
        return Unpriced(usage, f"price {price.ref} does not fit the usage: {err}")
    # one division, last: quantity x price is exact, so only the final quantize rounds
    amount = quantize_amount(
        EXACT.divide(EXACT.multiply(EXACT.multiply(usage.quantity, multiplier), price.amount), divisor)
    )
    return CostLine(
        usage=usage,
        amount=amount,
        currency=price.currency,
        method=usage.attributes.get(METHOD_ATTRIBUTE, method),
        price=price,
    )


def estimate_all(
    usages: Iterable[Usage], book: PriceBook, method: Method = "list_price"
) -> tuple[list[CostLine], list[Unpriced]]:
    lines: list[CostLine] = []
    unpriced: list[Unpriced] = []
    for usage in usages:
        result = estimate(usage, book, method)
        (lines if isinstance(result, CostLine) else unpriced).append(result)  # type: ignore[arg-type]
    return lines, unpriced


def _selector(usage: Usage, book: PriceBook) -> str:
    """Name the attributes the book's prices for this metric select on, to make the gap clear."""
    keys = sorted({key for price in book.candidates(usage.source, usage.metric) for key, _ in price.match})
    if not keys:
        return ""
    shown = ", ".join(f"{key}={usage.attributes.get(key)!r}" for key in keys)
    return f" with {shown}"
