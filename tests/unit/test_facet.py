"""The costProvider_cost facet against its shipped JSON schema and the OpenLineage spec."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from jsonschema import ValidationError
from openlineage.client.serde import Serde

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.openlineage.facets import COST_FACET_KEY, build_cost_facet, schema_document
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult
from tests.support.openlineage import validate_event

T0 = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)


def sample_result(currencies=("USD",)):
    lines = tuple(
        CostLine(
            Usage("bigquery", "bytes_billed", Decimal(10**12), "byte", external_id="job_1", resource="proj"),
            Decimal("5.684341886"),
            currency,
            "list_price",
            Price(
                "bigquery",
                "bytes_billed",
                "TiB",
                Decimal("6.25"),
                currency,
                "2026.11.0",
                match=(("pricing_model", "on_demand"),),
            ),
        )
        for currency in currencies
    )
    unpriced = (Unpriced(Usage("postgres", "queries", Decimal(3), "query"), "no price for postgres/queries"),)
    return CostResult(TaskTry("d", "t", "r", 1, -1, None), "cap", "success", T0, T0, "h", lines, unpriced)


def event_with(facet: dict) -> dict:
    return {
        "eventType": "COMPLETE",
        "eventTime": T0.isoformat(),
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {COST_FACET_KEY: facet}},
        "job": {"namespace": "default", "name": "d.t"},
        "inputs": [],
        "outputs": [],
    }


def test_facet_follows_the_custom_facet_naming_and_schema_url():
    facet = Serde.to_dict(build_cost_facet(sample_result()))
    schema = schema_document()
    assert facet["_schemaURL"] == schema["$id"] + "#/$defs/CostProviderCostRunFacet"
    assert "/1-0-0/" in schema["$id"]
    assert facet["lines"][0] == {
        "source": "bigquery",
        "metric": "bytes_billed",
        "quantity": 10**12,
        "unit": "byte",
        "amount": 5.684341886,
        "currency": "USD",
        "method": "list_price",
        "status": "estimated",
        "externalId": "job_1",
        "resource": "proj",
        "priceRef": "2026.11.0:bigquery/bytes_billed[pricing_model=on_demand]",
    }
    assert facet["status"] == "partial"
    assert facet["unpriced"] == [
        {
            "source": "postgres",
            "metric": "queries",
            "quantity": 3,
            "unit": "query",
            "reason": "no price for postgres/queries",
        }
    ]
    validate_event(event_with(facet))


def test_totals_keep_currencies_apart():
    facet = Serde.to_dict(build_cost_facet(sample_result(("USD", "EUR"))))
    assert facet["totals"] == [
        {"amount": 5.684341886, "currency": "EUR"},
        {"amount": 5.684341886, "currency": "USD"},
    ]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda f: f.pop("status"),
        lambda f: f.update(status="guessed"),
        lambda f: f["lines"][0].pop("currency"),
        lambda f: f["lines"][0].update(method="vibes"),
        lambda f: f["lines"][0].update(sqlText="select secret"),
        lambda f: f["unpriced"][0].pop("reason"),
        lambda f: f["totals"].append({"amount": 1, "currency": "dollars"}),
        lambda f: f.pop("_producer"),
    ],
)
def test_schema_rejects_malformed_facets(breakage):
    facet = Serde.to_dict(build_cost_facet(sample_result()))
    broken = copy.deepcopy(facet)
    breakage(broken)
    with pytest.raises(ValidationError):
        validate_event(event_with(broken))
