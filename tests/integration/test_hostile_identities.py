"""Identities that try to break out of the comment: run through the providers' own hooks against the
real PostgreSQL and MariaDB servers. Each statement runs once, returns its own result, and reaches the
server with the tags intact and decodable."""

from __future__ import annotations

import pytest

from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation.sql import SqlStatements
from tests.integration.test_sql_local import comment_tags

pytestmark = pytest.mark.integration

HOSTILE = [
    "*/ DROP TABLE accounts; --",
    "quote ' and \" and ` ",
    "new\nline\r\nand\ttab",
    "naïve ünïcode ✓ 数据",
    "/* opened",
    "back\\slash\\'",
    "$$ dollar $tag$",
    "%2A%2F already encoded",
]


@pytest.fixture
def hostile_session():
    instrumentation = SqlStatements()
    instrumentation.instrument()
    yield
    instrumentation.uninstrument()
    clear_sessions()


def _open(value: str) -> None:
    open_session(
        TaskTry(f"dag {value}", f"task {value}", f"run {value}", 1, -1, value[::-1]), worker.sample()
    )


def test_hostile_identities_reach_postgres_intact(postgres_server, hostile_session, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HOSTILE_PG", postgres_server.conn_uri())
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id="hostile_pg")
    for number, value in enumerate(HOSTILE):
        _open(value)
        assert hook.get_first(f"SELECT {number} AS n, 'x;--' AS s;") == (number, "x;--")
    seen = [comment_tags(s) for s in postgres_server.statements() if "airflow_dag_id=" in s]
    received = [t for t in seen if t and t["airflow_dag_id"].startswith("dag ")]
    assert [t["airflow_dag_id"] for t in received][-len(HOSTILE) :] == [f"dag {v}" for v in HOSTILE]
    assert [t["openlineage_run_id"] for t in received][-len(HOSTILE) :] == [v[::-1] for v in HOSTILE]


def test_parameterised_statements_keep_working_with_percent_encoded_tags(
    postgres_server, mariadb_server, hostile_session, monkeypatch
):
    """psycopg and mysqlclient %-format a statement given parameters: the comment's `%3A` must not
    be read as a placeholder, and must reach the server as written."""
    monkeypatch.setenv("AIRFLOW_CONN_PARAM_PG", postgres_server.conn_uri())
    monkeypatch.setenv("AIRFLOW_CONN_PARAM_MYSQL", mariadb_server.conn_uri())
    from airflow.providers.mysql.hooks.mysql import MySqlHook
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    _open("manual__2026-11-22T10:00:00+00:00 100%")
    assert PostgresHook(postgres_conn_id="param_pg").get_first("SELECT %s + 1", parameters=(41,)) == (42,)
    named = PostgresHook(postgres_conn_id="param_pg").get_first("SELECT %(n)s * 2", parameters={"n": 21})
    assert named == (42,)
    assert tuple(MySqlHook(mysql_conn_id="param_mysql").get_first("SELECT %s + 1", parameters=(41,))) == (42,)
    pg = [comment_tags(s) for s in postgres_server.statements() if "airflow_dag_id=" in s][-2:]
    maria = [comment_tags(s) for s in mariadb_server.statements() if "airflow_dag_id=" in s][-1:]
    for tags in pg + maria:
        assert tags["airflow_run_id"] == "run manual__2026-11-22T10:00:00+00:00 100%"


def test_hostile_identities_reach_mariadb_intact(mariadb_server, hostile_session, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HOSTILE_MYSQL", mariadb_server.conn_uri())
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    hook = MySqlHook(mysql_conn_id="hostile_mysql")
    for number, value in enumerate(HOSTILE):
        _open(value)
        assert tuple(hook.get_first(f"SELECT {number} AS n, 'x;--' AS s -- trailing")) == (number, "x;--")
    statements = [s for s in mariadb_server.statements() if "airflow_dag_id=" in s]
    tags = [comment_tags(s) for s in statements][-len(HOSTILE) :]
    assert [t["airflow_task_id"] for t in tags] == [f"task {v}" for v in HOSTILE]
    # the comment sits on its own line after the statement's trailing `--` comment
    assert all("-- trailing\n/*airflow_dag_id=" in s for s in statements[-len(HOSTILE) :])
