"""Databricks SQL end to end: the provider's SQL operator and hook under `airflow dags test` against a fake warehouse on 127.0.0.1 that serves the
connector's own Thrift service and the Query History and Warehouses REST APIs. Asserts on what the
warehouse saw (QUERY_TAGS and the SQL comment), on the REST calls (one history call per task, each
warehouse described once) and on the facet and ledger (DBUs = the warehouse's DBU/hour x the
statement's duration, at the list price of its compute type; unpriced with the reason otherwise)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from urllib.parse import unquote

import pytest

from airflow_cost_provider.instrumentation.databricks_sql import DBU_QUANTUM
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.pricing.price_book import load_shipped
from tests.support.airflow_env import ledger_rows
from tests.support.fake_databricks import fake_databricks
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TOKEN = "dapi-test-token-7f3e9c"
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")
WAREHOUSES = {
    "wh_pro": {
        "name": "reporting",
        "cluster_size": "Small",
        "warehouse_type": "PRO",
        "enable_serverless_compute": False,
    },
    "wh_serverless": {
        "name": "adhoc",
        "cluster_size": "2X-Small",
        "warehouse_type": "PRO",
        "enable_serverless_compute": True,
    },
    "wh_odd": {"name": "legacy", "cluster_size": "5X-Large", "warehouse_type": "CLASSIC"},
}
TASK_WAREHOUSE = {"dbx_operator": "wh_pro", "dbx_hook": "wh_serverless", "dbx_odd_size": "wh_odd"}


def comment_tags(statement: str) -> dict[str, str] | None:
    match = _COMMENT.search(statement)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


def parse_query_tags(text: str) -> dict[str, str]:
    """`key:value,...` with `\\`, `,` and `:` escaped in values, as QUERY_TAGS holds them."""
    tags, key, value, current, escaped = {}, None, "", "", False
    for char in text + ",":
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and key is None:
            key, current = current, ""
        elif char == ",":
            value = current
            tags[key if key is not None else value] = value if key is not None else None
            key, current = None, ""
        else:
            current += char
    return tags


def list_price(compute_type: str) -> Decimal:
    (price,) = [
        p
        for p in load_shipped().candidates("databricks", "dbu")
        if dict(p.match) == {"compute_type": compute_type}
    ]
    assert price.unit == "DBU"
    return price.amount


def dbu_per_hour(cluster_size: str) -> Decimal:
    return load_shipped().factor("databricks_sql_warehouse_dbu_per_hour", cluster_size)


@pytest.fixture(scope="module")
def warehouse():
    with fake_databricks(TOKEN, WAREHOUSES) as server:
        yield server


@pytest.fixture(scope="module")
def dbx_run(airflow_env, warehouse):
    run = airflow_env.dags_test(
        "cost_databricks_sql",
        env={
            "AIRFLOW_CONN_DBX_PRO": json.dumps(warehouse.connection("wh_pro")),
            "AIRFLOW_CONN_DBX_SERVERLESS": json.dumps(warehouse.connection("wh_serverless")),
            "AIRFLOW_CONN_DBX_ODD": json.dumps(warehouse.connection("wh_odd")),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output  # none of the provider's own steps failed
    return run


def task_statements(warehouse, task_id: str):
    return [
        s
        for s in warehouse.statements
        if (tags := comment_tags(s.statement)) and tags["airflow_task_id"] == task_id
    ]


def test_every_statement_carries_query_tags_and_the_comment(dbx_run, warehouse):
    events = complete_events(dbx_run)
    for task_id, warehouse_id in TASK_WAREHOUSE.items():
        statements = task_statements(warehouse, task_id)
        assert statements, task_id
        run_id = events[task_id]["run"]["runId"]
        for executed in statements:
            assert executed.warehouse_id == warehouse_id
            comment = comment_tags(executed.statement)
            assert comment["openlineage_run_id"] == run_id
            tags = parse_query_tags(executed.session_configuration["QUERY_TAGS"])
            assert tags["openlineage_run_id"] == run_id
            assert tags["airflow_dag_id"] == "cost_databricks_sql" and tags["airflow_task_id"] == task_id
            assert tags["airflow_run_id"] == comment["airflow_run_id"]  # `:` in it survived the escaping
            assert tags["airflow_try_number"] == "1" and tags["airflow_map_index"] == "-1"
    # the operator's own tag is kept beside ours
    operator_tags = parse_query_tags(
        task_statements(warehouse, "dbx_operator")[0].session_configuration["QUERY_TAGS"]
    )
    assert operator_tags["team"] == "finance"
    assert len(task_statements(warehouse, "dbx_operator")) == 2


def test_one_history_call_per_task_and_one_look_up_per_warehouse(dbx_run, warehouse):
    calls = warehouse.history_requests()
    assert len(calls) == len(TASK_WAREHOUSE)
    asked = [sorted(call.query["filter_by.statement_ids"]) for call in calls]
    for task_id in TASK_WAREHOUSE:
        assert sorted(s.query_id for s in task_statements(warehouse, task_id)) in asked
    assert all(call.authorization == f"Bearer {TOKEN}" for call in warehouse.rest_requests)
    described = sorted(r.path.rsplit("/", 1)[1] for r in warehouse.warehouse_requests())
    assert described == sorted(WAREHOUSES)  # cached per process: the DAG's tasks share it


def test_statements_are_priced_as_dbus_of_their_warehouse(dbx_run, warehouse):
    events = complete_events(dbx_run)
    for task_id, compute_type in (("dbx_operator", "sql_pro"), ("dbx_hook", "sql_serverless")):
        facet = events[task_id]["run"]["facets"][FACET]
        lines = {line["externalId"]: line for line in facet["lines"] if line["source"] == "databricks"}
        statements = task_statements(warehouse, task_id)
        assert set(lines) == {s.query_id for s in statements}
        for executed in statements:
            size = WAREHOUSES[executed.warehouse_id]["cluster_size"]
            dbus = (dbu_per_hour(size) * executed.duration_ms / 3_600_000).quantize(DBU_QUANTUM)
            line = lines[executed.query_id]
            assert line["metric"] == "dbu" and line["unit"] == "DBU"
            assert Decimal(str(line["quantity"])) == dbus
            assert Decimal(str(line["amount"])) == quantize_amount(dbus * list_price(compute_type))
            assert line["method"] == "list_price" and line["status"] == "estimated"
            assert line["resource"] == executed.warehouse_id
            assert line["priceRef"] == f"2026.11.0:databricks/dbu[compute_type={compute_type}]"
        # hook lineage reported the same query ids: not counted again
        assert not [u for u in facet["unpriced"] if u["source"] == "databricks"]


def test_a_warehouse_size_without_a_dbu_rate_is_unpriced_with_the_reason(dbx_run, warehouse):
    facet = complete_events(dbx_run)["dbx_odd_size"]["run"]["facets"][FACET]
    (executed,) = task_statements(warehouse, "dbx_odd_size")
    assert not [line for line in facet["lines"] if line["source"] == "databricks"]
    (unpriced,) = [u for u in facet["unpriced"] if u["source"] == "databricks"]
    assert unpriced["externalId"] == executed.query_id
    assert unpriced["metric"] == "warehouse_time" and unpriced["unit"] == "ms"
    assert Decimal(str(unpriced["quantity"])) == executed.duration_ms
    assert (
        "'5X-Large'" in unpriced["reason"] and "databricks_sql_warehouse_dbu_per_hour" in unpriced["reason"]
    )


def test_ledger_rows_match_the_warehouse_and_hold_no_token(dbx_run, warehouse):
    rows = ledger_rows(
        dbx_run.ledger_url,
        "SELECT r.task_id, u.metric, u.quantity, u.external_id, u.attributes, l.amount_nanos, l.method, "
        "l.price_ref FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "JOIN cost_usage u ON l.usage_id = u.id WHERE l.source = 'databricks'",
    )
    statements = {s.query_id: s for task_id in TASK_WAREHOUSE for s in task_statements(warehouse, task_id)}
    assert sorted(row["external_id"] for row in rows) == sorted(statements)
    for row in rows:
        executed = statements[row["external_id"]]
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert attributes["warehouse_id"] == executed.warehouse_id
        assert attributes["warehouse_size"] == WAREHOUSES[executed.warehouse_id]["cluster_size"]
        assert Decimal(attributes["duration_ms"]) == executed.duration_ms
        if row["task_id"] == "dbx_odd_size":
            assert row["amount_nanos"] is None
            continue
        dbus = (dbu_per_hour(attributes["warehouse_size"]) * executed.duration_ms / 3_600_000).quantize(
            DBU_QUANTUM
        )
        assert Decimal(row["quantity"]) == dbus
        expected = quantize_amount(dbus * list_price(attributes["compute_type"]))
        assert row["amount_nanos"] == int(expected * 10**9) and row["method"] == "list_price"
    assert TOKEN not in json.dumps(rows, default=str)
    assert TOKEN not in dbx_run.output
