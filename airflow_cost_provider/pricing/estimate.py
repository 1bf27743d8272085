"""usage x price -> cost line. Pure: no I/O, no Airflow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from airflow_cost_provider.pricing.model import CostLine, Method, Price, Unpriced, Usage
from airflow_cost_provider.pricing.money import EXACT, is_currency, quantize_amount, to_decimal
from airflow_cost_provider.pricing.price_book import PriceBook
from airflow_cost_provider.pricing.units import IncompatibleUnitsError, UnknownUnitError, conversion

# Usage whose own record says how it was computed (a platform that reports money or credits itself).
METHOD_ATTRIBUTE = "cost_method"
# Why a usage has no price, when its capture knows better than "no price in the book".
UNPRICED_HINT_ATTRIBUTE = "why_unpriced"
# A cost another system computed for this usage (OpenCost's allocation of a pod): its amount (decimal
# text), currency and the name of the source, kept as they are instead of a price from the book.
REPORTED_COST_ATTRIBUTE = "reported_cost"
REPORTED_CURRENCY_ATTRIBUTE = "reported_currency"
REPORTED_BY_ATTRIBUTE = "reported_by"
REPORTED_URL_ATTRIBUTE = "reported_by_url"
_RATE_QUANTUM = Decimal("1e-12")


def estimate(usage: Usage, book: PriceBook, method: Method = "list_price") -> CostLine | Unpriced:
    if REPORTED_COST_ATTRIBUTE in usage.attributes:
        return _reported(usage, method)
    price = book.find(usage)
    if price is None:
        hint = usage.attributes.get(UNPRICED_HINT_ATTRIBUTE)
        reason = f"no price for {usage.source}/{usage.metric}{_selector(usage, book)}"
        return Unpriced(usage, f"{reason}: {hint}" if hint else reason)
    try:
        multiplier, divisor = conversion(usage.unit, price.unit)
    except (UnknownUnitError, IncompatibleUnitsError) as err:
        return Unpriced(usage, f"price {price.ref} does not fit the usage: {err}")
    return CostLine(
        usage=usage,
        amount=_amount(usage.quantity, multiplier, divisor, price),
        currency=price.currency,
        method=usage.attributes.get(METHOD_ATTRIBUTE, method),
        price=price,
    )


def _reported(usage: Usage, method: Method) -> CostLine | Unpriced:
    """The cost another system reported, with a price record naming it and its effective rate."""
    attributes = usage.attributes
    by = str(attributes.get(REPORTED_BY_ATTRIBUTE) or "reported")
    try:
        amount = quantize_amount(to_decimal(attributes[REPORTED_COST_ATTRIBUTE]))
    except ValueError as error:
        return Unpriced(usage, f"{by} reported a cost that is not a number: {error}")
    currency = attributes.get(REPORTED_CURRENCY_ATTRIBUTE)
    if not is_currency(currency):
        return Unpriced(usage, f"{by} reported a cost in {currency!r}, not an ISO 4217 currency")
    rate = (
        EXACT.divide(amount, usage.quantity).quantize(_RATE_QUANTUM, context=EXACT)
        if usage.quantity
        else amount
    )
    url = attributes.get(REPORTED_URL_ATTRIBUTE)
    price = Price(
        source=usage.source,
        metric=usage.metric,
        unit=usage.unit,
        amount=rate,
        currency=str(currency),
        book_version=by,
        source_url=str(url) if url else None,
        origin=by,
    )
    return CostLine(
        usage=usage,
        amount=amount,
        currency=str(currency),
        method=attributes.get(METHOD_ATTRIBUTE, method),
        price=price,
    )


def _amount(quantity: Decimal, multiplier: Decimal, divisor: Decimal, price: Price) -> Decimal:
    # one division, last: quantity x price is exact, so only the final quantize rounds
    return quantize_amount(
        EXACT.divide(EXACT.multiply(EXACT.multiply(quantity, multiplier), price.amount), divisor)
    )


class Estimator:
    """estimate() for a stream of usages of a few kinds (a task's loop of statements): each kind's
    price is looked up once. A kind is everything the look-up reads: source, metric, unit, the usage's
    day, the attributes the book's prices for its metric select on, its method and unpriced hint."""

    MAX_KINDS = 1000  # a stream of ever new kinds only costs look-ups again

    def __init__(self, book: PriceBook, method: Method = "list_price") -> None:
        self.book, self.method = book, method
        self._selectors: dict[tuple[str, str], tuple[str, ...]] = {}
        self._kinds: dict[tuple, tuple[CostLine | Unpriced, Any, Any]] = {}

    def __call__(self, usage: Usage) -> CostLine | Unpriced:
        if REPORTED_COST_ATTRIBUTE in usage.attributes:  # its own amount: nothing to reuse
            return estimate(usage, self.book, self.method)
        try:
            kind = self._kind(usage)
            known = self._kinds.get(kind)
        except TypeError:  # an attribute value that cannot be a key
            return estimate(usage, self.book, self.method)
        if known is None:
            result = estimate(usage, self.book, self.method)
            if len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            factors = (
                conversion(usage.unit, result.price.unit) if isinstance(result, CostLine) else (None, None)
            )
            self._kinds[kind] = (result, *factors)
            return result
        first, multiplier, divisor = known
        if isinstance(first, Unpriced):
            return Unpriced(usage, first.reason)
        return CostLine(
            usage=usage,
            amount=_amount(usage.quantity, multiplier, divisor, first.price),
            currency=first.currency,
            method=first.method,
            price=first.price,
        )

    def _kind(self, usage: Usage) -> tuple:
        selector = self._selectors.get((usage.source, usage.metric))
        if selector is None:
            candidates = self.book.candidates(usage.source, usage.metric)
            selector = tuple(sorted({key for price in candidates for key, _ in price.match}))
            self._selectors[(usage.source, usage.metric)] = selector
        attributes = usage.attributes
        return (
            usage.source,
            usage.metric,
            usage.unit,
            (usage.start_time or usage.end_time or dt.datetime.now(dt.timezone.utc)).date(),
            tuple((key in attributes, repr(attributes.get(key))) for key in selector),
            attributes.get(METHOD_ATTRIBUTE),
            attributes.get(UNPRICED_HINT_ATTRIBUTE),
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
