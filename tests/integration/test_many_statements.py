"""A task running more statements than max_lines_per_task under `airflow dags test`, against a real
PostgreSQL: the facet (valid against its schema) and the ledger keep the first lines one by one and
one line for the rest, with their count, and agree on the cost."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.support.airflow_env import ledger_rows
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
STATEMENTS = 300
MAX_LINES = 10


def test_statements_past_the_limit_are_one_line_with_their_count(airflow_env, postgres_server, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = airflow_env.dags_test(
        "cost_many_statements",
        ledger_url=ledger,
        env={
            "AIRFLOW_CONN_PG_SHOP": postgres_server.conn_uri(),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {"pg_shop": {"instance_type": "db.r6g.large"}}
            ),
            "AIRFLOW__COST_PROVIDER__MAX_LINES_PER_TASK": str(MAX_LINES),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    events = run.events()
    for event in events:
        validate_event(event)
    (complete,) = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".loop_of_queries")
    ]
    facet = complete["run"]["facets"][FACET]
    assert "/1-3-0/" in facet["_schemaURL"]
    postgres = [line for line in facet["lines"] if line["source"] == "postgres"]
    assert len(postgres) == MAX_LINES + 1
    (aggregated,) = [line for line in postgres if "count" in line]
    assert aggregated["count"] == STATEMENTS - MAX_LINES and "externalId" not in aggregated
    assert sum(line.get("count", 1) for line in postgres) == STATEMENTS

    rows = ledger_rows(
        ledger,
        "SELECT l.amount_nanos, u.quantity, u.attributes FROM cost_lines l JOIN cost_usage u ON u.id = l.usage_id "
        "WHERE l.source = 'postgres'",
    )
    assert len(rows) == MAX_LINES + 1
    counts = [json.loads(r["attributes"]).get("aggregated_usages", 1) for r in rows]
    assert sorted(counts) == [1] * MAX_LINES + [STATEMENTS - MAX_LINES]
    ledger_total = sum(Decimal(r["amount_nanos"]) for r in rows).scaleb(-9)
    assert ledger_total == sum(Decimal(str(line["amount"])) for line in postgres)
    assert sum(Decimal(r["quantity"]) for r in rows) == sum(
        Decimal(str(line["quantity"])) for line in postgres
    )
