"""The `costProvider_cost` run facet, following OpenLineage's custom-facet rules."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import attr
from openlineage.client.facet_v2 import RunFacet

from airflow_cost_provider.result import CostResult

COST_FACET_KEY = "costProvider_cost"
SCHEMA_FILE = "CostProviderCostRunFacet.json"


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

    @staticmethod
    def _get_schema() -> str:
        return f"{COST_FACET_SCHEMA_ID}#/$defs/CostProviderCostRunFacet"


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _optional(**fields: str | None) -> dict[str, str]:
    return {key: value for key, value in fields.items() if value is not None}


def build_cost_facet(result: CostResult) -> CostProviderCostRunFacet:
    lines = [
        {
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
            ),
        }
        for line in result.lines
    ]
    unpriced = [
        {
            "source": item.usage.source,
            "metric": item.usage.metric,
            "quantity": _number(item.usage.quantity),
            "unit": item.usage.unit,
            "reason": item.reason,
            **_optional(externalId=item.usage.external_id, resource=item.usage.resource),
        }
        for item in result.unpriced
    ]
    totals = [{"amount": _number(amount), "currency": currency} for currency, amount in result.totals.items()]
    return CostProviderCostRunFacet(status=result.status, totals=totals, lines=lines, unpriced=unpriced)
