"""Statements that bypass `DbApiHook._run_command`, end to end: dataframes, insert_rows, SQLAlchemy
engines from `get_sqlalchemy_engine()` and `get_uri()`, and hook classes a DAG file defines with their
own `_run_command` or `run`, against real PostgreSQL and MariaDB servers under `airflow dags test`.
Every statement the task sent is in the server's log with the task's tags, and in the ledger and the
facet exactly once: priced at the instance rate (PostgreSQL) or unpriced with the reason (MySQL)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.test_sql_local import comment_tags
from tests.support.airflow_env import ledger_rows
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
RDS_R6G_LARGE_HOURLY = Decimal("0.225")  # the shipped price book's db.r6g.large rate

# task -> the statements (up to their tags) it must have sent, each tagged, with how many times
PG_EXPECTED = {
    # PostgresHook supports executemany: one call for the three rows, one execution per row
    "pg_insert_rows": {"INSERT INTO path_orders (id, amount) VALUES ($1,$2)": 3},
    "pg_get_df": {"SELECT id, amount FROM path_orders WHERE amount > $1 ORDER BY id": 1},
    "pg_get_df_by_chunks": {"SELECT id FROM path_orders ORDER BY id": 1},
    "pg_engine": {
        "UPDATE path_orders SET amount = amount * 2 WHERE id = $1": 1,
        "SELECT sum(amount) FROM path_orders": 1,
    },
    "pg_uri_engine": {"SELECT count(*) FROM path_orders": 1},
    "pg_own_hooks": {
        "SELECT 1 AS audited": 1,
        "DELETE FROM path_orders WHERE id = 3": 1,
        "SELECT count(*) FROM path_orders": 1,
    },
}
# the method each task's statements came through (usage attribute sql_path; None: _run_command)
SQL_PATHS = {
    "pg_insert_rows": {"insert_rows"},
    "pg_get_df": {"get_df"},
    "pg_get_df_by_chunks": {"get_df_by_chunks"},
    "pg_engine": {"sqlalchemy"},
    "pg_uri_engine": {"sqlalchemy"},
    "pg_own_hooks": {None, "run"},
}
MYSQL_EXPECTED = {
    "DROP TABLE IF EXISTS path_orders": 1,
    "CREATE TABLE path_orders (id INTEGER, amount DECIMAL(10, 2))": 1,
    "INSERT INTO path_orders (id, amount) VALUES (1,9.5e0)": 1,
    "INSERT INTO path_orders (id, amount) VALUES (2,20.0e0)": 1,
    "SELECT id, amount FROM path_orders WHERE id >= 1": 1,
}


@pytest.fixture(scope="module")
def paths_run(airflow_env, postgres_server, mariadb_server):
    run = airflow_env.dags_test(
        "cost_sql_paths",
        env={
            "AIRFLOW_CONN_PG_PATHS": postgres_server.conn_uri(),
            "AIRFLOW_CONN_MYSQL_PATHS": mariadb_server.conn_uri(),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {"pg_paths": {"instance_type": "db.r6g.large"}}
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


def tagged_statements(server, task_id: str, run) -> list[str]:
    """The statements the server logged with this task try's tags, their comment cut off."""
    run_id = complete_events(run)[task_id]["run"]["runId"]
    mine = []
    for statement in server.statements():
        tags = comment_tags(statement)
        if tags and tags["airflow_task_id"] == task_id and tags["openlineage_run_id"] == run_id:
            assert tags["airflow_dag_id"] == "cost_sql_paths" and tags["airflow_try_number"] == "1"
            # the comment's URL-encoded `%` reached the server as written, with or without parameters
            # (a doubled or a lost `%` would not decode to the run id)
            assert tags["airflow_run_id"].startswith("manual__") and ":" in tags["airflow_run_id"], tags
            mine.append(statement[: statement.rindex("/*airflow_dag_id=")].rstrip())
    return mine


def usage_rows(run, task_id: str, source: str) -> list[dict]:
    return ledger_rows(
        run.ledger_url,
        "SELECT u.metric, u.quantity, u.attributes, l.method, l.amount_nanos FROM cost_usage u "
        "JOIN cost_task_runs r ON u.task_run_id = r.id LEFT JOIN cost_lines l ON l.usage_id = u.id "
        f"WHERE r.task_id = '{task_id}' AND u.source = '{source}'",
    )


def test_every_statement_reaches_postgres_tagged(paths_run, postgres_server):
    logged = postgres_server.statements()
    for task_id, expected in PG_EXPECTED.items():
        mine = tagged_statements(postgres_server, task_id, paths_run)
        for statement, times in expected.items():
            assert mine.count(statement) == times, (task_id, statement, mine)
        # pandas asks whether the text is a table name first: its own look-up, sent by the task too
        extra = [s for s in mine if s not in expected]
        if task_id == "pg_get_df":
            assert len(extra) == 1 and "pg_catalog" in extra[0], extra
        else:
            assert extra == [], (task_id, extra)
    # none of the task's own statements reached the server untagged
    for expected in PG_EXPECTED.values():
        for statement in expected:
            if statement != "SELECT count(*) FROM path_orders":  # also the test's own checks
                assert statement not in logged, statement


def test_every_statement_reaches_mariadb_tagged(paths_run, mariadb_server):
    mine = tagged_statements(mariadb_server, "mysql_paths", paths_run)
    assert sorted(mine) == sorted(MYSQL_EXPECTED), mine


def test_postgres_statements_are_in_the_ledger_once_each_priced(paths_run, postgres_server):
    events = complete_events(paths_run)
    for task_id in PG_EXPECTED:
        statements = tagged_statements(postgres_server, task_id, paths_run)
        rows = usage_rows(paths_run, task_id, "postgres")
        attributes = [
            json.loads(r["attributes"]) if isinstance(r["attributes"], str) else r["attributes"] for r in rows
        ]
        # one usage per statement the server saw with this task try's tags (an executemany is one
        # usage for all its rows: psycopg 3 pipelines one execution per row): none missing, none twice
        executions = sum(a["row_count"] if a.get("executemany") else 1 for a in attributes)
        assert executions == len(statements), (task_id, attributes, statements)
        if task_id == "pg_insert_rows":
            assert [(a.get("executemany"), a["row_count"]) for a in attributes] == [(True, 3)]
        paths = {a.get("sql_path") for a in attributes}
        for row in rows:
            assert row["metric"] == "instance_time" and row["method"] == "runtime_rate"
            quantity = Decimal(str(row["quantity"]))
            assert Decimal(0) < quantity < Decimal(30)
            expected_nanos = quantize_amount(quantity * RDS_R6G_LARGE_HOURLY / 3600).scaleb(9)
            assert abs(Decimal(row["amount_nanos"]) - expected_nanos) <= 1
        assert paths == SQL_PATHS[task_id], (task_id, paths)
        facet = events[task_id]["run"]["facets"][FACET]
        lines = [line for line in facet["lines"] if line["source"] == "postgres"]
        assert len(lines) == len(rows)
        assert all(
            line["priceRef"].endswith("postgres/instance_time[instance_type=db.r6g.large]") for line in lines
        )
        # the hook's lineage reports of the same statements are not counted again
        assert not [u for u in facet["unpriced"] if u["source"] == "postgres"]


def test_mysql_statements_are_kept_unpriced_with_the_reason(paths_run, mariadb_server):
    rows = usage_rows(paths_run, "mysql_paths", "mysql")
    assert (
        len(rows) == len(MYSQL_EXPECTED) == len(tagged_statements(mariadb_server, "mysql_paths", paths_run))
    )
    assert all(row["amount_nanos"] is None and row["metric"] == "instance_time" for row in rows)
    attributes = [
        r["attributes"] if isinstance(r["attributes"], dict) else json.loads(r["attributes"]) for r in rows
    ]
    assert sorted(a.get("sql_path") or "_run_command" for a in attributes) == [
        "_run_command",
        "_run_command",
        "get_df",
        "insert_rows",
        "insert_rows",
    ]
    facet = complete_events(paths_run)["mysql_paths"]["run"]["facets"][FACET]
    (unpriced,) = [u for u in facet["unpriced"] if u["source"] == "mysql"]
    assert unpriced["count"] == 5
    assert "connection_pricing" in unpriced["reason"] and "mysql_paths" in unpriced["reason"]
