"""Pure pricing: Decimal money, units, the price book, and usage x price -> cost line.

Nothing here imports Airflow; it is usable (and tested) on its own.
"""

from airflow_cost_provider.pricing.estimate import estimate, estimate_all
from airflow_cost_provider.pricing.model import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.pricing.money import CurrencyMismatchError, Money, sum_money, totals_by_currency
from airflow_cost_provider.pricing.price_book import PriceBook, PriceBookError, load_price_book
from airflow_cost_provider.pricing.units import IncompatibleUnitsError, UnknownUnitError, convert

__all__ = [
    "CostLine",
    "CurrencyMismatchError",
    "IncompatibleUnitsError",
    "Money",
    "Price",
    "PriceBook",
    "PriceBookError",
    "UnknownUnitError",
    "Unpriced",
    "Usage",
    "convert",
    "estimate",
    "estimate_all",
    "load_price_book",
    "sum_money",
    "totals_by_currency",
]
