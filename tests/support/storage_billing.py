"""Helpers for the storage cost tests: what the sample model says, what the ledger holds, and the
validation of `costProvider_storageCost` facets against their schema."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from decimal import Decimal
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Resource

from airflow_cost_provider.billing.samples import Charge
from tests.support.airflow_env import ledger_rows
from tests.support.openlineage import registry, validate_event

FACET = "costProvider_storageCost"
NANO = Decimal("1e-9")


@functools.cache
def storage_schema() -> dict[str, Any]:
    text = (
        resources.files("airflow_cost_provider.openlineage")
        .joinpath("schemas", "CostProviderStorageCostDatasetFacet.json")
        .read_text("utf-8")
    )
    return json.loads(text)


@functools.cache
def _validator_registry():
    document = storage_schema()
    return registry().with_resource(document["$id"], Resource.from_contents(document))


def validate_storage_facet(facet: dict[str, Any]) -> None:
    """Raise unless the facet is valid against its `_schemaURL` (our schema + the OpenLineage spec)."""
    Draft202012Validator(
        {"$ref": facet["_schemaURL"]},
        registry=_validator_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    ).validate(facet)


def validate_storage_event(event: dict[str, Any]) -> None:
    """The event against the OpenLineage spec, and every storage facet against our schema."""
    validate_event(event)
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        facet = dataset.get("facets", {}).get(FACET)
        if facet is not None:
            assert facet["_schemaURL"].split("#")[0] == storage_schema()["$id"]
            validate_storage_facet(facet)


def model_totals(charges: list[Charge], providers: set[str] | None = None, days=None) -> dict[tuple, Decimal]:
    """(provider, resource id, day, usage class, currency) -> exact billed amount, from the model."""
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in charges:
        if not c.is_storage or (providers and c.provider not in providers) or (days and c.day not in days):
            continue
        resource = c.resource_id.lower() if c.provider == "azure" else c.resource_id
        totals[(c.provider, resource, c.day, c.expected_class, c.currency)] += c.billed()
    return dict(totals)


def ledger_totals(url: str) -> tuple[dict[tuple, Decimal], dict[tuple, int]]:
    """The same sums from the ledger, and how many ledger rows (each rounded once) make each up."""
    rows = ledger_rows(
        url,
        "SELECT provider, resource_id, day, usage_class, currency, sum(amount_nanos) AS nanos, "
        "count(*) AS n FROM cost_storage_costs GROUP BY provider, resource_id, day, usage_class, currency",
    )
    totals, counts = {}, {}
    for row in rows:
        day = row["day"]
        day = day if not isinstance(day, str) else __import__("datetime").date.fromisoformat(day)
        key = (row["provider"], row["resource_id"], day, row["usage_class"], row["currency"])
        totals[key] = Decimal(int(row["nanos"])) * NANO
        counts[key] = int(row["n"])
    return totals, counts


def assert_matches_model(
    got: dict[tuple, Decimal], counts: dict[tuple, int], expected: dict[tuple, Decimal]
) -> None:
    """Every key present on both sides; each amount equal to the model within half a nano-unit per
    ledger row that was rounded into it."""
    assert set(got) == set(expected), (
        sorted(set(got) - set(expected))[:5],
        sorted(set(expected) - set(got))[:5],
    )
    for key, amount in expected.items():
        bound = NANO / 2 * counts.get(key, 1)
        assert abs(got[key] - amount) <= bound, (key, got[key], amount)
