"""Redshift end to end: the Amazon provider's RedshiftDataOperator and RedshiftDataHook, unchanged,
under real `airflow dags test` against a moto server on 127.0.0.1 (Data API and clusters) and a
Redshift Serverless GetWorkgroup server. Asserts on what the servers saw (tagged SQL, StatementName,
one GetWorkgroup for the workgroup) and on the facet and ledger: compute time from each
statement's reported duration x its cluster's nodes or workgroup's base RPUs, priced from the price
book's numbers, and unpriced with the reason where the book has no price for the node type."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support import fake_aws
from tests.support.airflow_env import ledger_rows
from tests.support.fake_redshift import FakeRedshiftData, serverless_server
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
PRICE_BOOK = Path(__file__).resolve().parents[2] / "airflow_cost_provider" / "pricing" / "price_book.yaml"
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")
CLUSTERS = {"analytics": ("ra3.xlplus", 2), "legacy": ("dc1.large", 3)}  # dc1.large: not in the book
WORKGROUPS = {"etl-wg": 32}
SECONDS = 10**9  # Duration is in nanoseconds


def book_price(metric: str, **match: str) -> tuple[Decimal, str]:
    book = yaml.safe_load(PRICE_BOOK.read_text())
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == "redshift" and p["metric"] == metric and (p.get("match") or {}) == match
    ]
    return Decimal(entry["amount"]), entry["unit"]


def comment_tags(sql: str) -> dict[str, str] | None:
    match = _COMMENT.search(sql)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


@pytest.fixture(scope="module")
def redshift():
    data = FakeRedshiftData()
    data.plan("staging_sales", duration_ns=1_500_000_000)
    data.plan("count(*) FROM sales", duration_ns=2_250_000_000)
    data.plan("GROUP BY region", duration_ns=4 * SECONDS)
    data.plan(
        "region = 'nowhere'", duration_ns=750_000_000, status="FAILED", error="ERROR: permission denied"
    )
    with data.installed(), fake_aws.moto_server() as url, serverless_server(WORKGROUPS) as serverless:
        clusters = fake_aws.client("redshift", url)
        for name, (node_type, nodes) in CLUSTERS.items():
            clusters.create_cluster(
                ClusterIdentifier=name,
                NodeType=node_type,
                NumberOfNodes=nodes,
                ClusterType="multi-node",
                MasterUsername="admin",
                MasterUserPassword="Secret-Passw0rd",
            )
        yield data, serverless, url


@pytest.fixture(scope="module")
def redshift_run(airflow_env, redshift):
    _, serverless, url = redshift
    env = fake_aws.airflow_env(url, {"redshift-serverless": serverless.url})
    run = airflow_env.dags_test("cost_redshift", env=env)
    assert run.process.returncode == 0, run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def statements(redshift, redshift_run) -> dict[str, dict]:
    """Every statement the server holds, by the task that sent it: its name as ListStatements gives
    it, and its description from DescribeStatement."""
    _, _, url = redshift
    client = fake_aws.client("redshift-data", url)
    by_task = {}
    for listed in client.list_statements()["Statements"]:
        described = client.describe_statement(Id=listed["Id"])
        tags = comment_tags(described["QueryString"])
        assert tags is not None, described["QueryString"]
        by_task[tags["airflow_task_id"]] = {
            **described,
            "StatementName": listed.get("StatementName"),
            "tags": tags,
        }
    return by_task


def redshift_facet(event: dict) -> tuple[list[dict], list[dict]]:
    facet = event["run"]["facets"][FACET]
    return (
        [line for line in facet["lines"] if line["source"] == "redshift"],
        [item for item in facet["unpriced"] if item["source"] == "redshift"],
    )


def test_statements_reach_the_data_api_tagged_and_named(redshift_run, statements):
    events = complete_events(redshift_run)
    assert set(statements) == {"provisioned_load", "serverless_count", "legacy_rollup", "failing_statement"}
    for task_id, statement in statements.items():
        assert statement["tags"]["airflow_dag_id"] == "cost_redshift"
        assert statement["tags"]["openlineage_run_id"] == events[task_id]["run"]["runId"]
    # a statement name the task did not set is `dag.task.try`; the user's own is kept
    assert statements["provisioned_load"]["StatementName"] == "cost_redshift.provisioned_load.1"
    assert statements["failing_statement"]["StatementName"] == "cost_redshift.failing_statement.1"
    assert statements["serverless_count"]["StatementName"] == "nightly_count"
    assert statements["serverless_count"]["WorkgroupName"] == "etl-wg"


def test_capacity_is_looked_up_once_per_workgroup(redshift, redshift_run):
    _, serverless, _ = redshift
    assert serverless.calls == [{"target": "RedshiftServerless.GetWorkgroup", "workgroupName": "etl-wg"}]


def test_provisioned_statements_are_priced_as_node_time(redshift, redshift_run, statements):
    _, _, url = redshift
    events = complete_events(redshift_run)
    clusters = fake_aws.client("redshift", url)
    price, price_unit = book_price("node_time", node_type="ra3.xlplus")
    assert price_unit == "node-hour"
    (cluster,) = clusters.describe_clusters(ClusterIdentifier="analytics")["Clusters"]
    for task_id in ("provisioned_load", "failing_statement"):
        statement = statements[task_id]
        lines, unpriced = redshift_facet(events[task_id])
        assert unpriced == []  # hook lineage reported the same statement: not counted twice
        (line,) = lines
        node_seconds = Decimal(statement["Duration"]) / SECONDS * cluster["NumberOfNodes"]
        assert line["externalId"] == statement["Id"] and line["resource"] == "analytics"
        assert (line["metric"], line["unit"], line["method"]) == ("node_time", "node-second", "allocated")
        assert line["priceRef"].endswith("redshift/node_time[node_type=ra3.xlplus]")
        assert Decimal(str(line["quantity"])) == node_seconds
        assert Decimal(str(line["amount"])) == quantize_amount(node_seconds * price / 3600)
    # the planned durations, as the server reports them: 1.5 s and 0.75 s on 2 nodes
    assert statements["provisioned_load"]["Duration"] == 1_500_000_000
    assert statements["failing_statement"]["Status"] == "FAILED"
    assert quantize_amount(Decimal(3) * price / 3600) == Decimal("0.000905")


def test_serverless_statements_are_priced_as_rpu_time(redshift, redshift_run, statements):
    _, serverless, _ = redshift
    events = complete_events(redshift_run)
    price, price_unit = book_price("rpu_time")
    assert price_unit == "RPU-hour"
    client = fake_aws.client("redshift-serverless", serverless.url)
    base_capacity = client.get_workgroup(workgroupName="etl-wg")["workgroup"]["baseCapacity"]
    statement = statements["serverless_count"]
    (line,), unpriced = redshift_facet(events["serverless_count"])
    assert unpriced == []
    rpu_seconds = Decimal(statement["Duration"]) / SECONDS * base_capacity
    assert line["externalId"] == statement["Id"] and line["resource"] == "etl-wg"
    assert (line["metric"], line["unit"], line["method"]) == ("rpu_time", "RPU-second", "allocated")
    assert Decimal(str(line["quantity"])) == rpu_seconds == Decimal(72)
    assert Decimal(str(line["amount"])) == quantize_amount(rpu_seconds * price / 3600) == Decimal("0.0075")


def test_a_node_type_without_a_price_is_unpriced_with_the_reason(redshift_run, statements):
    events = complete_events(redshift_run)
    lines, (item,) = redshift_facet(events["legacy_rollup"])
    assert lines == []
    assert item["externalId"] == statements["legacy_rollup"]["Id"] and item["resource"] == "legacy"
    assert (item["metric"], item["unit"], Decimal(str(item["quantity"]))) == (
        "node_time",
        "node-second",
        Decimal(12),
    )
    assert "no price for redshift/node_time with node_type='dc1.large'" in item["reason"]
    assert events["legacy_rollup"]["run"]["facets"][FACET]["status"] == "partial"


def test_ledger_rows_match_the_facet(redshift_run, statements):
    rows = ledger_rows(
        redshift_run.ledger_url,
        "SELECT r.task_id, u.external_id, u.metric, u.quantity, u.attributes, l.amount_nanos, l.method, "
        "l.unpriced_reason FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'redshift'",
    )
    by_task = {row["task_id"]: row for row in rows}
    assert set(by_task) == set(statements) and len(rows) == len(statements)
    events = complete_events(redshift_run)
    for task_id, row in by_task.items():
        attributes = row_attributes(row)
        assert row["external_id"] == statements[task_id]["Id"]
        assert attributes["redshift_query_id"] == statements[task_id]["RedshiftQueryId"]
        assert attributes["status"] == statements[task_id]["Status"]
        lines, _ = redshift_facet(events[task_id])
        if lines:
            assert row["amount_nanos"] == int(Decimal(str(lines[0]["amount"])) * 10**9)
            assert row["method"] == "allocated"
        else:
            assert row["amount_nanos"] is None and "dc1.large" in row["unpriced_reason"]
    assert row_attributes(by_task["serverless_count"])["base_capacity"] == "32"
    assert row_attributes(by_task["provisioned_load"])["nodes"] == 2
    assert row_attributes(by_task["legacy_rollup"])["node_type"] == "dc1.large"


def row_attributes(row: dict) -> dict:
    return row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
