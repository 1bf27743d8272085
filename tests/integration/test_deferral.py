"""A deferred task: the capture survives the deferral (the task resumes in a new process), so its
COMPLETE event and ledger row carry what it used before and after, and pending statistics look-ups
started before the deferral are resolved at the end."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.airflow_env import ledger_rows
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration


def test_usage_before_and_after_a_deferral_is_in_the_final_cost(airflow_env):
    run = airflow_env.dags_test("cost_deferral")
    assert run.process.returncode == 0, run.output[-4000:]
    assert "resumed" in run.output or "deferr" in run.output.lower()
    events = [
        e for e in run.events() if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith("deferring_job")
    ]
    assert len(events) == 1, [e["eventType"] for e in run.events()]
    validate_event(events[0])
    facet = events[0]["run"]["facets"]["costProvider_cost"]
    by_id = {line.get("externalId"): line for line in facet["lines"]}
    # $5 per TB scanned (Athena), $6.25 per TiB billed (BigQuery on demand): the shipped price book
    assert Decimal(str(by_id["before-deferral"]["amount"])) == Decimal("5")
    assert Decimal(str(by_id["after-deferral"]["amount"])) == Decimal("10")
    assert Decimal(str(by_id["job-started-before-deferral"]["amount"])) == Decimal("6.25")
    phases = [line for line in facet["lines"] if line["source"] == "airflow_worker"]
    assert len(phases) == 4  # cpu and memory, before the deferral and after it
    rows = ledger_rows(run.ledger_url, "SELECT * FROM cost_deferred_captures")
    assert rows == []  # the snapshot is gone once the try is final
    stored = ledger_rows(run.ledger_url, "SELECT external_id FROM cost_usage WHERE external_id IS NOT NULL")
    assert {r["external_id"] for r in stored} == {
        "before-deferral",
        "after-deferral",
        "job-started-before-deferral",
    }
