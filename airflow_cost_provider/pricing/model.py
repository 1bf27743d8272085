"""The records pricing works on: usage in native units, prices, and the cost lines they make."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Method = Literal["metered", "list_price", "runtime_rate", "allocated"]
LineStatus = Literal["estimated", "reconciled"]


@dataclass(frozen=True)
class Usage:
    """Something a task consumed, in the unit the platform reports it in."""

    source: str
    metric: str
    quantity: Decimal
    unit: str
    resource: str | None = None
    external_id: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    # Attributes select the price (e.g. {"edition": "enterprise"}) and keep context; never secrets.
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Price:
    source: str
    metric: str
    unit: str
    amount: Decimal
    currency: str
    book_version: str
    effective_date: dt.date | None = None
    source_url: str | None = None
    match: tuple[tuple[str, str], ...] = ()
    origin: str = ""  # where it was defined: "<file>#prices[3]" or "[cost_provider] option"

    @property
    def ref(self) -> str:
        """A short, stable reference to this price, kept on every cost line."""
        selector = ",".join(f"{key}={value}" for key, value in self.match)
        base = f"{self.book_version}:{self.source}/{self.metric}"
        return f"{base}[{selector}]" if selector else base


@dataclass(frozen=True)
class CostLine:
    usage: Usage
    amount: Decimal
    currency: str
    method: Method
    price: Price | None
    status: LineStatus = "estimated"
    # set when the estimate was corrected by its source's reconciled bill (reconcile.corrections)
    correction_factor: Decimal | None = None
    uncorrected_amount: Decimal | None = None


@dataclass(frozen=True)
class Unpriced:
    usage: Usage
    reason: str
