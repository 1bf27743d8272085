"""PostgreSQL and MySQL end to end: real servers, the providers' own operator and hook under `airflow
dags test`. Asserts on what the servers logged (every statement tagged with the task's identity) and
on the facet and ledger (one runtime-rate line per statement, or unpriced with the reason)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from urllib.parse import unquote

import pytest

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import ledger_rows
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
RDS_R6G_LARGE_HOURLY = Decimal("0.225")  # the shipped price book's db.r6g.large rate
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")


def comment_tags(statement: str) -> dict[str, str] | None:
    match = _COMMENT.search(statement)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


@pytest.fixture(scope="module")
def sql_run(airflow_env, postgres_server, mariadb_server):
    run = airflow_env.dags_test(
        "cost_sql_local",
        env={
            "AIRFLOW_CONN_PG_SHOP": postgres_server.conn_uri(),
            "AIRFLOW_CONN_MYSQL_SHOP": mariadb_server.conn_uri(),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {"pg_shop": {"instance_type": "db.r6g.large"}}
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


OWN_STATEMENTS = {"pg_operator": 3, "pg_hook": 2}


def tagged_statements(server, task_id: str, run) -> list[tuple[str, dict]]:
    """The statements this module's run of the task sent (other tests run the DAG on the same server:
    the task try's OpenLineage run id tells them apart)."""
    run_id = complete_events(run)[task_id]["run"]["runId"]
    tagged = [(s, comment_tags(s)) for s in server.statements()]
    return [
        (s, t)
        for s, t in tagged
        if t and t["airflow_task_id"] == task_id and t["openlineage_run_id"] == run_id
    ]


def test_postgres_statements_reach_the_server_tagged(sql_run, postgres_server):
    events = complete_events(sql_run)
    for task_id, own in OWN_STATEMENTS.items():
        mine = tagged_statements(postgres_server, task_id, sql_run)
        # only the task's own statements: not the OpenLineage listener's schema look-ups, which run
        # in its forked child
        assert len(mine) == own, [s for s, _ in mine]
        for _statement, tags in mine:
            assert tags["airflow_dag_id"] == "cost_sql_local"
            assert tags["airflow_try_number"] == "1" and tags["airflow_map_index"] == "-1"
            assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
    # a statement ending in a `--` comment gets the tags on a new line, outside that comment
    update = next(
        s for s, _ in tagged_statements(postgres_server, "pg_hook", sql_run) if s.startswith("UPDATE")
    )
    assert "-- double every amount;\n/*airflow_dag_id=" in update
    # the driver's own transaction statements are not the task's SQL and carry no tags
    assert "BEGIN" in postgres_server.statements()


def test_mysql_statements_reach_the_server_tagged(sql_run, mariadb_server):
    mine = [t for _, t in tagged_statements(mariadb_server, "mysql_operator", sql_run)]
    assert len(mine) == 3
    assert all(t["airflow_dag_id"] == "cost_sql_local" and t["airflow_try_number"] == "1" for t in mine)


def test_postgres_statements_are_priced_at_the_instance_rate(sql_run, postgres_server):
    events = complete_events(sql_run)
    for task_id in OWN_STATEMENTS:
        facet = events[task_id]["run"]["facets"][FACET]
        lines = [line for line in facet["lines"] if line["source"] == "postgres"]
        # one line per statement the server saw with this task's tags
        assert len(lines) == len(tagged_statements(postgres_server, task_id, sql_run))
        for line in lines:
            assert line["metric"] == "instance_time" and line["unit"] == "instance-second"
            assert line["method"] == "runtime_rate" and line["resource"] == "pg_shop"
            assert line["priceRef"].endswith("postgres/instance_time[instance_type=db.r6g.large]")
            quantity = Decimal(str(line["quantity"]))
            assert Decimal(0) < quantity < Decimal(30)
            expected_amount = quantize_amount(quantity * RDS_R6G_LARGE_HOURLY / 3600)
            assert abs(Decimal(str(line["amount"])) - expected_amount) <= Decimal("1e-9")
        # nothing reported twice: hook lineage saw the same statements
        assert not [u for u in facet["unpriced"] if u["source"] == "postgres"]


def test_mysql_without_an_instance_is_unpriced_with_the_reason(sql_run):
    facet = complete_events(sql_run)["mysql_operator"]["run"]["facets"][FACET]
    mysql = [u for u in facet["unpriced"] if u["source"] == "mysql"]
    assert len(mysql) == 1 and mysql[0]["count"] == 3  # three statements, one cause
    assert all("connection_pricing" in u["reason"] and "mysql_shop" in u["reason"] for u in mysql)
    assert not [line for line in facet["lines"] if line["source"] == "mysql"]


def test_ledger_holds_one_line_per_statement(sql_run, postgres_server):
    rows = ledger_rows(
        sql_run.ledger_url,
        "SELECT r.task_id, l.source, l.method, l.amount_nanos, u.quantity FROM cost_lines l "
        "JOIN cost_task_runs r ON l.task_run_id = r.id JOIN cost_usage u ON l.usage_id = u.id "
        "WHERE l.source IN ('postgres', 'mysql')",
    )
    by_task: dict[str, list] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row)
    for task_id in OWN_STATEMENTS:
        assert len(by_task[task_id]) == len(tagged_statements(postgres_server, task_id, sql_run))
    assert all(r["amount_nanos"] > 0 and r["method"] == "runtime_rate" for r in by_task["pg_operator"])
    assert len(by_task["mysql_operator"]) == 3
    assert all(r["amount_nanos"] is None for r in by_task["mysql_operator"])
