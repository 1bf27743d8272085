"""Athena end to end: the Amazon provider's AthenaOperator and AthenaHook, unchanged, under real
`airflow dags test` against a moto server on 127.0.0.1. Asserts on what the server saw (each billable
query tagged with its task's identity, DDL left alone, one BatchGetQueryExecution per task) and on the
facet and ledger: billed bytes as Athena bills them, priced from the price book's number."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support import fake_aws
from tests.support.airflow_env import ledger_rows
from tests.support.fake_athena import FakeAthena
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
PRICE_BOOK = Path(__file__).resolve().parents[2] / "airflow_cost_provider" / "pricing" / "price_book.yaml"
MB = 10**6
TB = 10**12
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")

# What Athena's engine reports for the backfill task's queries (matched by query text).
FULL_SCAN_BYTES = 1_234_567_891
FAILED_SCAN_BYTES = 5_000_000
CANCELLED_SCAN_BYTES = 23_456_789


def athena_price_per_tb() -> Decimal:
    book = yaml.safe_load(PRICE_BOOK.read_text())
    (entry,) = [p for p in book["prices"] if p["source"] == "athena" and p["metric"] == "data_scanned"]
    assert entry["unit"] == "TB"
    return Decimal(entry["amount"])


def comment_tags(query: str) -> dict[str, str] | None:
    match = _COMMENT.search(query)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


@pytest.fixture(scope="module")
def athena():
    fake = FakeAthena()
    fake.plan("broken_column", scanned_bytes=FAILED_SCAN_BYTES, state="FAILED", reason="COLUMN_NOT_FOUND")
    fake.plan("orders_archive", scanned_bytes=CANCELLED_SCAN_BYTES)
    fake.plan("orders_history", scanned_bytes=FULL_SCAN_BYTES, engine_time_ms=5400)
    with fake.installed(), fake_aws.moto_server() as url:
        yield fake, url


@pytest.fixture(scope="module")
def athena_run(airflow_env, athena):
    _, url = athena
    run = airflow_env.dags_test("cost_athena", env=fake_aws.airflow_env(url))
    assert run.process.returncode == 0, run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def queries(athena, athena_run) -> dict[str, dict]:
    """Every query the server holds, as its own GetQueryExecution describes it, by id."""
    _, url = athena
    client = fake_aws.client("athena", url)
    ids = client.list_query_executions()["QueryExecutionIds"]
    return {qid: client.get_query_execution(QueryExecutionId=qid)["QueryExecution"] for qid in ids}


def athena_lines(event: dict) -> dict[str, dict]:
    return {
        line["externalId"]: line
        for line in event["run"]["facets"][FACET]["lines"]
        if line["source"] == "athena"
    }


def billed(scanned: int) -> int:
    return max(math.ceil(scanned / MB) * MB, 10 * MB)


def amount(billed_bytes: int) -> Decimal:
    return quantize_amount(Decimal(billed_bytes) * athena_price_per_tb() / TB)


def test_billable_queries_reach_athena_tagged_and_ddl_untouched(athena_run, queries):
    events = complete_events(athena_run)
    by_task: dict[str, list[str]] = {}
    for execution in queries.values():
        tags = comment_tags(execution["Query"])
        if execution["Query"].startswith("CREATE EXTERNAL TABLE"):
            # Athena's Hive DDL parser rejects block comments: DDL (never billed) goes untagged
            assert tags is None and execution["Query"].endswith("LOCATION 's3://shop-data/orders/'")
            by_task.setdefault("create_table", []).append(execution["Query"])
            continue
        assert tags is not None, execution["Query"]
        assert tags["airflow_dag_id"] == "cost_athena" and tags["airflow_try_number"] == "1"
        assert tags["openlineage_run_id"] == events[tags["airflow_task_id"]]["run"]["runId"]
        by_task.setdefault(tags["airflow_task_id"], []).append(execution["Query"])
    assert {task: len(texts) for task, texts in by_task.items()} == {
        "create_table": 1,
        "daily_orders": 1,
        "backfill": 3,
    }
    # the comment goes after the user's own trailing comment, which stays intact
    (full_scan,) = [q for q in by_task["backfill"] if "orders_history /* every partition */" in q]
    assert full_scan.startswith("SELECT * FROM orders_history /* every partition */ /*airflow_dag_id=")


def test_each_task_reads_its_statistics_in_one_batch(athena, athena_run, queries):
    fake, _ = athena
    batches = fake.calls_of("BatchGetQueryExecution")
    assert len(batches) == 3  # one per task, none from anything else
    by_task = {}
    for batch in batches:
        (task_id,) = {
            (comment_tags(queries[qid]["Query"]) or {}).get("airflow_task_id", "create_table")
            for qid in batch["QueryExecutionIds"]
        }
        by_task[task_id] = sorted(batch["QueryExecutionIds"])
    assert {task: len(ids) for task, ids in by_task.items()} == {
        "create_table": 1,
        "daily_orders": 1,
        "backfill": 3,
    }
    # the provider's own look-ups say so in their user agent; the tasks' own calls do not
    agents: dict[str, list[str]] = {}
    for action, user_agent in fake.user_agents:
        agents.setdefault(action, []).append(user_agent)
    assert all("airflow-cost-provider/" in ua for ua in agents["BatchGetQueryExecution"])
    assert not any(
        "airflow-cost-provider/" in ua for ua in agents["StartQueryExecution"] + agents["GetQueryExecution"]
    )


def test_scanned_bytes_are_priced_as_athena_bills_them(athena_run, queries):
    events = complete_events(athena_run)
    price_ref_suffix = ":athena/data_scanned"
    expected_by_task = {}
    for qid, execution in queries.items():
        tags = comment_tags(execution["Query"])
        task_id = tags["airflow_task_id"] if tags else "create_table"
        state = execution["Status"]["State"]
        scanned = execution["Statistics"]["DataScannedInBytes"]
        if execution["StatementType"] == "DDL" or state == "FAILED":
            expected = 0  # not billed by Athena
        else:
            expected = billed(scanned)
        expected_by_task.setdefault(task_id, {})[qid] = (expected, state, scanned)

    # the server's own statistics: what the plan and moto report
    backfill = {state: scanned for _e, state, scanned in expected_by_task["backfill"].values()}
    assert backfill == {
        "SUCCEEDED": FULL_SCAN_BYTES,
        "FAILED": FAILED_SCAN_BYTES,
        "CANCELLED": CANCELLED_SCAN_BYTES,
    }
    assert [scanned for _e, _s, scanned in expected_by_task["daily_orders"].values()] == [0]

    for task_id, expected in expected_by_task.items():
        facet = events[task_id]["run"]["facets"][FACET]
        lines = athena_lines(events[task_id])
        assert set(lines) == set(expected), task_id
        for qid, (billed_bytes, _state, _scanned) in expected.items():
            line = lines[qid]
            assert (line["metric"], line["unit"], line["method"]) == ("data_scanned", "byte", "list_price")
            assert line["resource"] == "primary" and line["currency"] == "USD"
            assert line["priceRef"].endswith(price_ref_suffix)
            assert Decimal(str(line["quantity"])) == billed_bytes
            assert Decimal(str(line["amount"])) == amount(billed_bytes)
        # hook lineage reported the same queries: nothing is counted twice or left unpriced
        assert not [u for u in facet["unpriced"] if u["source"] == "athena"]

    # the numbers themselves: a tiny query pays the 10 MB minimum, a big one is rounded up to the MB
    (daily,) = athena_lines(events["daily_orders"]).values()
    assert Decimal(str(daily["quantity"])) == 10 * MB
    assert Decimal(str(daily["amount"])) == Decimal("0.00005")
    full_scan = next(e for e in expected_by_task["backfill"].values() if e[1] == "SUCCEEDED")
    assert full_scan[0] == 1_235 * MB and amount(full_scan[0]) == Decimal("0.006175")


def test_ledger_keeps_the_reported_bytes_and_why_nothing_was_billed(athena_run, queries):
    rows = ledger_rows(
        athena_run.ledger_url,
        "SELECT r.task_id, u.external_id, u.quantity, u.unit, u.resource, u.attributes, l.amount_nanos, "
        "l.method, l.price_ref FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'athena'",
    )
    assert {row["external_id"] for row in rows} == set(queries)
    by_id = {row["external_id"]: row for row in rows}
    for qid, execution in queries.items():
        row = by_id[qid]
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert attributes["state"] == execution["Status"]["State"]
        assert attributes["scanned_bytes"] == execution["Statistics"]["DataScannedInBytes"]
        assert attributes["statement_type"] == execution["StatementType"]
        quantity = Decimal(row["quantity"])
        assert row["amount_nanos"] == int(amount(int(quantity)) * 10**9)
        assert row["method"] == "list_price" and row["resource"] == "primary"
        if execution["Status"]["State"] == "FAILED":
            assert quantity == 0 and attributes["not_billed"] == "failed queries are not billed"
        elif execution["StatementType"] == "DDL":
            assert quantity == 0 and attributes["not_billed"] == "DDL statements are not billed"
        else:
            assert "not_billed" not in attributes and quantity >= 10 * MB
