"""Trino end to end: the provider's hook and the common SQL operator under `airflow dags test` against a
fake coordinator on 127.0.0.1 speaking the client REST protocol. Asserts on what the coordinator saw
(client tags and the SQL comment on every statement) and on the facet and ledger (CPU time priced at
the trino/cpu_time rate, or bytes read at a trino/physical_input price, or unpriced with the reason)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from urllib.parse import unquote

import pytest

from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.pricing.price_book import load_shipped
from tests.support.airflow_env import ledger_rows
from tests.support.fake_trino import fake_trino
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")
PER_TB = Decimal("5")  # the test's own trino/physical_input price
TASKS = ("trino_operator", "trino_unread", "trino_by_bytes", "trino_by_bytes_unpriced")


def comment_tags(statement: str) -> dict[str, str] | None:
    match = _COMMENT.search(statement)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


def shipped_cpu_rate() -> Decimal:
    (price,) = load_shipped().candidates("trino", "cpu_time")
    assert price.unit == "vCPU-hour"
    return price.amount


@pytest.fixture(scope="module")
def coordinator():
    with fake_trino() as server:
        yield server


@pytest.fixture(scope="module")
def trino_run(airflow_env, coordinator, tmp_path_factory):
    book = tmp_path_factory.mktemp("trino-prices") / "prices.yaml"
    book.write_text(
        'version: "test-1"\n'
        "prices:\n"
        "  - source: trino\n"
        "    metric: physical_input\n"
        "    unit: TB\n"
        f'    amount: "{PER_TB}"\n'
        "    currency: USD\n"
        "    match: {cluster: lake}\n"
    )

    def connection(**extra):
        return json.dumps(
            {
                "conn_type": "trino",
                "host": "127.0.0.1",
                "port": coordinator.port,
                "login": "etl_user",
                "extra": extra,
            }
        )

    run = airflow_env.dags_test(
        "cost_trino",
        env={
            "AIRFLOW_CONN_TRINO_SHOP": connection(client_tags=["nightly"], catalog="memory"),
            "AIRFLOW_CONN_TRINO_LAKE": connection(catalog="hive"),
            "AIRFLOW_CONN_TRINO_ARCHIVE": connection(catalog="hive"),
            "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {
                    "trino_lake": {"billing_metric": "physical_input", "cluster": "lake"},
                    "trino_archive": {"billing_metric": "physical_input", "cluster": "archive"},
                }
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output  # none of the provider's own steps failed
    return run


def task_queries(coordinator, task_id: str):
    """The queries the task itself sent (the OpenLineage listener's own look-ups carry no tags)."""
    return [
        q
        for q in coordinator.statements()
        if (tags := comment_tags(q.statement)) and tags["airflow_task_id"] == task_id
    ]


def test_every_statement_carries_client_tags_and_the_comment(trino_run, coordinator):
    events = complete_events(trino_run)
    for task_id in TASKS:
        queries = task_queries(coordinator, task_id)
        assert queries, task_id
        run_id = events[task_id]["run"]["runId"]
        for query in queries:
            assert comment_tags(query.statement)["openlineage_run_id"] == run_id
            tags = dict(tag.split("=", 1) for tag in query.client_tags if "=" in tag)
            assert tags["airflow_dag_id"] == "cost_trino" and tags["airflow_task_id"] == task_id
            assert tags["airflow_try_number"] == "1" and tags["openlineage_run_id"] == run_id
            assert unquote(tags["airflow_run_id"]) == comment_tags(query.statement)["airflow_run_id"]
            assert query.headers["X-Trino-User"] == "etl_user"
    # the connection's own client tag is kept, first
    shop = task_queries(coordinator, "trino_operator")
    assert len(shop) == 2 and all(q.client_tags[0] == "nightly" for q in shop)


def test_cpu_time_is_priced_from_the_final_statistics(trino_run, coordinator):
    facet = complete_events(trino_run)["trino_operator"]["run"]["facets"][FACET]
    lines = {line["externalId"]: line for line in facet["lines"] if line["source"] == "trino"}
    queries = task_queries(coordinator, "trino_operator")
    assert set(lines) == {q.query_id for q in queries}
    rate = shipped_cpu_rate()
    for query in queries:
        # the SELECT was still running when execute() returned: only the final page has all the CPU time
        assert query.state == "FINISHED"
        line = lines[query.query_id]
        assert line["metric"] == "cpu_time" and line["unit"] == "vCPU-ms"
        assert Decimal(str(line["quantity"])) == query.cpu_time_ms
        assert Decimal(str(line["amount"])) == quantize_amount(Decimal(query.cpu_time_ms) * rate / 3_600_000)
        assert line["method"] == "runtime_rate" and line["resource"] == "trino_shop"
        assert line["priceRef"].endswith(":trino/cpu_time")
    # hook lineage reported the same queries: not counted again
    assert not [u for u in facet["unpriced"] if u["source"] == "trino"]
    # the finished queries were read from the client: no look-up on the coordinator
    assert all(("GET", f"/v1/query/{q.query_id}") not in q.requests for q in queries)


def test_a_query_not_read_to_the_end_is_looked_up_on_the_coordinator(trino_run, coordinator):
    (query,) = task_queries(coordinator, "trino_unread")
    assert query.state == "FAILED"  # cancelled when the hook closed the cursor
    assert query.requests.count(("GET", f"/v1/query/{query.query_id}")) == 1
    facet = complete_events(trino_run)["trino_unread"]["run"]["facets"][FACET]
    (line,) = [line for line in facet["lines"] if line["source"] == "trino"]
    assert line["externalId"] == query.query_id
    assert Decimal(str(line["quantity"])) == query.cpu_time_ms
    assert Decimal(str(line["amount"])) == quantize_amount(
        Decimal(query.cpu_time_ms) * shipped_cpu_rate() / 3_600_000
    )


def test_a_connection_billed_per_byte_read(trino_run, coordinator):
    events = complete_events(trino_run)
    (query,) = task_queries(coordinator, "trino_by_bytes")
    facet = events["trino_by_bytes"]["run"]["facets"][FACET]
    (line,) = [line for line in facet["lines"] if line["source"] == "trino"]
    assert line["metric"] == "physical_input" and line["unit"] == "byte"
    assert Decimal(str(line["quantity"])) == query.physical_input_bytes
    assert Decimal(str(line["amount"])) == quantize_amount(
        Decimal(query.physical_input_bytes) * PER_TB / 10**12
    )
    assert line["priceRef"] == "test-1:trino/physical_input[cluster=lake]"

    (archived,) = task_queries(coordinator, "trino_by_bytes_unpriced")
    facet = events["trino_by_bytes_unpriced"]["run"]["facets"][FACET]
    assert not [line for line in facet["lines"] if line["source"] == "trino"]
    (unpriced,) = [u for u in facet["unpriced"] if u["source"] == "trino"]
    assert unpriced["externalId"] == archived.query_id and unpriced["metric"] == "physical_input"
    assert Decimal(str(unpriced["quantity"])) == archived.physical_input_bytes
    assert "cluster='archive'" in unpriced["reason"] and "trino/physical_input" in unpriced["reason"]


def test_ledger_rows_match_the_coordinator(trino_run, coordinator):
    rows = ledger_rows(
        trino_run.ledger_url,
        "SELECT r.task_id, u.metric, u.quantity, u.unit, u.external_id, u.attributes, l.amount_nanos, l.method, "
        "l.price_ref, l.unpriced_reason FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "JOIN cost_usage u ON l.usage_id = u.id WHERE l.source = 'trino'",
    )
    queries = {q.query_id: q for task_id in TASKS for q in task_queries(coordinator, task_id)}
    assert {row["external_id"] for row in rows} == set(queries)
    rate = shipped_cpu_rate()
    for row in rows:
        query = queries[row["external_id"]]
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert Decimal(attributes["wall_time_ms"]) == query.wall_time_ms
        assert Decimal(attributes["physical_input_bytes"]) == query.physical_input_bytes
        if row["metric"] == "cpu_time":
            expected = quantize_amount(Decimal(query.cpu_time_ms) * rate / 3_600_000)
            assert Decimal(row["quantity"]) == query.cpu_time_ms
            assert row["amount_nanos"] == int(expected * 10**9) and row["method"] == "runtime_rate"
        elif row["task_id"] == "trino_by_bytes":
            expected = quantize_amount(Decimal(query.physical_input_bytes) * PER_TB / 10**12)
            assert row["amount_nanos"] == int(expected * 10**9) and row["method"] == "list_price"
        else:
            assert row["amount_nanos"] is None and "trino/physical_input" in row["unpriced_reason"]
