"""Validate OpenLineage events offline against the official spec and the project's facet schemas."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from airflow_cost_provider.openlineage.facets import schema_document

SPEC_DIR = Path(__file__).resolve().parents[1] / "data" / "openlineage-spec"
RUN_EVENT = {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}


@functools.cache
def registry() -> Registry:
    documents = [json.loads((SPEC_DIR / "OpenLineage.json").read_text())]
    documents += [json.loads(p.read_text()) for p in sorted((SPEC_DIR / "facets").glob("*.json"))]
    documents.append(schema_document())
    return Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=_draft(doc))) for doc in documents
    )


def _draft(doc: dict[str, Any]):
    from referencing.jsonschema import DRAFT7, DRAFT202012

    return DRAFT7 if "draft-07" in doc.get("$schema", "") else DRAFT202012


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(
        schema, registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate_event(event: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the event and each facet with a known schema are valid."""
    _validator(RUN_EVENT).validate(event)
    known = {uri for uri in registry()}  # ids of every loaded schema document
    facets = [
        *event.get("run", {}).get("facets", {}).values(),
        *event.get("job", {}).get("facets", {}).values(),
    ]
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        facets += list(dataset.get("facets", {}).values())
    for facet in facets:
        url = facet.get("_schemaURL", "")
        if url.split("#")[0] in known:
            _validator({"$ref": url}).validate(facet)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
