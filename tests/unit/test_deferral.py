"""Carrying a capture across a deferral: JSON round trip, and what cannot travel stays visible."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

from airflow_cost_provider.capture.deferral import restore, snapshot
from airflow_cost_provider.pricing.model import Usage
from tests.support.deferral_probe import ProbeJob, resolve_probe_jobs

WHEN = dt.datetime(2026, 11, 22, 10, 30, tzinfo=dt.timezone.utc)


@dataclasses.dataclass
class HoldsAClient:
    client: object

    def unresolved(self, reason: str) -> Usage:
        return Usage(
            "redshift",
            "queries",
            Decimal(1),
            "query",
            external_id="stmt-1",
            attributes={"why_unpriced": reason},
        )


def test_usage_and_pending_look_ups_survive_a_json_round_trip():
    usage = Usage(
        "athena", "data_scanned", Decimal("12345.000001"), "byte", "wg", "q-1", WHEN, WHEN, {"n": 1}
    )
    document = json.loads(json.dumps(snapshot([usage], {resolve_probe_jobs: [ProbeJob("job-1", 42)]})))
    usages, pending = restore(document)
    assert usages == [usage]
    assert pending == [(resolve_probe_jobs, ProbeJob("job-1", 42))]


def test_a_look_up_that_cannot_travel_becomes_unpriced_with_the_reason():
    document = snapshot([], {resolve_probe_jobs: [HoldsAClient(object())]})
    assert document["pending"] == []
    (usage,) = restore(json.loads(json.dumps(document)))[0]
    assert usage.external_id == "stmt-1"
    assert "could not be carried across the deferral" in usage.attributes["why_unpriced"]


def test_a_look_up_that_no_longer_loads_is_kept_unpriced():
    document = {"usage": [], "pending": [{"resolve": "nowhere:gone", "item": "nowhere:Gone", "fields": {}}]}
    usages, pending = restore(document)
    assert pending == [] and len(usages) == 1
    assert "could not restore after the deferral" in usages[0].attributes["why_unpriced"]
