"""The `costProvider_cost` run facet, following OpenLineage's custom-facet rules."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import attr
from openlineage.client.facet_v2 import RunFacet

from airflow_cost_provider.capture.aggregation import MAX_EXTERNAL_IDS, sample_external_ids, usage_count
from airflow_cost_provider.pricing.model import CostLine, Unpriced
from airflow_cost_provider.result import CostResult
from airflow_cost_provider.version import __version__

COST_FACET_KEY = "costProvider_cost"
SCHEMA_FILE = "CostProviderCostRunFacet.json"
# Earlier versions stay shipped: an event keeps the `_schemaURL` it was written with.
PREVIOUS_SCHEMA_FILES = (
    "CostProviderCostRunFacet-1-0-0.json",
    "CostProviderCostRunFacet-1-1-0.json",
    "CostProviderCostRunFacet-1-2-0.json",
)
COST_FACET_PRODUCER = f"https://github.com/airflow-cost-provider/airflow-cost-provider/tree/{__version__}"

# float repr switches to exponent form from here up; such values have no fraction a float could hold.
_FLOAT_EXPONENT_FROM = Decimal("1e16")


@cache
def schema_document(name: str = SCHEMA_FILE) -> dict[str, Any]:
    text = resources.files("airflow_cost_provider.openlineage").joinpath("schemas", name).read_text("utf-8")
    return json.loads(text)


COST_FACET_SCHEMA_ID = schema_document()["$id"]


@attr.define
class CostProviderCostRunFacet(RunFacet):
    """What the task run cost; amounts are JSON numbers, the exact Decimals stay in the ledger."""

    status: str
    totals: list[dict[str, Any]] = attr.field(factory=list)
    lines: list[dict[str, Any]] = attr.field(factory=list)
    unpriced: list[dict[str, Any]] = attr.field(factory=list)
    period: dict[str, str] | None = None

    def __attrs_post_init__(self) -> None:
        # set before the base class would fill in the client's global default producer
        if not self._producer:
            self._producer = COST_FACET_PRODUCER
        super().__attrs_post_init__()

    @staticmethod
    def _get_schema() -> str:
        return f"{COST_FACET_SCHEMA_ID}#/$defs/CostProviderCostRunFacet"


def _number(value: Decimal) -> int | float:
    """A JSON number, without exponent wherever the encoder permits.

    OpenLineage writes events with json.dumps, which prints every float (subclasses too) with
    float.__repr__ and cannot write a Decimal: values below 1e-4 come out as e.g. 4.94e-07, exact.
    """
    if value == value.to_integral_value() or abs(value) >= _FLOAT_EXPONENT_FROM:
        return int(value.to_integral_value())
    return float(value)


def _optional(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _utc_text(moment: dt.datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)  # Airflow times are UTC
    return aware.astimezone(dt.timezone.utc).isoformat()


def _line_entry(line: CostLine) -> dict[str, Any]:
    # the unit price only states a fact when it is in the line's currency
    price = line.price if line.price is not None and line.price.currency == line.currency else None
    count = usage_count(line.usage)
    return {
        "source": line.usage.source,
        "metric": line.usage.metric,
        "quantity": _number(line.usage.quantity),
        "unit": line.usage.unit,
        "amount": _number(line.amount),
        "currency": line.currency,
        "method": line.method,
        "status": line.status,
        **_optional(
            externalId=line.usage.external_id,
            resource=line.usage.resource,
            priceRef=line.price.ref if line.price else None,
            unitPrice=_number(price.amount) if price else None,
            priceUnit=price.unit if price else None,
            # a line past max_lines_per_task: the usages it sums, and the first of their ids
            count=count if count > 1 else None,
            externalIds=(sample_external_ids(line.usage)[:MAX_EXTERNAL_IDS] or None) if count > 1 else None,
            correctionFactor=_number(line.correction_factor) if line.correction_factor is not None else None,
            uncorrectedAmount=_number(line.uncorrected_amount)
            if line.uncorrected_amount is not None
            else None,
        ),
    }


def _unpriced_cause(item: Unpriced) -> tuple[str, str, str, str | None, str]:
    usage = item.usage
    return (usage.source, usage.metric, usage.unit, usage.resource, item.reason)


def _unpriced_entry(members: Sequence[Unpriced]) -> dict[str, Any]:
    usage = members[0].usage
    entry = {
        "source": usage.source,
        "metric": usage.metric,
        "quantity": _number(sum((member.usage.quantity for member in members), Decimal(0))),
        "unit": usage.unit,
        "count": sum(usage_count(member.usage) for member in members),
        "reason": members[0].reason,
        **_optional(resource=usage.resource),
    }
    if entry["count"] == 1:
        return {**entry, **_optional(externalId=usage.external_id)}
    sample = list(dict.fromkeys(i for m in members for i in sample_external_ids(m.usage)))
    return {**entry, **_optional(externalIds=sample[:MAX_EXTERNAL_IDS] or None)}


def _unpriced_entries(unpriced: Sequence[Unpriced]) -> list[dict[str, Any]]:
    """One entry per cause (source, metric, unit, resource, reason), where its first usage was, with
    the count of usages it stands for: a task's facet grows with its causes, not its statements. The
    ledger keeps every usage and its id, up to max_lines_per_task."""
    by_cause: dict[tuple[str, str, str, str | None, str], list[Unpriced]] = {}
    for item in unpriced:
        by_cause.setdefault(_unpriced_cause(item), []).append(item)
    return [_unpriced_entry(members) for members in by_cause.values()]


def build_cost_facet(result: CostResult) -> CostProviderCostRunFacet:
    totals = [{"amount": _number(amount), "currency": currency} for currency, amount in result.totals.items()]
    return CostProviderCostRunFacet(
        status=result.status,
        period={"start": _utc_text(result.start_time), "end": _utc_text(result.end_time)},
        totals=totals,
        lines=[_line_entry(line) for line in result.lines],
        unpriced=_unpriced_entries(result.unpriced),
    )
