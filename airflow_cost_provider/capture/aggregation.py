"""Bounded capture: past `[cost_provider] max_lines_per_task` usage records in one task try, each further
usage is priced as it arrives and added to one aggregate per source, metric, unit, resource and price
(or, unpriced, per reason). A task that runs 100,000 statements keeps a bounded number of lines, in
memory while it runs and in the ledger, each aggregate with the count of usages it stands for.

An aggregate's amount is the sum of what each of its usages costs on its own (each rounded to the
nano-unit as a line of its own would be), so aggregating never changes a total.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from airflow_cost_provider.pricing.model import CostLine, Unpriced, Usage

# The attribute of an aggregated usage that says how many usages it stands for.
AGGREGATED_ATTRIBUTE = "aggregated_usages"
# ... and the ids of the first of them, at most MAX_EXTERNAL_IDS (the facet's externalIds).
EXTERNAL_IDS_ATTRIBUTE = "first_external_ids"
MAX_EXTERNAL_IDS = 10

Priced = CostLine | Unpriced
Pricer = Callable[[Usage], Priced]
AggregateKey = tuple[Any, ...]


def usage_count(usage: Usage) -> int:
    """How many usages this record stands for: 1, or an aggregate's count."""
    count = usage.attributes.get(AGGREGATED_ATTRIBUTE)
    return count if isinstance(count, int) and count > 1 else 1


def sample_external_ids(usage: Usage) -> list[str]:
    """The ids a record carries: its own, or the first ids of an aggregate."""
    if usage.external_id is not None:
        return [usage.external_id]
    ids = usage.attributes.get(EXTERNAL_IDS_ATTRIBUTE)
    return [str(item) for item in ids] if isinstance(ids, list) else []


def aggregate_key(priced: Priced) -> AggregateKey:
    """Usages that cost the same per unit and are shown the same way share an aggregate."""
    usage = priced.usage
    if isinstance(priced, CostLine):
        return (
            "line",
            usage.source,
            usage.metric,
            usage.unit,
            usage.resource,
            priced.currency,
            priced.method,
            priced.status,
            priced.price,
        )
    return ("unpriced", usage.source, usage.metric, usage.unit, usage.resource, priced.reason)


@dataclass
class Aggregate:
    """The sum of several priced (or unpriced) usages of one key."""

    first: Priced
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    count: int = 0
    external_ids: list[str] = field(default_factory=list)
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    # the attributes every usage of the aggregate has with the same value (the ones choosing the price)
    shared_attributes: dict[str, Any] = field(default_factory=dict)

    def add(self, priced: Priced) -> None:
        usage = priced.usage
        if self.count == 0:
            self.shared_attributes = dict(usage.attributes)
        else:
            for key, value in list(self.shared_attributes.items()):
                if key not in usage.attributes or usage.attributes[key] != value:
                    del self.shared_attributes[key]
        self.count += usage_count(usage)
        self.quantity += usage.quantity
        if isinstance(priced, CostLine):
            self.amount += priced.amount
        for external_id in sample_external_ids(usage):
            if len(self.external_ids) >= MAX_EXTERNAL_IDS:
                break
            if external_id not in self.external_ids:
                self.external_ids.append(external_id)
        if usage.start_time is not None:
            self.start_time = min(self.start_time or usage.start_time, usage.start_time)
        if usage.end_time is not None:
            self.end_time = max(self.end_time or usage.end_time, usage.end_time)

    def usage(self) -> Usage:
        first = self.first.usage
        if self.count == usage_count(first):
            return first  # one usage: itself, with its own id
        attributes = {
            key: value
            for key, value in self.shared_attributes.items()
            if key not in (AGGREGATED_ATTRIBUTE, EXTERNAL_IDS_ATTRIBUTE)
        }
        attributes[AGGREGATED_ATTRIBUTE] = self.count
        if self.external_ids:
            attributes[EXTERNAL_IDS_ATTRIBUTE] = list(self.external_ids)
        return replace(
            first,
            quantity=self.quantity,
            external_id=None,
            start_time=self.start_time,
            end_time=self.end_time,
            attributes=attributes,
        )

    def result(self) -> Priced:
        usage = self.usage()
        if usage is self.first.usage:
            return self.first
        if isinstance(self.first, CostLine):
            return replace(self.first, usage=usage, amount=self.amount)
        return Unpriced(usage, self.first.reason)


@dataclass
class UsageAggregates:
    """The aggregates of one task try, in the order their first usage came."""

    by_key: dict[AggregateKey, Aggregate] = field(default_factory=dict)

    def add(self, priced: Priced) -> None:
        key = aggregate_key(priced)
        aggregate = self.by_key.get(key)
        if aggregate is None:
            aggregate = self.by_key[key] = Aggregate(first=priced)
        aggregate.add(priced)

    def __len__(self) -> int:
        return len(self.by_key)

    def results(self) -> tuple[list[CostLine], list[Unpriced]]:
        lines: list[CostLine] = []
        unpriced: list[Unpriced] = []
        for aggregate in self.by_key.values():
            result = aggregate.result()
            if isinstance(result, CostLine):
                lines.append(result)
            else:
                unpriced.append(result)
        return lines, unpriced

    def usages(self) -> list[Usage]:
        return [aggregate.usage() for aggregate in self.by_key.values()]

    def sources(self) -> set[str]:
        return {aggregate.first.usage.source for aggregate in self.by_key.values()}
