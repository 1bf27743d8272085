"""Validate OpenLineage events offline against the official spec and the project's facet schemas."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

SPEC_DIR = Path(__file__).resolve().parents[1] / "data" / "openlineage-spec"
RUN_EVENT = {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}
# Facets of ours must name a schema we ship; other producers' unknown facets are left alone.
OWN_FACET_PREFIX = "costProvider_"


def shipped_schema_documents() -> list[dict[str, Any]]:
    """Every facet schema in the package, earlier versions included."""
    folder = resources.files("airflow_cost_provider.openlineage").joinpath("schemas")
    return [
        json.loads(entry.read_text("utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".json")
    ]


@functools.cache
def registry() -> Registry:
    documents = [json.loads((SPEC_DIR / "OpenLineage.json").read_text())]
    documents += [json.loads(p.read_text()) for p in sorted((SPEC_DIR / "facets").glob("*.json"))]
    documents += shipped_schema_documents()
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


def _named_facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    facets = [
        *event.get("run", {}).get("facets", {}).items(),
        *event.get("job", {}).get("facets", {}).items(),
    ]
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        facets += list(dataset.get("facets", {}).items())
    return facets


def validate_event(event: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the event is valid and each facet is valid against the
    schema its own `_schemaURL` names (so a 1-0-0 facet is held to 1-0-0, a 1-1-0 one to 1-1-0)."""
    _validator(RUN_EVENT).validate(event)
    known = {uri for uri in registry()}  # ids of every loaded schema document
    for key, facet in _named_facets(event):
        url = facet.get("_schemaURL", "")
        if url.split("#")[0] in known:
            _validator({"$ref": url}).validate(facet)
        elif key.startswith(OWN_FACET_PREFIX):
            raise ValidationError(f"facet {key} names a schema this package does not ship: {url!r}")


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def complete_events(run) -> dict[str, dict]:
    """A `dags test` run's COMPLETE events by task id, each validated against the spec and our facets."""
    events = run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and "." in e["job"]["name"]
    }
